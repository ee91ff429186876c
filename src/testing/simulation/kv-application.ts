import type { Application, CommittedBatch, Snapshot } from '../../application.js';

/** One write of the built-in key-value application: `value` `null` deletes the key. */
export interface KvWrite {
  /** The key. */
  readonly key: string;
  /** The new value, or `null` to delete. */
  readonly value: string | null;
}

/** Encodes a write as an entry of the built-in key-value application. */
export function kvEntry(write: KvWrite): Buffer {
  return Buffer.from(JSON.stringify([write.key, write.value]));
}

/**
 * The simulation's built-in state machine: a map of strings applied from JSON entries
 * (`kvEntry`), with snapshots. A simulated cluster uses it when no `application` is given.
 */
export class KvApplication implements Application {
  readonly #map = new Map<string, string>();

  /** The value of `key`, or undefined. */
  get(key: string): string | undefined {
    return this.#map.get(key);
  }

  /** A copy of the whole map. */
  entries(): Map<string, string> {
    return new Map(this.#map);
  }

  apply(batch: CommittedBatch): void {
    for (const entry of batch.entries) {
      const [key, value] = JSON.parse(Buffer.from(entry.data).toString()) as [string, string | null];
      if (value === null) this.#map.delete(key);
      else this.#map.set(key, value);
    }
  }

  snapshot(): Promise<Uint8Array> {
    return Promise.resolve(Buffer.from(JSON.stringify([...this.#map])));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    const pairs = JSON.parse((await snapshot.bytes()).toString()) as [string, string][];
    this.#map.clear();
    for (const [key, value] of pairs) this.#map.set(key, value);
  }
}
