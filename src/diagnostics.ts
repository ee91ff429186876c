import diagnosticsChannel from 'node:diagnostics_channel';

/**
 * The `node:diagnostics_channel` names walship publishes on (as undici publishes
 * `undici:request:create`): subscribe with `diagnostics_channel.subscribe(name, fn)` to trace
 * commits, WAL flushes, standby connections and promotions without touching the nodes.
 * Messages are published only while a channel has subscribers, so an unobserved channel costs
 * one property read. A subscriber runs synchronously inside walship's code path: keep it short,
 * and do not throw (Node reports a throwing subscriber as an uncaught exception).
 *
 * - `walship:commit`: a commit resolved ({@link CommitDiagnostic}).
 * - `walship:wal:flush`: a WAL's durable end advanced ({@link WalFlushDiagnostic}).
 * - `walship:sender:state`: a WAL sender serving a standby changed state ({@link SenderStateDiagnostic}).
 * - `walship:promote`: a standby was promoted ({@link PromoteDiagnostic}).
 */
export const DIAGNOSTICS_CHANNELS = Object.freeze({
  /** A commit resolved: {@link CommitDiagnostic}. */
  commit: 'walship:commit',
  /** A log's durable end advanced: {@link WalFlushDiagnostic}. */
  walFlush: 'walship:wal:flush',
  /** A WAL sender changed state: {@link SenderStateDiagnostic}. */
  senderState: 'walship:sender:state',
  /** A standby was promoted: {@link PromoteDiagnostic}. */
  promote: 'walship:promote',
} as const);

/** The channels, made once: `channel()` returns the same object for a name, and keeping it avoids the lookup. */
export const commitChannel = diagnosticsChannel.channel(DIAGNOSTICS_CHANNELS.commit);
export const walFlushChannel = diagnosticsChannel.channel(DIAGNOSTICS_CHANNELS.walFlush);
export const senderStateChannel = diagnosticsChannel.channel(DIAGNOSTICS_CHANNELS.senderState);
export const promoteChannel = diagnosticsChannel.channel(DIAGNOSTICS_CHANNELS.promote);
