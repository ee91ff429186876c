import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import crc32c from 'fast-crc32c';
import { MIN_SEGMENT_SIZE, Primary, WalLog, formatLsn, segmentFileName, type Lsn } from '../../src/index.js';
import { SEGMENT_HEADER_SIZE } from '../../src/wal/record.js';
import { main } from '../../src/cli/main.js';
import { RecordingApp } from '../helpers/apps.js';
import { tempDir } from '../helpers/temp-dir.js';
import { lines, runCli } from './run-cli.js';

// `walship waldump` against directories written by real primaries: every record kind, ranges,
// the end of the WAL, and a flipped byte reported at the damaged record's LSN with exit 1.

const SEGMENT = MIN_SEGMENT_SIZE;

interface Written {
  readonly dir: string;
  /** Where each batch starts, in commit order. */
  readonly batches: readonly Lsn[];
  readonly restorePoint: Lsn;
}

/** A primary's directory: `count` batches of two entries (40: over two segments), a restore point, one more batch, closed cleanly. */
async function writePrimary(t: { after: (fn: () => Promise<void>) => void }, count = 40): Promise<Written> {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT });
  const batches: Lsn[] = [];
  for (let i = 0; i < count; i++) batches.push((await primary.commit([Buffer.alloc(3000, i), Buffer.from('x')])).startLsn);
  const restorePoint = (await primary.createRestorePoint('before-cleanup')).lsn;
  batches.push((await primary.commit([Buffer.from('last')])).startLsn);
  await primary.close();
  return { dir, batches, restorePoint };
}

/** Flips one bit of the byte `at` of file `path`. */
async function flipByte(path: string, at: number): Promise<void> {
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0x40;
    await file.write(byte, 0, 1, at);
  } finally {
    await file.close();
  }
}

/** The `lsn:` of each dumped batch. */
function dumpedLsns(stdout: string): string[] {
  return lines(stdout)
    .filter((line) => line.includes('kind: batch'))
    .map((line) => /^lsn: ([0-9A-F]+\/[0-9A-F]+),/.exec(line)?.[1] ?? '?');
}

/** A digest of every file in `dir` (names and bytes): equal before and after means nothing was written. */
async function digest(dir: string): Promise<string> {
  const hash = createHash('sha256');
  for (const name of (await readdir(dir)).sort()) hash.update(name).update(await readFile(join(dir, name)));
  return hash.digest('hex');
}

