import { formatTimelineHistory, type TimelineHistory, type TimelineHistoryEntry } from '../../src/wal/timeline-history.js';

/**
 * A history whose file takes exactly `bytes` bytes: ancestors 1, 2, … that all left at 0/0, with
 * reasons of up to 1,000 characters (the last one fills the rest). Every segment of it is the
 * last timeline's: a new log on that timeline starts from nothing.
 */
export function historyOfSize(bytes: number): TimelineHistory {
  const entries: TimelineHistoryEntry[] = [];
  const size = (list: TimelineHistoryEntry[]): number =>
    // The checksum line is 18 bytes; format the lines only, so that a size past the bound can be built too.
    list.reduce((sum, e) => sum + Buffer.byteLength(`${e.timeline}\t0/0\t${e.reason}\n`), 0) + 18;
  while (size(entries) < bytes - 2000) entries.push({ timeline: entries.length + 1, switchLsn: 0, reason: 'x'.repeat(1000) });
  const last = { timeline: entries.length + 1, switchLsn: 0, reason: '' };
  last.reason = 'x'.repeat(bytes - size([...entries, last]));
  entries.push(last);
  const history = { timeline: entries.length + 1, entries };
  if (bytes <= 1024 * 1024 && Buffer.byteLength(formatTimelineHistory(history)) !== bytes) throw new Error('historyOfSize: size mismatch');
  return history;
}
