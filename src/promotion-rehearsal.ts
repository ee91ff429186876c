import type { Application, Snapshot } from './application.js';
import { QUIET_LOG_PREFIX } from './logger.js';
import { Primary } from './primary.js';
import type { Standby } from './standby.js';
import { MemoryStorage } from './storage/memory-storage.js';
import { MemoryNetwork, MemoryTransport } from './transport/memory-transport.js';
import { MIN_SEGMENT_SIZE } from './wal/segment-name.js';

/**
 * How often a waiting standby rehearses again. V8 drops the bytecode of a function that has not
 * run for 5 major garbage collections (`--bytecode-old-age`), and a promotion after that
 * compiles again, more than a cold one (bench/README.md, section 8). A standby streaming 5,000
 * commits/s ran no major collection in 30 s; an application sharing the process may run many.
 * A warm rehearsal costs about 7–10 ms of CPU time.
 */
export const REHEARSAL_INTERVAL_MS = 30_000;

/** When this process last started a rehearsal (monotonic ms). */
let lastRehearsal = Number.NEGATIVE_INFINITY;

/**
 * Whether a standby should rehearse now (`now`: monotonic ms): compiled code is the process's,
 * not a standby's, so a process with several standbys rehearses at most once per half
 * {@link REHEARSAL_INTERVAL_MS}. A true answer counts as the rehearsal's start.
 */
export function takeRehearsalTurn(now: number): boolean {
  if (now - lastRehearsal < REHEARSAL_INTERVAL_MS / 2) return false;
  lastRehearsal = now;
  return true;
}

/** An application that keeps nothing: the rehearsal's nodes only need one to replay into. */
class DiscardingApplication implements Application {
  apply(): void {}
  snapshot(): Promise<Buffer> {
    return Promise.resolve(Buffer.alloc(0));
  }
  async restore(snapshot: Snapshot): Promise<void> {
    await snapshot.bytes();
  }
}

/**
 * A promotion rehearsed on a private cluster in memory: a `Primary` and a `Standby` streaming
 * from it over a private {@link MemoryNetwork}, both on {@link MemoryStorage} with the
 * smallest segments, one commit replayed, the standby promoted and one commit made on the
 * primary it resolves with, then everything closed; resolves with the timeline it promoted to.
 * The same classes run as in a real
 * promotion, so V8 compiles their functions here (it compiles a function on its first call)
 * and a real standby's `promote()` does not wait for that: a cold promotion spent about a
 * third of its time compiling (bench/README.md, section 8).
 *
 * Nothing outside it changes: its nodes log nothing and publish no diagnostics (their
 * `logPrefix` is {@link QUIET_LOG_PREFIX}), own no file, socket or timer once it settles, and
 * hold a few hundred KiB while it runs. It runs on the caller's scheduler, which must be
 * Node's own: under a virtual one its steps would be events of the simulation.
 */
export async function rehearsePromotion(standbyClass: typeof Standby): Promise<number> {
  const network = new MemoryNetwork({ logPrefix: QUIET_LOG_PREFIX });
  const common = { segmentSize: MIN_SEGMENT_SIZE, logPrefix: QUIET_LOG_PREFIX } as const;
  const primary = await Primary.open({
    ...common,
    storage: new MemoryStorage({ description: 'promotion rehearsal: primary' }),
    application: new DiscardingApplication(),
    listen: { transport: new MemoryTransport({ network, endpoint: 'primary' }), address: 'primary' },
    auth: { rules: [{ user: 'rehearsal', address: 'all', method: 'trust' }] },
  });
  let standby: Standby | null = null;
  let promoted: Primary | null = null;
  try {
    standby = await standbyClass.open({
      logPrefix: QUIET_LOG_PREFIX,
      storage: new MemoryStorage({ description: 'promotion rehearsal: standby' }),
      application: new DiscardingApplication(),
      primary: { transport: new MemoryTransport({ network, endpoint: 'standby' }), address: 'primary', user: 'rehearsal', applicationName: 'rehearsal' },
    });
    await standby.waitForConsistent();
    const entry = Buffer.alloc(8);
    const { lsn } = await primary.commit([entry]);
    await standby.waitForReplay(lsn);
    promoted = await standby.promote();
    await promoted.commit([entry], { synchronousCommit: 'local' });
    return promoted.timeline;
  } finally {
    await promoted?.close();
    await standby?.close();
    await primary.close();
  }
}
