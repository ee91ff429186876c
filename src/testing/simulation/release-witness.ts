import type { Primary } from '../../primary.js';
import type { ReplicationStatusRow } from '../../replication/wal-source.js';
import type { VirtualScheduler } from '../virtual-scheduler.js';

/**
 * The primary's status rows at the moments that may have released a commit, since the last
 * event of virtual time: as each step began, and as a standby left or the synchronous set
 * changed (both emitted right after the release is computed). A commit's callback runs a few
 * promise turns after its release, before the next event; a step running in between (a crash)
 * can change the rows first, so the checker judges the release by any of these.
 */
export class ReleaseWitness {
  readonly #scheduler: VirtualScheduler;
  readonly #current: () => Primary | null;
  #samples: { primary: Primary; rows: readonly ReplicationStatusRow[] }[] = [];
  #at = -1;

  /** `current` names the running primary (null when none runs). */
  constructor(scheduler: VirtualScheduler, current: () => Primary | null) {
    this.#scheduler = scheduler;
    this.#current = current;
  }

  /** Samples `primary`'s rows whenever a standby leaves it or its synchronous set changes. */
  watch(primary: Primary): Primary {
    const sample = (): void => {
      if (this.#current() === primary) this.sample();
    };
    primary.on('standby:disconnected', sample);
    primary.on('sync:standbys', sample);
    return primary;
  }

  /** Samples the running primary's rows (a step begins). */
  sample(): void {
    if (this.#at !== this.#scheduler.eventsFired) {
      this.#samples = [];
      this.#at = this.#scheduler.eventsFired;
    }
    const primary = this.#current();
    if (primary !== null) this.#samples.push({ primary, rows: primary.replicationStatus() });
  }

  /** `primary`'s rows now, then as sampled since the last virtual event. */
  rows(primary: Primary): (readonly ReplicationStatusRow[])[] {
    const sampled = this.#at === this.#scheduler.eventsFired ? this.#samples.filter((s) => s.primary === primary).map((s) => s.rows) : [];
    return [primary.replicationStatus(), ...sampled];
  }
}
