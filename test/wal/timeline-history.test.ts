import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NodeStorage, isWalshipError } from '../../src/index.js';
import { switchedFromOf } from '../../src/node/control-file.js';
import { MemoryStorage, seededRandom } from '../../src/testing/index.js';
import {
  FIRST_TIMELINE_HISTORY,
  MAX_HISTORY_BYTES,
  MAX_SWITCH_REASON,
  branchHistory,
  formatTimelineHistory,
  historyFileName,
  isInHistory,
  newestTimeline,
  parseTimelineHistory,
  readTimelineHistory,
  switchPointOf,
  timelineOf,
  writeTimelineHistory,
  type TimelineHistory,
} from '../../src/wal/timeline-history.js';
import { CRASH_MODES } from '../helpers/crashes.js';
import { tempDir } from '../helpers/temp-dir.js';
import { historyOfSize } from '../helpers/timeline-history.js';

/** A history: ancestors 1..n-1 with rising switch points. */
const historyArb = fc
  .array(fc.tuple(fc.nat({ max: 2 ** 40 }), fc.string({ maxLength: 40 })), { maxLength: 12 })
  .map((steps): TimelineHistory => {
    let lsn = 0;
    let history: TimelineHistory = FIRST_TIMELINE_HISTORY;
    for (const [gap, reason] of steps) {
      lsn += gap;
      history = branchHistory(history, lsn, reason);
    }
    return history;
  });

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return isWalshipError(err) ? err.code : `uncoded ${String(err)}`;
  }
}

