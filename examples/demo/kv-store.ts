import { createHash } from 'node:crypto';
import type { Application, CommittedBatch, Snapshot } from 'walship';

/**
 * The replicated application: a key-value store. A commit is a batch of `key=value` entries;
 * walship feeds every committed batch to `apply` on the primary and on each standby, in the
 * same order, exactly once, so every node holds the same map.
 */
export class KvStore implements Application {
  #map = new Map<string, string>();
  /** Batches applied since the process started (the status table's commits/s). */
  applied = 0;

  /** The WAL entry that sets `key` to `value`. */
  static set(key: string, value: string): Buffer {
    return Buffer.from(`${key}=${value}`);
  }

  apply(batch: CommittedBatch): void {
    for (const { data } of batch.entries) {
      const text = Buffer.from(data).toString();
      const eq = text.indexOf('=');
      this.#map.set(text.slice(0, eq), text.slice(eq + 1));
    }
    this.applied++;
  }

  // Checkpoints and base backups: the whole map as JSON. A new standby starts from this.
  snapshot(): Promise<Buffer> {
    return Promise.resolve(Buffer.from(JSON.stringify([...this.#map])));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    this.#map = new Map(JSON.parse((await snapshot.bytes()).toString()) as [string, string][]);
  }

  get(key: string): string | undefined {
    return this.#map.get(key);
  }

  get size(): number {
    return this.#map.size;
  }

  /** A fingerprint of the whole state, to compare nodes: the first 16 hex digits of a SHA-256. */
  digest(): string {
    const hash = createHash('sha256');
    for (const key of [...this.#map.keys()].sort()) hash.update(`${key}=${this.#map.get(key)}\n`);
    return hash.digest('hex').slice(0, 16);
  }
}
