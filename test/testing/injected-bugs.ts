import { register } from 'node:module';

/**
 * Deliberate walship bugs, for testing that the simulation's checker catches them (issue #16).
 * Each is an edit of walship's own source, written into the file as it loads (module hooks,
 * injected-bug-hooks.mjs) behind a switch that {@link withInjectedBug} turns on for one test:
 * walship ships no test hook, and the bug is in the code that runs, not in a copy of it.
 *
 * The hooks only see modules loaded after {@link registerInjectedBugs}: a test file registers
 * first, then imports walship dynamically.
 */
export type InjectedBug =
  /** Synchronous replication releases an `on` commit once its standbys have written it, not flushed it. */
  | 'release-on-write'
  /** A rewind cuts the WAL back to the switch point but keeps what the application applied past it. */
  | 'keep-applied-past-switch-point'
  /** Recovery and replay step over a record whose checksum fails and go on with the records after it. */
  | 'skip-damaged-record'
  /** The upstream accepts a standby's WAL without comparing it with its own (the lineage check). */
  | 'skip-history-check'
  /** Early WAL: a standby replays (and forwards) WAL past the durable end its primary told it. */
  | 'apply-past-durable-end'
  /** Early WAL: a standby streams again from the end of its log, keeping WAL past the durable end its primary told it (never compared, never cut). */
  | 'keep-unconfirmed-tail'
  /** Early WAL: a promotion keeps (and replays) the WAL past the durable end the primary told the standby. */
  | 'promote-keeps-unconfirmed-tail'
  /** Early WAL: a standby confirms its own flush past the durable end its primary told it, and the primary counts it. */
  | 'confirm-unconfirmed-wal';

/** One edit: in `file` (a path under the repository), `from` (there exactly once) becomes `to`. */
interface Mutation {
  readonly bug: InjectedBug;
  readonly file: string;
  readonly from: string;
  readonly to: string;
}

const SWITCH = '__walshipInjectedBug';

/** The injected code's test of its switch. */
function on(bug: InjectedBug): string {
  return `((globalThis as { ${SWITCH}?: string }).${SWITCH} === '${bug}')`;
}

const MUTATIONS: readonly Mutation[] = [
  {
    bug: 'release-on-write',
    file: '/src/replication/sync-standbys.ts',
    from: 'const flushes = chosen.map((c) => c.standby.flushLsn ?? 0);',
    to: `const flushes = chosen.map((c) => (${on('release-on-write')} ? c.standby.writeLsn : c.standby.flushLsn) ?? 0);`,
  },
  {
    bug: 'release-on-write',
    file: '/src/replication/sync-standbys.ts',
    from: 'flush = Math.min(flush, standby.flushLsn ?? 0);',
    to: `flush = Math.min(flush, (${on('release-on-write')} ? standby.writeLsn : standby.flushLsn) ?? 0);`,
  },
  {
    bug: 'keep-applied-past-switch-point',
    file: '/src/roles/recovery.ts',
    from: 'if (applied > switchLsn) {',
    to: `if (applied > switchLsn && !${on('keep-applied-past-switch-point')}) {`,
  },
  {
    bug: 'skip-damaged-record',
    file: '/src/wal/recovery.ts',
    from: "failure = 'record checksum mismatch';",
    to: `if (${on('skip-damaged-record')}) { offset += align(header.length); continue; }\n          failure = 'record checksum mismatch';`,
  },
  {
    bug: 'skip-damaged-record',
    file: '/src/wal/wal-reader.ts',
    from: "throw new WalCorruptError(log.segmentName(pos), offset, 'record checksum mismatch');",
    to: `if (${on('skip-damaged-record')}) { pos += align(header.length); continue; }\n          throw new WalCorruptError(log.segmentName(pos), offset, 'record checksum mismatch');`,
  },
  {
    bug: 'skip-history-check',
    file: '/src/replication/history-check.ts',
    from: 'if (crc !== check.checkCrc) {',
    to: `if (crc !== check.checkCrc && !${on('skip-history-check')}) {`,
  },
  {
    bug: 'apply-past-durable-end',
    file: '/src/wal/wal-reader.ts',
    from: 'const horizon = log.readableLsn;',
    to: `const horizon = ${on('apply-past-durable-end')} ? log.flushedLsn : log.readableLsn;`,
  },
  {
    bug: 'apply-past-durable-end',
    file: '/src/wal/wal-log.ts',
    from: "const end = (): Lsn => (horizon === 'written' ? this.#writer.writtenLsn : this.readableLsn);",
    to: `const end = (): Lsn => (horizon === 'written' ? this.#writer.writtenLsn : ${on('apply-past-durable-end')} ? this.#writer.flushedLsn : this.readableLsn);`,
  },
  {
    bug: 'apply-past-durable-end',
    file: '/src/wal/wal-byte-reader.ts',
    from: 'const horizon = Math.min(unflushed ? log.writtenLsn : log.readableLsn, end);',
    to: `const horizon = Math.min(unflushed ? log.writtenLsn : ${on('apply-past-durable-end')} ? log.flushedLsn : log.readableLsn, end);`,
  },
  {
    bug: 'keep-unconfirmed-tail',
    file: '/src/replication/wal-receiver.ts',
    from: 'const startLsn = streamStart(log);',
    to: `const startLsn = ${on('keep-unconfirmed-tail')} ? log.insertLsn : streamStart(log);`,
  },
  {
    bug: 'promote-keeps-unconfirmed-tail',
    file: '/src/roles/recovery.ts',
    from: 'if (log.insertLsn > keep) {',
    to: `if (log.insertLsn > keep && !${on('promote-keeps-unconfirmed-tail')}) {`,
  },
  {
    bug: 'confirm-unconfirmed-wal',
    file: '/src/replication/wal-receiver.ts',
    from: 'return this.#log.readableLsn;',
    to: `return ${on('confirm-unconfirmed-wal')} ? this.#log.flushedLsn : this.#log.readableLsn;`,
  },
  {
    bug: 'confirm-unconfirmed-wal',
    file: '/src/replication/wal-service.ts',
    from: 'const sent = Math.min(s.sender?.sentLsn ?? 0, this.#source.log.readableLsn);',
    to: `const sent = ${on('confirm-unconfirmed-wal')} ? (s.sender?.sentLsn ?? 0) : Math.min(s.sender?.sentLsn ?? 0, this.#source.log.readableLsn);`,
  },
];

let registered = false;

/** Loads the mutated files from now on (once per process); import walship only after it. */
export function registerInjectedBugs(): void {
  if (registered) return;
  registered = true;
  register(new URL('./injected-bug-hooks.mjs', import.meta.url), { data: { mutations: MUTATIONS } });
}

/** Runs `fn` with `bug` switched on, and off again whatever happens. One bug at a time. */
export async function withInjectedBug<T>(bug: InjectedBug, fn: () => Promise<T>): Promise<T> {
  const global = globalThis as { [SWITCH]?: string };
  if (global[SWITCH] !== undefined) throw new Error(`injected bug '${global[SWITCH]}' is still on`);
  global[SWITCH] = bug;
  try {
    return await fn();
  } finally {
    delete global[SWITCH];
  }
}
