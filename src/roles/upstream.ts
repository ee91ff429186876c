import { formatLsn } from '../lsn.js';
import type { TimelineHistory } from '../wal/timeline-history.js';

/** How a standby reads its upstream's addresses and timeline histories. */

/** The addresses of `primary.address`: a list, or one string with commas. */
export function upstreamAddresses(address: string | readonly string[]): string[] {
  const list = typeof address === 'string' ? address.split(',') : [...address];
  return list.map((a) => a.trim()).filter((a) => a !== '');
}

/** Whether `history` continues `base`: every ancestor of `base`, with the same switch points, and `base`'s timeline. */
export function extendsHistory(history: TimelineHistory, base: TimelineHistory): boolean {
  if (history.entries.length < base.entries.length) return false;
  for (const [i, entry] of base.entries.entries()) {
    const other = history.entries[i];
    if (other === undefined || other.timeline !== entry.timeline || other.switchLsn !== entry.switchLsn) return false;
  }
  return history.entries[base.entries.length]?.timeline === base.timeline || history.timeline === base.timeline;
}

/** A history as `1 → 2 at 0/3000158 → 3`. */
export function describeHistory(history: TimelineHistory): string {
  return [...history.entries.map((e) => `${e.timeline} until ${formatLsn(e.switchLsn)}`), `${history.timeline}`].join(', then ');
}

/** Whether two histories of the same timeline are the same: the same ancestors, left at the same points. */
export function sameHistory(a: TimelineHistory, b: TimelineHistory): boolean {
  return a.timeline === b.timeline && a.entries.length === b.entries.length && a.entries.every((e, i) => e.timeline === b.entries[i]?.timeline && e.switchLsn === b.entries[i]?.switchLsn);
}
