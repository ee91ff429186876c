import type { Lsn } from '../../lsn.js';
import type { SynchronousCommit } from '../../roles/writer.js';

/** How a commit call ended, as the simulation recorded it. */
export type CommitOutcome =
  /** Still waiting. */
  | 'pending'
  /** Resolved: walship promised the level's guarantee. */
  | 'acknowledged'
  /** Rejected with `SYNC_REP_CANCELED`: committed locally, no promise about the standbys. */
  | 'canceled'
  /** Rejected otherwise, before the primary crashed. */
  | 'failed'
  /** The primary crashed while it waited: it may or may not be in the log. */
  | 'unknown';

/** One commit call of a simulation and what came of it. */
export interface CommitRecord {
  /** Its number, from 1, in call order. */
  readonly id: number;
  /** The step (index into the step list) that made it. */
  readonly step: number;
  /** The node it was sent to (the primary then). */
  readonly node: string;
  /** Its `synchronousCommit` level. */
  readonly level: SynchronousCommit;
  /** The digest of its entries (see `batchDigest`). */
  readonly digest: string;
  /** Virtual time of the call. */
  readonly calledAt: number;
  /** How the call ended so far (`pending` while it waits). */
  outcome: CommitOutcome;
  /** Where it ended in the log, once acknowledged. */
  lsn: Lsn | null;
  /** The primary's timeline when it was acknowledged. */
  timeline: number | null;
  /** The error's code (or message) when it was rejected. */
  error: string | null;
  /**
   * The standbys whose confirmed position (write, flush or replay, as the level asks) covered
   * the commit when it resolved, among those counted for synchronous replication.
   */
  confirmers: readonly string[];
  /** How many confirmations the synchronous standby names in force asked for. */
  needed: number;
}

/** A step of a simulation: what a scenario does next, in a form that replays (see the cluster's methods of the same names). */
export type SimulationStep =
  | {
      /** `commit`: commit calls on the current primary. */
      readonly op: 'commit';
      /** The commit level; the cluster's default when absent. */
      readonly level?: SynchronousCommit;
      /** How many calls. @defaultValue 1 */
      readonly count?: number;
      /** How long each may wait for the standbys before `SYNC_REP_CANCELED`. */
      readonly timeoutMs?: number;
    }
  | {
      /** A power loss, a restart, a promotion, or a former primary rejoining. */
      readonly op: 'crash' | 'restart' | 'promote' | 'rejoin';
      /** The node. */
      readonly node: string;
    }
  | {
      /** A network partition or a stall of the link between `a` and `b`. */
      readonly op: 'partition' | 'stall';
      /** One end. */
      readonly a: string;
      /** The other end. */
      readonly b: string;
    }
  | {
      /** Latency on the link between `a` and `b`. */
      readonly op: 'delay';
      /** One end. */
      readonly a: string;
      /** The other end. */
      readonly b: string;
      /** The latency, in milliseconds. */
      readonly ms: number;
    }
  | {
      /** Every partition, stall and delay removed; or the primary failed over. */
      readonly op: 'heal' | 'failover';
    }
  | {
      /** A disk fault on a node. */
      readonly op: 'diskFault';
      /** The node. */
      readonly node: string;
      /** What fails. */
      readonly kind: DiskFaultKind;
    }
  | {
      /** A slow disk on a node: its fdatasyncs take `ms` of virtual time (0: instant again), until its next power loss. */
      readonly op: 'slowDisk';
      /** The node. */
      readonly node: string;
      /** How long each fdatasync takes, in virtual milliseconds. */
      readonly ms: number;
    }
  | {
      /** A reload of the primary's `synchronousStandbyNames`. */
      readonly op: 'reload';
      /** The new names. */
      readonly synchronousStandbyNames: string;
    }
  | {
      /** Virtual time passing. */
      readonly op: 'sleep';
      /** How much, in milliseconds. */
      readonly ms: number;
    }
  | {
      /** A wait for a standby to catch up with the primary. */
      readonly op: 'catchup';
      /** The standby. */
      readonly node: string;
      /** Which of its positions. */
      readonly mode: CatchupMode;
    };

/** What {@link SimulationStep} `diskFault` breaks: the node's next WAL write or fsync fails, or its disk is full. */
export type DiskFaultKind = 'write-eio' | 'fsync-eio' | 'enospc';

/** How far {@link SimulationStep} `catchup` waits: the standby's write, flush or replay position. */
export type CatchupMode = 'write' | 'flush' | 'replay';

/** A rule the checker found broken, with what it concerns. */
export interface Violation {
  /** Which guarantee: e.g. `'acknowledged-lost'`, `'phantom-batch'`, `'diverged-history'`. */
  readonly rule: string;
  /** What happened, in a sentence. */
  readonly message: string;
  /** The node concerned, if one. */
  readonly node?: string;
  /** The commit concerned, if one. */
  readonly commit?: CommitRecord;
}

/** Renders a step as one line: `commit on ×3`, `crash p`, `partition p|s1`. */
export function formatStep(step: SimulationStep): string {
  switch (step.op) {
    case 'commit':
      return `commit ${step.level ?? 'default'}${(step.count ?? 1) > 1 ? ` x${step.count}` : ''}${step.timeoutMs === undefined ? '' : ` timeout ${step.timeoutMs} ms`}`;
    case 'partition':
    case 'stall':
      return `${step.op} ${step.a}|${step.b}`;
    case 'delay':
      return `delay ${step.a}|${step.b} ${step.ms} ms`;
    case 'diskFault':
      return `diskFault ${step.node} ${step.kind}`;
    case 'slowDisk':
      return `slowDisk ${step.node} ${step.ms} ms`;
    case 'reload':
      return `reload '${step.synchronousStandbyNames}'`;
    case 'sleep':
      return `sleep ${step.ms} ms`;
    case 'catchup':
      return `catchup ${step.node} ${step.mode}`;
    case 'heal':
    case 'failover':
      return step.op;
    case 'crash':
    case 'restart':
    case 'promote':
    case 'rejoin':
      return `${step.op} ${step.node}`;
  }
}