describe('timeline history files', () => {
  it('names files as PostgreSQL does', () => {
    assert.equal(historyFileName(2), '00000002.history');
    assert.equal(historyFileName(0x1a), '0000001A.history');
    assert.equal(codeOf(() => historyFileName(0)), 'INVALID_ARGUMENT', 'timeline 0 does not exist');
  });

  it('round-trips any history (seeded property); reasons lose only their control characters', () => {
    fc.assert(
      fc.property(historyArb, (history) => {
        const parsed = parseTimelineHistory(history.timeline, formatTimelineHistory(history));
        assert.equal(parsed.timeline, history.timeline, 'timeline');
        assert.deepEqual(
          parsed.entries,
          history.entries.map((e) => ({ ...e, reason: e.reason.replace(/[\x00-\x1f\x7f]+/g, ' ').trim() })),
          'entries',
        );
      }),
      { seed: 20261206, numRuns: 300 },
    );
  });

  it("reads PostgreSQL's own files (no checksum line, blank lines and comments)", () => {
    const text = '1\t0/3000158\tno recovery target specified\n\n# a comment\n2\t0/5000060\tno recovery target specified\n';
    const history = parseTimelineHistory(3, text);
    assert.deepEqual(history.entries.map((e) => [e.timeline, e.switchLsn]), [[1, 0x3000158], [2, 0x5000060]], 'both ancestors');
  });

  it('every single-bit flip of a written file is WAL_CORRUPT, or leaves the same history (a flip in the checksum comment)', () => {
    const history = branchHistory(branchHistory(FIRST_TIMELINE_HISTORY, 0x3000158, 'promoted'), 0x5000060, 'promoted again');
    const bytes = Buffer.from(formatTimelineHistory(history), 'utf8');
    let refused = 0;
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const flipped = Buffer.from(bytes);
      flipped[bit >> 3] = (flipped[bit >> 3] as number) ^ (1 << (bit & 7));
      let parsed: TimelineHistory | null = null;
      try {
        parsed = parseTimelineHistory(history.timeline, flipped.toString('utf8'));
      } catch (err) {
        assert.ok(isWalshipError(err, 'WAL_CORRUPT') || isWalshipError(err, 'INVALID_ARGUMENT'), `bit ${bit}: ${String(err)}`);
        refused++;
        continue;
      }
      assert.deepEqual(parsed, history, `bit ${bit}: accepted only when the history is unchanged`);
    }
    assert.ok(refused > bytes.length * 6, `most flips are refused (${refused} of ${bytes.length * 8})`);
  });

  it('refuses histories that go back: WAL_CORRUPT when read, INVALID_ARGUMENT when written', () => {
    assert.equal(codeOf(() => parseTimelineHistory(3, '2\t0/10\tx\n1\t0/20\ty\n')), 'WAL_CORRUPT', 'timelines must rise');
    assert.equal(codeOf(() => parseTimelineHistory(3, '1\t0/20\tx\n2\t0/10\ty\n')), 'WAL_CORRUPT', 'switch points must not go back');
    assert.equal(codeOf(() => parseTimelineHistory(2, '2\t0/20\tx\n')), 'WAL_CORRUPT', 'a timeline is not its own ancestor');
    assert.equal(codeOf(() => parseTimelineHistory(2, 'one\t0/20\tx\n')), 'WAL_CORRUPT', 'not a number');
    assert.equal(codeOf(() => parseTimelineHistory(2, '1\tnowhere\tx\n')), 'WAL_CORRUPT', 'not an LSN');
    assert.equal(codeOf(() => formatTimelineHistory({ timeline: 2, entries: [{ timeline: 3, switchLsn: 0, reason: '' }] })), 'INVALID_ARGUMENT', 'writing one');
    assert.equal(codeOf(() => branchHistory(branchHistory(FIRST_TIMELINE_HISTORY, 100, 'a'), 50, 'b')), 'INVALID_ARGUMENT', 'a branch before its parent began');
  });

  it('answers which timeline a position is on, where a timeline ended, and whether a position is in the history', () => {
    // 1 until 0/100, 2 until 0/300, 3 after.
    const history = branchHistory(branchHistory(FIRST_TIMELINE_HISTORY, 0x100, 'a'), 0x300, 'b');
    assert.equal(history.timeline, 3);
    assert.deepEqual([0, 0xff, 0x100, 0x2ff, 0x300, 0x5000].map((lsn) => timelineOf(history, lsn)), [1, 1, 2, 2, 3, 3], 'timelineOf');
    assert.deepEqual([1, 2, 3, 4].map((tli) => switchPointOf(history, tli)), [0x100, 0x300, null, undefined], 'switchPointOf');
    assert.equal(isInHistory(history, 1, 0x100), true, 'timeline 1 up to its switch point');
    assert.equal(isInHistory(history, 1, 0x101), false, 'timeline 1 past its switch point: another history');
    assert.equal(isInHistory(history, 2, 0x250), true);
    assert.equal(isInHistory(history, 3, 0x9999), true, 'the current timeline, anywhere');
    assert.equal(isInHistory(history, 4, 0x10), false, 'a later timeline is not in this history');
  });

  it('writes durably: a crash at any step leaves no file or the whole file; newestTimeline probes upward', async () => {
    const history = branchHistory(FIRST_TIMELINE_HISTORY, 0x1000, 'promoted');
    for (const [modeIndex, mode] of CRASH_MODES.entries()) {
      for (let n = 1; ; n++) {
        assert.ok(n < 50, 'the write never completed');
        const storage = new MemoryStorage();
        const crashed = storage.crashAfter(n, { ...mode, random: seededRandom(n * 31 + modeIndex) });
        const error = await writeTimelineHistory(storage, history).then(
          () => null,
          (err: unknown) => err,
        );
        const fired = await Promise.race([crashed, new Promise<null>((resolve) => setImmediate(() => resolve(null)))]);
        const completed = fired === null;
        if (!completed) assert.ok(isWalshipError(error, 'WAL_IO'), `a failed write is WAL_IO: ${String(error)}`);
        const survivor = fired ?? storage.crash({ ...mode, random: seededRandom(n) });
        const found = await readTimelineHistory(survivor, 2);
        if (completed) assert.deepEqual(found, history, `${JSON.stringify(mode)}: a completed write survives`);
        else assert.ok(found === null || JSON.stringify(found) === JSON.stringify(history), `${JSON.stringify(mode)} step ${n}: none or whole, got ${JSON.stringify(found)}`);
        if (completed) break;
      }
    }
    const storage = new MemoryStorage();
    assert.equal(await newestTimeline(storage, 1), 1, 'no history files');
    await writeTimelineHistory(storage, history);
    await writeTimelineHistory(storage, branchHistory(history, 0x2000, 'again'));
    assert.equal(await newestTimeline(storage, 1), 3, 'timelines 2 and 3 exist');
    assert.deepEqual(await readTimelineHistory(storage, 1), FIRST_TIMELINE_HISTORY, "timeline 1's history is empty");
    assert.equal(await readTimelineHistory(storage, 7), null, 'a missing file');
  });

  describe('size: walship writes only what it reads back', () => {
    it(`a history file of exactly ${MAX_HISTORY_BYTES} bytes is written and read back; one byte more is FILE_TOO_LARGE and writes nothing`, async () => {
      const largest = historyOfSize(MAX_HISTORY_BYTES);
      assert.equal(Buffer.byteLength(formatTimelineHistory(largest)), MAX_HISTORY_BYTES);
      const tooLarge = historyOfSize(MAX_HISTORY_BYTES + 1);
      assert.equal(codeOf(() => formatTimelineHistory(tooLarge)), 'FILE_TOO_LARGE', 'formatting');
      const { dir, cleanup } = await tempDir();
      try {
        for (const storage of [new MemoryStorage(), new NodeStorage(dir)]) {
          await storage.prepare();
          await writeTimelineHistory(storage, largest);
          assert.deepEqual(await readTimelineHistory(storage, largest.timeline), largest, 'the largest file reads back');
          const other = { ...tooLarge, timeline: tooLarge.timeline + 1 };
          await assert.rejects(writeTimelineHistory(storage, other), (err: unknown) => isWalshipError(err, 'FILE_TOO_LARGE') || assert.fail(String(err)));
          assert.deepEqual(
            (await storage.list()).filter((n) => n.endsWith('.history') || n.endsWith('.tmp')),
            [historyFileName(largest.timeline)],
            'nothing written for the refused one',
          );
        }
      } finally {
        await cleanup();
      }
    });

    it('a history that can grow no more refuses the next branch with FILE_TOO_LARGE (a promotion finds out before it records anything)', () => {
      // A branch adds one line: "<timeline>\t<switch point>\t<reason>\n".
      const full = historyOfSize(MAX_HISTORY_BYTES - 10);
      assert.equal(codeOf(() => branchHistory(full, 0x5000, 'promoted by promote()')), 'FILE_TOO_LARGE');
      const roomy = historyOfSize(MAX_HISTORY_BYTES - 200);
      const grown = branchHistory(roomy, 0x5000, 'promoted by promote()');
      assert.ok(Buffer.byteLength(formatTimelineHistory(grown)) <= MAX_HISTORY_BYTES, 'one that fits is made');
    });

    it(`a new entry keeps at most ${MAX_SWITCH_REASON} characters of its reason, never half a surrogate pair, as the control file does`, () => {
      const long = 'p'.repeat(MAX_SWITCH_REASON + 500);
      const grown = branchHistory(FIRST_TIMELINE_HISTORY, 0x100, long);
      assert.equal(grown.entries[0]?.reason, long.slice(0, MAX_SWITCH_REASON));
      assert.deepEqual(switchedFromOf(grown).switchedFrom, grown.entries[0], 'the control file records the same entry');
      // A pair straddling the cut is left out whole: the file's UTF-8 keeps the same text.
      const straddling = `${'p'.repeat(MAX_SWITCH_REASON - 1)}\u{1F600}tail`;
      const cut = branchHistory(FIRST_TIMELINE_HISTORY, 0x100, straddling);
      assert.equal(cut.entries[0]?.reason, 'p'.repeat(MAX_SWITCH_REASON - 1));
      assert.deepEqual(parseTimelineHistory(2, formatTimelineHistory(cut)), cut, 'reads back as it was made');
    });
  });
});
