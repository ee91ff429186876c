import { createHash } from 'node:crypto';
import type { Application, CommittedBatch, Lsn, Snapshot, SnapshotData } from '../../src/index.js';

/** One applied batch, reduced to what tests compare: its position and its entries as hex. */
export interface AppliedBatch {
  readonly lsn: Lsn;
  readonly entries: readonly string[];
}

/**
 * An in-memory state machine that records every batch it applies, in order. Its snapshot
 * is the list itself (JSON), so a standby restored from one carries the primary's history
 * and the whole applied sequence can be compared across nodes.
 */
export class RecordingApp implements Application {
  applied: AppliedBatch[] = [];
  restores = 0;
  /** Makes `apply` throw for the batch at this position (once it is reached). */
  failAt: Lsn | null = null;

  // Typed as the interface has it, so that subclasses may apply later (after a gate opens).
  apply(batch: CommittedBatch): void | Promise<void> {
    this.recordBatch(batch);
  }

  /** What `apply` does, always synchronously: for subclasses that count or check around it. */
  protected recordBatch(batch: CommittedBatch): void {
    if (this.failAt !== null && batch.lsn >= this.failAt) throw new Error(`refusing the batch at ${batch.lsn}`);
    const last = this.applied.at(-1);
    if (last !== undefined && batch.lsn <= last.lsn) throw new Error(`batch ${batch.lsn} applied out of order after ${last.lsn}`);
    this.applied.push({ lsn: batch.lsn, entries: batch.entries.map((e) => Buffer.from(e.data).toString('hex')) });
  }

  async snapshot(): Promise<SnapshotData> {
    return Buffer.from(JSON.stringify(this.applied));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    this.applied = JSON.parse((await snapshot.bytes()).toString()) as AppliedBatch[];
    this.restores++;
  }

  get lastLsn(): Lsn | null {
    return this.applied.at(-1)?.lsn ?? null;
  }
}

/** A recording app whose `apply` waits, while `gate` is set, until the test resolves it. */
export class GatedApp extends RecordingApp {
  gate: Promise<void> | null = null;
  override apply(batch: CommittedBatch): void | Promise<void> {
    const gate = this.gate;
    if (gate === null) return super.apply(batch);
    return gate.then(() => super.apply(batch));
  }
}

/** A recording app that also keeps each batch's commit time, by position (for the batches this process applied). */
export class TimedApp extends GatedApp {
  readonly commitTimes = new Map<Lsn, number | null>();

  protected override recordBatch(batch: CommittedBatch): void {
    super.recordBatch(batch);
    this.commitTimes.set(batch.lsn, batch.commitTime);
  }
}

/** The same, without snapshot hooks: it can only replay the WAL from its beginning. */
export class PlainApp implements Application {
  applied: AppliedBatch[] = [];

  apply(batch: CommittedBatch): void {
    this.applied.push({ lsn: batch.lsn, entries: batch.entries.map((e) => Buffer.from(e.data).toString('hex')) });
  }
}

/** Waits (polling, no deadline of its own) until `condition` holds. */
export async function until(condition: () => boolean, pollMs = 5): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, pollMs));
}

/**
 * A state machine for large runs: a chained SHA-256 over every applied batch (position and
 * entries), so two nodes applied the same sequence exactly when their digests and counts
 * are equal, without keeping the batches. Its snapshot is the chain's current value.
 */
export class DigestApp implements Application {
  count = 0;
  lastLsn: Lsn = 0;
  digest = Buffer.alloc(32);

  apply(batch: CommittedBatch): void {
    if (batch.lsn <= this.lastLsn) throw new Error(`batch ${batch.lsn} applied out of order after ${this.lastLsn}`);
    const hash = createHash('sha256').update(this.digest);
    const header = Buffer.alloc(8);
    header.writeDoubleLE(batch.lsn);
    hash.update(header);
    for (const entry of batch.entries) hash.update(entry.data);
    this.digest = hash.digest();
    this.count++;
    this.lastLsn = batch.lsn;
  }

  async snapshot(): Promise<SnapshotData> {
    return Buffer.from(JSON.stringify({ count: this.count, lastLsn: this.lastLsn, digest: this.digest.toString('hex') }));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    const state = JSON.parse((await snapshot.bytes()).toString()) as { count: number; lastLsn: Lsn; digest: string };
    this.count = state.count;
    this.lastLsn = state.lastLsn;
    this.digest = Buffer.from(state.digest, 'hex');
  }

  /** Count, position and digest in one comparable string. */
  get state(): string {
    return `${this.count}@${this.lastLsn}:${this.digest.toString('hex')}`;
  }
}
