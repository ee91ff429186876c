// What main.ts and its node processes (node.ts) say to each other over the IPC channel.
import type { Lsn, ReplicationStatusRow } from 'walship';

/** How main.ts starts a node: node.ts's argument, as JSON. */
export interface NodeConfig {
  /** p, s1, s2; a standby's `applicationName` too. */
  readonly name: string;
  readonly dir: string;
  readonly role: 'primary' | 'standby';
  /** The primary's synchronous standbys. */
  readonly synchronousStandbyNames?: string;
  /** The standby's upstream: the primary's address. */
  readonly upstream?: string;
  /** The replication user's password: every node both serves and connects. */
  readonly password: string;
}

/** A standby's row in its primary's `replicationStatus()`, as much of it as the table shows. */
export type StandbyRow = Pick<
  ReplicationStatusRow,
  'applicationName' | 'state' | 'syncState' | 'sentLsn' | 'writeLsn' | 'flushLsn' | 'replayLsn' | 'writeLagMs' | 'flushLagMs' | 'replayLagMs'
>;

/** A node's own view, sent every few hundred milliseconds. */
export interface NodeStatus {
  readonly role: 'primary' | 'standby';
  /** A standby's `state`; `'primary'` for a primary. */
  readonly state: string;
  readonly timeline: number | null;
  /** The end of the durable WAL: a primary's `flushLsn`, a standby's `receiveLsn`. */
  readonly flushLsn: Lsn | null;
  /** The application's position: a primary's `appliedLsn`, a standby's `replayLsn`. */
  readonly replayLsn: Lsn | null;
  /** Batches applied per second over the last second (on a primary: commits). */
  readonly commitsPerSecond: number;
  /** A primary's (or cascading standby's) `replicationStatus()`. */
  readonly standbys: readonly StandbyRow[];
}

/** Commands from main.ts, and what each replies. */
export interface Commands {
  /** Start or stop the commit load (a primary). Stopping waits for the commits in flight. */
  load: { args: { on: boolean }; reply: { clients: number } };
  status: { args: Record<string, never>; reply: NodeStatus };
  promote: { args: { synchronousStandbyNames: string }; reply: { timeline: number; switchLsn: Lsn; ms: number } };
  /** Stream from another upstream (`standby.reconfigure`). */
  follow: { args: { upstream: string }; reply: Record<string, never> };
  /** Which of these keys the store does not hold. */
  check: { args: { keys: string[] }; reply: { missing: string[] } };
  /** The store's fingerprint, once replay has reached `lsn` (a standby) or now (a primary). */
  digest: { args: { lsn?: Lsn }; reply: { lsn: Lsn; keys: number; digest: string } };
  close: { args: Record<string, never>; reply: Record<string, never> };
}

export type CommandName = keyof Commands;

/** A command on the wire. */
export interface Request<C extends CommandName = CommandName> {
  readonly id: number;
  readonly cmd: C;
  readonly args: Commands[C]['args'];
}

/** What a node sends. */
export type NodeMessage =
  | { readonly kind: 'ready'; readonly address: string }
  | { readonly kind: 'reply'; readonly id: number; readonly body?: unknown; readonly error?: string }
  | { readonly kind: 'status'; readonly status: NodeStatus }
  /** Keys whose commits were acknowledged at `on` (sent in small batches). */
  | { readonly kind: 'acked'; readonly keys: string[] }
  /** Something worth a line in the log (a timeline switch, a lost connection). */
  | { readonly kind: 'event'; readonly text: string }
  | RewindReport
  /** The node stopped for good: why. */
  | { readonly kind: 'fatal'; readonly message: string };

/** A standby's `rewind` event, with the keys of the batches it discarded. */
export interface RewindReport {
  readonly kind: 'rewind';
  readonly switchLsn: Lsn;
  readonly endLsn: Lsn;
  readonly keys: string[];
  readonly restoredFrom: string;
  readonly setAside: readonly string[];
}
