import { createHash } from 'node:crypto';
import type { Application, CommittedBatch, Snapshot, SnapshotData } from '../../application.js';
import type { Lsn } from '../../lsn.js';
import type { WalEntry } from '../../wal/record.js';

/** One batch a node's application applied, as the simulation's checker sees it. */
export interface AppliedBatch {
  /** The end of the batch's record. */
  readonly lsn: Lsn;
  /** The timeline it was committed on. */
  readonly timeline: number;
  /** What identifies the batch's content (see {@link batchDigest}). */
  readonly digest: string;
}

/** A digest of a batch's entries (their bytes and channels), to match applied batches with commit calls. */
export function batchDigest(entries: readonly WalEntry[]): string {
  const hash = createHash('sha1');
  const length = Buffer.alloc(4);
  for (const entry of entries) {
    length.writeUInt32BE(entry.data.length);
    hash.update(length).update(entry.data).update(entry.channel ?? '\u0000');
  }
  return hash.digest('hex');
}

/** The snapshot frame's magic: the recorder's sequence travels with the application's state. */
const FRAME_MAGIC = 0x77736e31; // 'wsn1'

/**
 * Wraps a node's application to record, for the checker, which batches its state holds and in
 * what order. The record travels inside the application's snapshots (checkpoints and base
 * backups), so a node restored from another node's snapshot holds that node's sequence, as
 * its state does.
 */
export class RecordingApplication implements Application {
  readonly #inner: Application;
  #sequence: AppliedBatch[] = [];
  readonly #onApply: ((batch: AppliedBatch) => void) | undefined;

  constructor(inner: Application, options: { onApply?: (batch: AppliedBatch) => void } = {}) {
    this.#inner = inner;
    this.#onApply = options.onApply;
    if (inner.appliedLsn !== undefined) this.appliedLsn = () => inner.appliedLsn!();
    if (inner.snapshot !== undefined) this.snapshot = () => this.#snapshot();
    if (inner.restore !== undefined) this.restore = (snapshot) => this.#restore(snapshot);
  }

  /** The application being recorded. */
  get inner(): Application {
    return this.#inner;
  }

  /** The batches the application's state holds, in the order it applied them. */
  get sequence(): readonly AppliedBatch[] {
    return this.#sequence;
  }

  /**
   * Starts a new life of the node (a restart after a crash): the state of an application that
   * keeps its state durably (`appliedLsn`) holds what it applied up to there; any other starts empty.
   */
  restart(durableUpTo: Lsn | null): void {
    this.#sequence = durableUpTo === null ? [] : this.#sequence.filter((batch) => batch.lsn <= durableUpTo);
  }

  appliedLsn?: () => Lsn | null | Promise<Lsn | null>;
  snapshot?: () => Promise<SnapshotData>;
  restore?: (snapshot: Snapshot) => Promise<void>;

  async apply(batch: CommittedBatch): Promise<void> {
    await this.#inner.apply(batch);
    const applied: AppliedBatch = { lsn: batch.lsn, timeline: batch.timeline, digest: batchDigest(batch.entries) };
    this.#sequence.push(applied);
    this.#onApply?.(applied);
  }

  async #snapshot(): Promise<SnapshotData> {
    const inner = await this.#inner.snapshot!();
    const chunks: Uint8Array[] = [];
    if (inner instanceof Uint8Array) chunks.push(inner);
    else for await (const chunk of inner) chunks.push(chunk);
    const record = Buffer.from(JSON.stringify(this.#sequence));
    const header = Buffer.alloc(8);
    header.writeUInt32BE(FRAME_MAGIC, 0);
    header.writeUInt32BE(record.length, 4);
    return Buffer.concat([header, record, ...chunks]);
  }

  async #restore(snapshot: Snapshot): Promise<void> {
    const whole = await snapshot.bytes();
    if (whole.length < 8 || whole.readUInt32BE(0) !== FRAME_MAGIC) throw new Error('the snapshot was not taken by a recorded application');
    const recordLength = whole.readUInt32BE(4);
    const sequence = JSON.parse(whole.subarray(8, 8 + recordLength).toString()) as AppliedBatch[];
    const state = whole.subarray(8 + recordLength);
    await this.#inner.restore!({
      lsn: snapshot.lsn,
      timeline: snapshot.timeline,
      size: state.length,
      chunks: async function* () {
        yield state;
      },
      bytes: () => Promise.resolve(Buffer.from(state)),
    });
    this.#sequence = sequence;
  }
}
