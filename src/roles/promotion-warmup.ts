import { switchedFromOf } from '../node/control-file.js';
import { CommitMetrics } from './commit-metrics.js';
import { COMMIT_TIME_SIZE, RECORD_BATCH, RECORD_END_OF_RECOVERY, RECORD_HEADER_SIZE, align, entrySize, sealRecord, writeCommitTime, writeEntry } from '../wal/record.js';
import { FIRST_TIMELINE_HISTORY, branchHistory, formatTimelineHistory, historyFileName } from '../wal/timeline-history.js';

/**
 * Runs once, on made-up input, the pure steps a promotion and the new primary's first commit
 * take, and throws the results away: the new timeline's history (branched, formatted, named,
 * and as the control file records it), an end-of-recovery record and a batch record encoded
 * into a scratch buffer, the commit counters, and an `AbortController` aborted with a listener
 * (a promotion aborts the upstream's). V8 compiles a function on its first call; a standby
 * calls this while idle after its open, so that a promotion does not pay for those compilations
 * (a cold promotion spent about a third of its time compiling). It touches no storage, no
 * socket and no state outside itself.
 */
export function warmPromotionPath(): void {
  const history = branchHistory(FIRST_TIMELINE_HISTORY, 0x1000028, 'warm-up', 2);
  formatTimelineHistory(history);
  historyFileName(history.timeline);
  switchedFromOf(history);
  const data = Buffer.alloc(8);
  const payload = COMMIT_TIME_SIZE + entrySize(data.length, 0);
  const scratch = Buffer.alloc(RECORD_HEADER_SIZE + align(RECORD_HEADER_SIZE + payload));
  sealRecord(scratch, 0, RECORD_END_OF_RECOVERY, 0, 0, 0x1000028, 0x1000028);
  writeCommitTime(scratch, RECORD_HEADER_SIZE, 0);
  writeEntry(scratch, 2 * RECORD_HEADER_SIZE + COMMIT_TIME_SIZE, data, undefined, 0);
  sealRecord(scratch, RECORD_HEADER_SIZE, RECORD_BATCH, payload, 1, 0x1000048, 0x1000048);
  new CommitMetrics(['local']).resolved('local', 0);
  const controller = new AbortController();
  controller.signal.addEventListener('abort', () => undefined, { once: true });
  controller.abort();
}
