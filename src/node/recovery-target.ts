import { WalshipError, isWalshipError } from '../errors.js';
import { formatLsn, isLsn, parseLsn, type Lsn } from '../lsn.js';
import type { RestorePointRecord, WalRecord } from '../wal/wal-reader.js';
import { checkRestorePointName, type WalLog } from '../wal/wal-log.js';

/**
 * Where a standby stops replaying (PostgreSQL's recovery target settings):
 * - `{ lsn }` (`recovery_target_lsn`), an LSN or its `X/Y` text: with `recoveryTargetInclusive`
 *   (the default) replay applies every batch that starts before it, so the batch that ends at
 *   it, or whose record it falls inside, is applied and nothing after it; exclusive, replay
 *   stops before that batch: it applies the batches that end before the LSN. walship's
 *   positions are ends (a commit's `lsn`), so `{ lsn: commit.lsn }` is "up to and including
 *   that commit" and, exclusive, "everything before it". PostgreSQL compares record *starts*
 *   instead (inclusive, it also replays the record starting at the target).
 * - `{ time }` (`recovery_target_time`): a `Date`, milliseconds since the epoch, or a string
 *   `Date.parse` reads (ISO 8601 with a time zone, e.g. `'2025-01-01T12:00:00Z'`). Replay stops
 *   before the first batch committed after it (inclusive) or at or after it (exclusive), as
 *   PostgreSQL does; batches without a commit time (on-disk format 1) never stop it.
 * - `{ name }` (`recovery_target_name`): replay stops right after the first restore point of
 *   that name (`Primary.createRestorePoint`); inclusiveness does not apply.
 * - `'immediate'` (`recovery_target = 'immediate'`): replay stops as soon as the state is
 *   consistent (the end of the base backup the standby started from; at once for one that
 *   streamed the WAL from its beginning).
 */
export type RecoveryTarget =
  | 'immediate'
  | {
      /** `recovery_target_lsn`: an LSN or its `X/Y` text. */
      readonly lsn: Lsn | string;
    }
  | {
      /** `recovery_target_time`: a `Date`, milliseconds since the epoch, or a string with a time zone. */
      readonly time: Date | number | string;
    }
  | {
      /** `recovery_target_name`: a restore point's name. */
      readonly name: string;
    };

/**
 * What a standby does once replay reaches its recovery target (`recovery_target_action`):
 * `pause` (it stays up and readable, keeps receiving WAL, applies nothing more until
 * `resumeReplay()`), `promote` (it becomes a primary whose new timeline begins at the target),
 * `shutdown` (it closes itself; reopened with the same target it stops there again).
 */
export type RecoveryTargetAction = 'pause' | 'promote' | 'shutdown';

/** A recovery target checked and normalized (times in microseconds, as the WAL has them). */
export type ResolvedTarget =
  | { readonly kind: 'immediate' }
  | { readonly kind: 'lsn'; readonly lsn: Lsn }
  | { readonly kind: 'time'; readonly micros: number }
  | { readonly kind: 'name'; readonly name: string };

