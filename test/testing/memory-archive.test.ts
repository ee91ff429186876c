import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWalshipError } from '../../src/errors.js';
import { archiverConformance } from '../../src/testing/archiver-conformance.js';
import { MemoryArchive } from '../../src/testing/memory-archive.js';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const text = (data: Uint8Array | null): string | null => (data === null ? null : new TextDecoder().decode(data));

// Registered with node:test, the suite's default runner.
archiverConformance({ name: 'MemoryArchive', createArchiver: () => new MemoryArchive(), openAgain: (archiver) => (archiver as MemoryArchive).openAgain() });

describe('MemoryArchive', () => {
  it('stores copies: neither the put buffer nor a got buffer is shared with the archive', async () => {
    const archive = new MemoryArchive();
    const data = bytes('abc');
    await archive.put('n', data);
    data[0] = 0x7a;
    const got = await archive.get('n');
    assert.equal(text(got), 'abc');
    (got as Uint8Array)[0] = 0x7a;
    assert.equal(text(await archive.get('n')), 'abc');
    const files = archive.files();
    (files.get('n') as Uint8Array)[1] = 0x7a;
    assert.equal(text(await archive.get('n')), 'abc', 'files() returns copies too');
  });

  it('keeps the contract: identical re-put succeeds, different rejects ARCHIVE_CONFLICT, absent is null, remove is idempotent', async () => {
    const archive = new MemoryArchive();
    assert.equal(await archive.get('n'), null);
    await archive.put('n', bytes('abc'));
    await archive.put('n', Buffer.from('abc'));
    await assert.rejects(archive.put('n', bytes('abd')), (err) => isWalshipError(err, 'ARCHIVE_CONFLICT'));
    assert.equal(text(await archive.get('n')), 'abc');
    await archive.put('n.partial', bytes(''));
    assert.deepEqual((await archive.list('n.')).sort(), ['n.partial']);
    assert.deepEqual((await archive.list()).sort(), ['n', 'n.partial']);
    await archive.remove('n');
    await archive.remove('n');
    assert.equal(archive.has('n'), false);
    assert.equal(archive.has('n.partial'), true);
    await assert.rejects(archive.get('a/b'), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    await assert.rejects(archive.get('n', { signal: AbortSignal.abort() }), (err) => isWalshipError(err, 'ABORTED'));
  });

  it('openAgain() is a second handle on the same files with its own counters and faults', async () => {
    const a = new MemoryArchive();
    const b = a.openAgain();
    await a.put('n', bytes('x'));
    assert.equal(text(await b.get('n')), 'x');
    await assert.rejects(b.put('n', bytes('y')), (err) => isWalshipError(err, 'ARCHIVE_CONFLICT'));
    b.injectFault({ operation: 'get' });
    assert.equal(text(await a.get('n')), 'x', "b's fault does not touch a");
    await assert.rejects(b.get('n'), (err) => isWalshipError(err, 'ARCHIVE_FAILED'));
    assert.deepEqual(a.calls, { put: 1, get: 1, list: 0, remove: 0 });
    assert.deepEqual(b.calls, { put: 1, get: 2, list: 0, remove: 0 });
  });

  it('injectFault fails the next `times` calls of one operation, before or after they take effect, with a given error', async () => {
    const archive = new MemoryArchive();
    archive.injectFault({ operation: 'put', times: 2 });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(archive.put('n', bytes('x')), (err) => isWalshipError(err, 'ARCHIVE_FAILED') && err.transient);
    }
    assert.equal(archive.has('n'), false, 'a fault before the call stores nothing');
    await archive.put('n', bytes('x'));

    archive.injectFault({ operation: 'put', when: 'after' });
    await assert.rejects(archive.put('lost-answer', bytes('y')), (err) => isWalshipError(err, 'ARCHIVE_FAILED'));
    assert.equal(archive.has('lost-answer'), true, 'a fault after the call has stored the file');
    await archive.put('lost-answer', bytes('y')); // walship's retry succeeds

    const error = new Error('network down');
    const remove = archive.injectFault({ operation: 'list', error, times: Infinity });
    for (let i = 0; i < 3; i++) await assert.rejects(archive.list(), (err) => err === error);
    remove();
    assert.deepEqual((await archive.list()).sort(), ['lost-answer', 'n']);
    assert.equal(archive.calls.list, 4);

    for (const bad of [{ operation: 'stat' }, { operation: 'get', times: 0 }, { operation: 'get', when: 'during' }, { operation: 'get', error: 'x' }, { operation: 'get', nth: 2 }]) {
      assert.throws(() => archive.injectFault(bad as never), (err) => isWalshipError(err, 'INVALID_ARGUMENT'), JSON.stringify(bad));
    }
  });

  it('a seeded failure rate fails calls at about that rate, the same calls for the same seed', async () => {
    const run = async (seed: number): Promise<boolean[]> => {
      const archive = new MemoryArchive({ failureRate: 0.3, seed });
      const outcomes: boolean[] = [];
      for (let i = 0; i < 200; i++) {
        outcomes.push(
          await archive.put(`f${i}`, bytes('x')).then(
            () => true,
            (err: unknown) => {
              assert.ok(isWalshipError(err, 'ARCHIVE_FAILED') && err.transient, String(err));
              return false;
            },
          ),
        );
      }
      return outcomes;
    };
    const first = await run(7);
    assert.deepEqual(await run(7), first, 'the same seed fails the same calls');
    assert.notDeepEqual(await run(8), first, 'another seed fails other calls');
    const failures = first.filter((ok) => !ok).length;
    assert.ok(failures > 30 && failures < 90, `about 30% of 200 calls fail, got ${failures}`);
    assert.throws(() => new MemoryArchive({ failureRate: 2 }), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
    assert.throws(() => new MemoryArchive({ rate: 0.1 } as never), (err) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});