describe('walship waldump', () => {
  it('prints every record of a primary directory with its kind, length, entries and CRC status, then where the WAL ends', async (t) => {
    const { dir, batches, restorePoint } = await writePrimary(t);
    const before = await digest(dir);
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 0, result.stderr);
    const out = lines(result.stdout);
    const batchLines = out.filter((line) => line.includes('kind: batch'));
    assert.deepEqual(
      batchLines.map((line) => /^lsn: (\S+),/.exec(line)?.[1]),
      batches.map((lsn) => formatLsn(lsn)),
      'one line per batch, at the LSN its commit returned',
    );
    assert.match(batchLines[0] ?? '', /^lsn: 0\/10020, len: 3051, kind: batch, entries: 2, crc: ok, tli: 1, desc: 3001 data bytes, committed \d{4}-/, 'the first batch line');
    const last = out.findIndex((line) => line.startsWith(`lsn: ${formatLsn(batches.at(-1) as Lsn)}, `));
    assert.match(out[last - 1] ?? '', /kind: restore-point, entries: 0, crc: ok, tli: 1, desc: "before-cleanup" made \d{4}-/, 'the restore point, with its name, right before the last batch');
    assert.ok(restorePoint > batches.at(-2)! && restorePoint <= batches.at(-1)!, 'the restore point lies between the two');
    assert.ok(out.filter((line) => line.includes('kind: segment-end')).length >= 1, 'segment-end records between segments');
    assert.ok(out.at(-1)?.includes('kind: shutdown'), 'the clean shutdown record is last');
    assert.match(result.stderr, /end of WAL at 0\/[0-9A-F]+ \(segment 000000010000000000000002, offset \d+\): zeroed space/, 'where the valid WAL ends and why');
    assert.equal(await digest(dir), before, 'waldump wrote nothing');
  });

  it('runs beside the primary that holds the directory, and keeps to --start and --end', async (t) => {
    const { dir, cleanup } = await tempDir();
    const primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT });
    // Closed before the directory goes (after hooks run in the order they were added).
    t.after(() => primary.close());
    t.after(cleanup);
    const starts: Lsn[] = [];
    for (let i = 0; i < 10; i++) starts.push((await primary.commit([Buffer.alloc(500, i)])).startLsn);
    const start = starts[3] as Lsn;
    const end = starts[7] as Lsn;
    const ranged = await runCli(['waldump', dir, '--start', formatLsn(start), '--end', formatLsn(end)]);
    assert.equal(ranged.code, 0, ranged.stderr);
    assert.deepEqual(dumpedLsns(ranged.stdout), starts.slice(3, 7).map((lsn) => formatLsn(lsn)), 'the records from --start up to, not including, --end');
    assert.equal(ranged.stderr, '', 'no end-of-WAL line when --end came first');
    const inside = await runCli(['waldump', dir, '--start', formatLsn(start + 8), '--end', formatLsn(end)]);
    assert.equal(inside.code, 0, inside.stderr);
    assert.match(inside.stdout, new RegExp(`^first record is after ${formatLsn(start + 8)}, at ${formatLsn(starts[4] as Lsn)}, skipping over \\d+ bytes`), 'a --start inside a record says where the next one begins');
    const all = await runCli(['waldump', dir]);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(dumpedLsns(all.stdout), starts.map((lsn) => formatLsn(lsn)), 'the running primary\'s WAL, read without its lock');
  });

  it('reports a flipped byte as a checksum failure at the damaged record, naming segment and offset, with exit code 1', async (t) => {
    const { dir, batches } = await writePrimary(t);
    const damaged = batches[25] as Lsn;
    const segno = Math.floor(damaged / SEGMENT);
    const offset = damaged - segno * SEGMENT;
    const name = segmentFileName(1, segno, SEGMENT);
    await flipByte(join(dir, name), offset + 100);
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 1, 'damage is exit code 1');
    assert.deepEqual(dumpedLsns(result.stdout), batches.slice(0, 25).map((lsn) => formatLsn(lsn)), 'every record before the damage, none after');
    assert.match(
      result.stderr,
      new RegExp(`error: WAL_CORRUPT: WAL is corrupt at ${formatLsn(damaged)} \\(segment ${name}, offset ${offset}\\): record checksum mismatch`),
      'the damaged record\'s LSN, segment, offset and why',
    );
  });

  it('calls a damaged last record that nothing proves durable a torn tail: the end of the WAL, exit 0', async (t) => {
    const { dir, cleanup } = await tempDir();
    // An open log that crashed now: its last record was never followed by one stamped past it.
    const log = await WalLog.open({ dir, segmentSize: SEGMENT });
    t.after(async () => {
      await log.close().catch(() => undefined);
      await cleanup();
    });
    const records = [];
    for (let i = 0; i < 5; i++) {
      records.push(log.append([Buffer.alloc(200, i)]));
      await log.flush();
    }
    const last = records.at(-1)!;
    await flipByte(join(dir, segmentFileName(1, 1, SEGMENT)), last.lsn - SEGMENT + 60);
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(dumpedLsns(result.stdout), records.slice(0, 4).map((r) => formatLsn(r.lsn)));
    assert.match(result.stderr, new RegExp(`end of WAL at ${formatLsn(last.lsn)} \\(segment 000000010000000000000001, offset ${last.lsn - SEGMENT}\\): record checksum mismatch`));
  });

  it('reports a segment missing between segments that hold WAL as damage, exit 1', async (t) => {
    const { dir, batches } = await writePrimary(t, 60);
    await rm(join(dir, segmentFileName(1, 2, SEGMENT)));
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 1);
    assert.ok(dumpedLsns(result.stdout).length > 0 && dumpedLsns(result.stdout).length < batches.length, 'the records of segment 1 only');
    assert.match(
      result.stderr,
      /error: WAL_CORRUPT: WAL is corrupt at 0\/20000 \(segment 000000010000000000000002, offset 0\): segment file is missing, but segments after it hold valid WAL \(from 000000010000000000000003\)/,
    );
  });

  it('names a record cut short by a truncated segment as the walk and an open both do', async (t) => {
    const { dir, batches } = await writePrimary(t, 60);
    const cut = batches.find((lsn) => Math.floor(lsn / SEGMENT) === 2 && lsn % SEGMENT > 1000) as Lsn;
    await truncate(join(dir, segmentFileName(1, 2, SEGMENT)), (cut % SEGMENT) + 100);
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      new RegExp(`error: WAL_CORRUPT: WAL is corrupt at ${formatLsn(cut)} \\(segment 000000010000000000000002, offset ${cut % SEGMENT}\\): record runs past the end of the segment file, but segment 000000010000000000000003 after it holds valid WAL`),
    );
  });

  it('follows a promoted directory across its timeline switch', async (t) => {
    const { dir, cleanup } = await tempDir();
    t.after(cleanup);
    await cp(fileURLToPath(new URL('../fixtures/timeline2', import.meta.url)), dir, { recursive: true });
    const result = await runCli(['waldump', dir]);
    assert.equal(result.code, 0, result.stderr);
    const out = lines(result.stdout);
    const endOfRecovery = out.findIndex((line) => line.includes('kind: end-of-recovery'));
    assert.ok(endOfRecovery > 0, 'the end-of-recovery record that begins timeline 2');
    assert.ok(out.slice(0, endOfRecovery).every((line) => line.includes('tli: 1')), 'timeline 1 before it');
    assert.ok(out.slice(endOfRecovery).every((line) => line.includes('tli: 2')), 'timeline 2 from it on');
    const old = await runCli(['waldump', dir, '--timeline', '1']);
    assert.equal(old.code, 0, old.stderr);
    assert.ok(!old.stdout.includes('end-of-recovery'), 'timeline 1 alone does not hold the switch');
  });

  it('prints the error code first, so a script tells WAL it cannot read (WAL_FORMAT) from damage (WAL_CORRUPT)', async (t) => {
    const { dir } = await writePrimary(t);
    // Segment 2's header, resealed with a format version no walship writes: intact, but unreadable.
    const path = join(dir, segmentFileName(1, 2, SEGMENT));
    const header = Buffer.alloc(SEGMENT_HEADER_SIZE);
    const file = await open(path, 'r+');
    try {
      await file.read(header, 0, SEGMENT_HEADER_SIZE, 0);
      header.writeUInt16LE(99, 8);
      header.writeUInt32LE(crc32c.calculate(header.subarray(4)), 0);
      await file.write(header, 0, SEGMENT_HEADER_SIZE, 0);
    } finally {
      await file.close();
    }
    const format = await runCli(['waldump', dir]);
    assert.equal(format.code, 1);
    assert.match(format.stderr, /^walship waldump: error: WAL_FORMAT: WAL cannot be read at 0\/20000 \(segment 000000010000000000000002, offset 0\): segment 000000010000000000000002 has on-disk format version 99;/m);
    await writeFile(join(dir, '00000002.history'), 'not a history\n');
    const history = await runCli(['waldump', dir, '--timeline', '2']);
    assert.equal(history.code, 1);
    assert.match(history.stderr, /^walship waldump: error: WAL_CORRUPT: timeline history file 00000002\.history in .* is damaged/m);
  });

  it('calls the end of a running primary\'s WAL the end, not damage, however its commits race the read', async (t) => {
    const { dir, cleanup } = await tempDir();
    const primary = await Primary.open({ dir, application: new RecordingApp(), segmentSize: SEGMENT });
    t.after(() => primary.close());
    t.after(cleanup);
    // Small batches, committed one after another for as long as the dumps run: records stamped
    // durable past wherever a dump's read ends arrive while it decides what that end is.
    let writing = true;
    let committed = 0;
    const writer = (async () => {
      while (writing) {
        await primary.commit([Buffer.alloc(200, committed % 256)]);
        committed++;
      }
    })();
    try {
      for (let run = 0; run < 6; run++) {
        const before = committed;
        const result = await runCli(['waldump', dir]);
        assert.equal(result.code, 0, `run ${run}: ${result.stderr}`);
        assert.match(result.stderr, /^walship waldump: end of WAL (so far )?at /, `run ${run}: the end, not damage`);
        assert.match(result.stderr, /a node is running/, `run ${run}: says a node is writing there`);
        assert.ok(dumpedLsns(result.stdout).length >= before, `run ${run}: every batch committed before it began`);
      }
    } finally {
      writing = false;
      await writer;
    }
  });

  it('says a segment a running node removed while it was read was removed, and finds damage in a listing taken again', async (t) => {
    const { dir } = await writePrimary(t, 60);
    const names = (await readdir(dir)).filter((name) => /^[0-9A-F]{24}$/.test(name)).sort();
    assert.ok(names.length >= 4, 'four segments or more');
    // While the first record is printed (segment 1 open), a checkpoint removes segments 1 to 3.
    const removed = await runMain(['waldump', dir], async (line) => {
      if (line.includes('lsn: 0/10020,')) for (const name of names.slice(0, 3)) await rm(join(dir, name));
    });
    assert.equal(removed.code, 1);
    assert.match(removed.err.join('\n'), /^walship waldump: error: segment 000000010000000000000002 was removed while it was being read \(a checkpoint of the running node removed it\); dump from a later --start$/);
  });

  it('judges a segment removed from the middle while it was read by the directory as it is now: the log is cut', async (t) => {
    const { dir } = await writePrimary(t, 60);
    const result = await runMain(['waldump', dir], async (line) => {
      if (line.includes('lsn: 0/10020,')) await rm(join(dir, segmentFileName(1, 2, SEGMENT)));
    });
    assert.equal(result.code, 1);
    assert.match(result.err.join('\n'), /error: WAL_CORRUPT: WAL is corrupt at 0\/20000 \(segment 000000010000000000000002, offset 0\): segment file is missing, but segments after it hold valid WAL/);
  });
});

/** Runs `walship <args>` in this process; `onLine` sees each line printed to stdout before the command goes on. */
async function runMain(args: readonly string[], onLine: (line: string) => Promise<void>): Promise<{ code: number; err: string[] }> {
  const err: string[] = [];
  const code = await main(args, { out: onLine, err: (line) => err.push(line) });
  return { code, err };
}