/** JSON schema of {@link RecoveryTarget} (a `time` is checked by {@link resolveRecoveryTarget}: JSON Schema has no `Date`). */
export const recoveryTargetSchema = Object.freeze({
  anyOf: [
    { const: 'immediate' },
    {
      type: 'object',
      additionalProperties: false,
      required: ['lsn'],
      properties: { lsn: { anyOf: [{ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }, { type: 'string', pattern: '^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$' }] } },
    },
    { type: 'object', additionalProperties: false, required: ['time'], properties: { time: {} } },
    { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', minLength: 1 } } },
  ],
});

/**
 * Checks what the schema cannot (an LSN within range, a valid time, a restore-point name of 1
 * to 64 UTF-8 bytes) and normalizes the target; `INVALID_OPTIONS` names the option.
 */
export function resolveRecoveryTarget(target: RecoveryTarget, what = 'recoveryTarget'): ResolvedTarget {
  const invalid = (why: string, cause?: unknown): WalshipError =>
    new WalshipError('INVALID_OPTIONS', `invalid Standby options: ${what}${why}`, cause === undefined ? {} : { cause });
  if (target === 'immediate') return { kind: 'immediate' };
  if ('lsn' in target) {
    if (isLsn(target.lsn)) return { kind: 'lsn', lsn: target.lsn };
    try {
      return { kind: 'lsn', lsn: parseLsn(target.lsn as string) };
    } catch (err) {
      throw invalid(`.lsn: ${(err as Error).message}`, err);
    }
  }
  if ('time' in target) {
    const time = target.time;
    const ms = time instanceof Date ? time.getTime() : typeof time === 'number' ? time : typeof time === 'string' ? Date.parse(time) : Number.NaN;
    if (!(Number.isFinite(ms) && ms >= 0 && ms * 1000 <= Number.MAX_SAFE_INTEGER)) {
      throw invalid('.time must be a valid Date, milliseconds since the epoch, or a date-time string (ISO 8601 with a time zone, e.g. "2025-01-01T12:00:00Z") after 1970');
    }
    return { kind: 'time', micros: Math.round(ms * 1000) };
  }
  try {
    checkRestorePointName(target.name);
  } catch (err) {
    if (isWalshipError(err, 'INVALID_ARGUMENT')) throw invalid(`.name: ${err.message}`, err);
    throw err;
  }
  return { kind: 'name', name: target.name };
}

/** A target as text, for logs and messages. */
export function describeTarget(target: ResolvedTarget, inclusive: boolean): string {
  switch (target.kind) {
    case 'immediate':
      return "'immediate' (the consistent point)";
    case 'lsn':
      return `LSN ${formatLsn(target.lsn)} (${inclusive ? 'inclusive' : 'exclusive'})`;
    case 'time':
      return `time ${new Date(target.micros / 1000).toISOString()} (${inclusive ? 'inclusive' : 'exclusive'})`;
    case 'name':
      return `restore point "${target.name}"`;
  }
}

/** What replay reads: a batch, or a restore point. */
export type ReplayRecord = WalRecord | RestorePointRecord;

/** Where replay stops at its target. */
export interface TargetStop {
  /**
   * The stop point: every batch before it is applied and none after it; the WAL up to here is
   * what a promotion at the target keeps (its new timeline begins here).
   */
  readonly lsn: Lsn;
  /** Why here, for logs and the `recovery-target:reached` event. */
  readonly reason: string;
}

/**
 * The recovery-target check of one replay (PostgreSQL's `recoveryStopsBefore` and
 * `recoveryStopsAfter`): replay asks it at the start, before each record it reads (a batch or a
 * restore point) and after it (a batch applied, a restore point passed). The first stop it
 * answers is where replay ends; it never applies a batch past it. The same check, run over the
 * same WAL from the same position, always answers the same stop: a promotion at the target
 * finds the point replay stopped at ({@link findTargetStop}), and a reopened standby stops
 * there again (its application's position is at or before the stop: a stop comes before a
 * batch or right after a record, and a restore point is never an application's position).
 */
export class RecoveryTargetCheck {
  readonly target: ResolvedTarget;
  readonly inclusive: boolean;
  readonly #consistentLsn: Lsn;
  #disabled = false;

  /** `consistentLsn`: where the standby's state becomes consistent (`'immediate'` stops there). */
  constructor(target: ResolvedTarget, inclusive: boolean, consistentLsn: Lsn) {
    this.target = target;
    this.inclusive = inclusive;
    this.#consistentLsn = consistentLsn;
  }

  /** Recovery-target mode ended (`resumeReplay()`): the check answers no stop from now on. */
  disable(): void {
    this.#disabled = true;
  }

  get disabled(): boolean {
    return this.#disabled;
  }

  /** Replay starts with the application at `position`: a stop there, when the target is reached already. */
  atStart(position: Lsn): TargetStop | null {
    if (this.#disabled) return null;
    const t = this.target;
    if (t.kind === 'immediate' && position >= this.#consistentLsn) return { lsn: position, reason: `consistent at ${formatLsn(position)}` };
    // Past an LSN target already (or exactly at it): every batch to come lies beyond it.
    if (t.kind === 'lsn' && position >= t.lsn) return { lsn: position, reason: `the state at ${formatLsn(position)} reaches ${formatLsn(t.lsn)}` };
    return null;
  }

  /** A stop before `record`, which is then neither applied nor passed. */
  before(record: ReplayRecord): TargetStop | null {
    if (this.#disabled) return null;
    const t = this.target;
    switch (t.kind) {
      case 'lsn':
        // Inclusive: nothing starting at or past the target; exclusive: nothing ending at or past it.
        if (this.inclusive ? record.lsn >= t.lsn : record.endLsn >= t.lsn) {
          return { lsn: record.lsn, reason: `before the ${record.kind} at ${formatLsn(record.lsn)}, ${this.inclusive ? 'which starts' : 'which ends'} at or past ${formatLsn(t.lsn)}` };
        }
        return null;
      case 'time': {
        if (record.kind !== 'batch' || record.commitTime === null) return null;
        const micros = Math.round(record.commitTime * 1000);
        if (this.inclusive ? micros > t.micros : micros >= t.micros) {
          return { lsn: record.lsn, reason: `before the batch at ${formatLsn(record.lsn)}, committed at ${new Date(record.commitTime).toISOString()}` };
        }
        return null;
      }
      case 'immediate':
      case 'name':
        return null;
    }
  }

  /** A stop right after `record` (a batch just applied, a restore point just passed), without waiting for the next one. */
  after(record: ReplayRecord): TargetStop | null {
    if (this.#disabled) return null;
    const t = this.target;
    switch (t.kind) {
      case 'name':
        return record.kind === 'restore-point' && record.name === t.name ? { lsn: record.endLsn, reason: `at restore point "${t.name}" (${formatLsn(record.lsn)})` } : null;
      case 'lsn':
        // Inclusive: the record reaching the target was the last one to apply.
        return this.inclusive && record.endLsn >= t.lsn ? { lsn: record.endLsn, reason: `after the ${record.kind} at ${formatLsn(record.lsn)}, which reaches ${formatLsn(t.lsn)}` } : null;
      case 'immediate':
        return record.kind === 'batch' && record.endLsn >= this.#consistentLsn ? { lsn: record.endLsn, reason: `consistent at ${formatLsn(record.endLsn)}` } : null;
      case 'time':
        return null;
    }
  }
}

/**
 * Where replay from `from` stops at `check`'s target within the WAL `log` holds now (up to its
 * flushed end), and the end of the last batch before that stop (what replay applies first);
 * `null` when the target is not in it. A promotion uses it to begin its timeline at the target,
 * not at the end of what was received.
 */
export async function findTargetStop(log: WalLog, from: Lsn, check: RecoveryTargetCheck): Promise<{ stop: TargetStop; lastBatchEnd: Lsn } | null> {
  const atStart = check.atStart(from);
  if (atStart !== null) return { stop: atStart, lastBatchEnd: from };
  let lastBatchEnd = from;
  for await (const record of log.read(from, { restorePoints: true, reuseBuffers: true })) {
    const before = check.before(record);
    if (before !== null) return { stop: before, lastBatchEnd };
    if (record.kind === 'batch') lastBatchEnd = record.endLsn;
    const after = check.after(record);
    if (after !== null) return { stop: after, lastBatchEnd };
  }
  return null;
}
