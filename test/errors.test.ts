import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ERROR_CODES, WalCorruptError, WalshipError, isWalshipError } from '../src/index.js';

describe('WalshipError', () => {
  it('carries a stable code, a transient flag and the cause', () => {
    const cause = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    const err = new WalshipError('WAL_IO', 'writing failed', { cause, transient: true });
    assert.equal(err.code, 'WAL_IO');
    assert.equal(err.transient, true);
    assert.equal(err.cause, cause);
    assert.equal(err.name, 'WalshipError');
    assert.ok(err instanceof Error);
    assert.equal(new WalshipError('ABORTED', 'x').transient, false);
  });

  it('is recognised by isWalshipError, with or without a code, and across package copies', () => {
    const err = new WalshipError('WAL_CLOSED', 'closed');
    assert.equal(isWalshipError(err), true);
    assert.equal(isWalshipError(err, 'WAL_CLOSED'), true);
    assert.equal(isWalshipError(err, 'WAL_IO'), false);
    for (const other of [new Error('x'), { code: 'WAL_CLOSED' }, null, undefined, 'WAL_CLOSED']) {
      assert.equal(isWalshipError(other), false);
    }
    // Another copy of the package brands its errors with the same global symbol.
    const foreign = Object.assign(new Error('from another copy'), { code: 'WAL_CLOSED' });
    Object.defineProperty(foreign, Symbol.for('walship.error'), { value: true });
    assert.equal(isWalshipError(foreign, 'WAL_CLOSED'), true);
  });

  it('WalCorruptError names the segment and offset', () => {
    const err = new WalCorruptError('000000010000000000000003', 4096, 'record checksum mismatch');
    assert.ok(isWalshipError(err, 'WAL_CORRUPT'));
    assert.equal(err.segment, '000000010000000000000003');
    assert.equal(err.offset, 4096);
    assert.match(err.message, /000000010000000000000003 at offset 4096: record checksum mismatch/);
  });

  it('every registered code has a meaning and an action', () => {
    for (const [code, { when, action }] of Object.entries(ERROR_CODES)) {
      assert.match(code, /^[A-Z_]+$/);
      assert.ok(when.length > 20 && action.length > 5, code);
    }
  });
});
