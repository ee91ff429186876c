import type { Duplex } from 'node:stream';
import type { Application, CommittedBatch, Lsn, Primary, PrimaryEvents, Storage, StorageFile, StorageOpenOptions, Transport } from '../../src/index.js';
import type { AuthOptions } from '../../src/protocol/auth-rules.js';
import type { MessageStream } from '../../src/protocol/message-stream.js';
import type { ServerMessage } from '../../src/protocol/messages.js';
import { connectReplication } from '../../src/protocol/replication-client.js';
import { MemoryStorage } from '../../src/testing/index.js';
import type { AppliedBatch } from './apps.js';
import { within } from './wal.js';

/** Lets user `repl` in from anywhere without a password: these tests are not about auth. */
export const TRUST_REPL: AuthOptions = { rules: [{ user: 'repl', address: 'all', method: 'trust' }] };

/**
 * A MemoryStorage whose fdatasyncs can be held back, so a test can look at a commit while its
 * batch is in the log but not yet durable.
 */
export class GatedStorage implements Storage {
  readonly inner: MemoryStorage;
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;
  #syncDelayMs = 0;

  constructor(inner = new MemoryStorage()) {
    this.inner = inner;
  }

  get description(): string {
    return this.inner.description;
  }

  /** From now on, every datasync waits for {@link release}. */
  hold(): void {
    this.#gate ??= new Promise((resolve) => (this.#open = resolve));
  }

  /**
   * From now on every datasync first waits `ms` on a timer, as real fdatasyncs complete in a
   * later turn of the event loop (a MemoryStorage one completes at once).
   */
  delaySyncs(ms: number): void {
    this.#syncDelayMs = ms;
  }

  release(): void {
    this.#open?.();
    this.#gate = null;
    this.#open = null;
  }

  prepare(): Promise<void> {
    return this.inner.prepare();
  }
  list(): Promise<string[]> {
    return this.inner.list();
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  syncDirectory(): Promise<void> {
    return this.inner.syncDirectory();
  }
  lock(): ReturnType<Storage['lock']> {
    return this.inner.lock();
  }

  async open(name: string, options?: StorageOpenOptions): Promise<StorageFile> {
    const file = await this.inner.open(name, options);
    const gated: StorageFile = {
      name: file.name,
      read: (buffer, offset, length, position) => file.read(buffer, offset, length, position),
      write: (data, position) => file.write(data, position),
      datasync: async () => {
        if (this.#syncDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.#syncDelayMs));
        while (this.#gate !== null) await this.#gate;
        return file.datasync();
      },
      allocate: (size, opts) => file.allocate(size, opts),
      size: () => file.size(),
      close: () => file.close(),
    };
    const { writev } = file;
    return writev === undefined ? gated : { ...gated, writev: (buffers, position) => writev.call(file, buffers, position) };
  }
}

/**
 * An application that keeps its state "durably" in `store` (shared across instances, as a
 * database file would be) and reports where it is through `appliedLsn()`.
 */
export class DurableApp implements Application {
  constructor(readonly store: { applied: AppliedBatch[] }) {}

  apply(batch: CommittedBatch): void {
    this.store.applied.push({ lsn: batch.lsn, entries: batch.entries.map((e) => Buffer.from(e.data).toString('hex')) });
  }

  appliedLsn(): Lsn | null {
    return this.store.applied.at(-1)?.lsn ?? null;
  }
}

/** Wraps a transport and remembers the server side of every accepted connection. */
export function observedTransport(inner: Transport): { transport: Transport; accepted: Duplex[] } {
  const accepted: Duplex[] = [];
  const transport: Transport = {
    name: inner.name,
    listen: (address, onConnection, options) =>
      inner.listen(
        address,
        (stream, peer) => {
          accepted.push(stream);
          onConnection(stream, peer);
        },
        options,
      ),
    connect: (address, options) => inner.connect(address, options),
  };
  return { transport, accepted };
}

/** A hand-driven standby connection: the test decides every message it sends. */
export async function rawStandby(transport: Transport, address: string, applicationName = 'raw'): Promise<MessageStream<'client'>> {
  return connectReplication({ transport, address, user: 'repl', applicationName });
}

/** The next message of `kind`, failing on an `error` message or the end of the connection. */
export async function expectMessage<K extends ServerMessage['kind']>(
  conn: MessageStream<'client'>,
  kind: K,
  ms = 20_000,
): Promise<Extract<ServerMessage, { kind: K }>> {
  const message = await within(conn.next(), ms, `a ${kind} message`);
  if (message === null) throw new Error(`the connection ended while waiting for ${kind}`);
  if (message.kind !== kind) throw new Error(`expected ${kind}, got ${message.kind}${message.kind === 'error' ? ` (${message.code}: ${message.message})` : ''}`);
  return message as Extract<ServerMessage, { kind: K }>;
}

/** Reads walData until the received WAL reaches `end`; returns where it got to. Keepalives are skipped. */
export async function receiveUntil(conn: MessageStream<'client'>, from: Lsn, end: Lsn, ms = 20_000): Promise<Lsn> {
  let at = from;
  const deadline = Date.now() + ms;
  while (at < end) {
    const message = await within(conn.next(), Math.max(1, deadline - Date.now()), `WAL up to ${end}`);
    if (message === null) throw new Error('the connection ended before the WAL arrived');
    if (message.kind === 'error') throw new Error(`${message.code}: ${message.message}`);
    if (message.kind !== 'walData') continue;
    if (message.startLsn !== at) throw new Error(`WAL data at ${message.startLsn}, expected ${at}`);
    at += message.data.length;
  }
  return at;
}

/** Sends a status report with the given positions. */
export function report(conn: MessageStream<'client'>, writeLsn: Lsn, flushLsn: Lsn, applyLsn: Lsn): void {
  conn.send({ kind: 'standbyStatusUpdate', writeLsn, flushLsn, applyLsn, sendTime: Date.now() * 1000, replyRequested: false });
}

/** Polls `condition` every few ms until it holds; fails after `ms` (a hang guard, not a timing target). */
export async function eventually(condition: () => boolean, ms: number, what: string): Promise<void> {
  await within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    ms,
    what,
  );
}

/** A promise for the next `event` of `primary` whose payload passes `filter`. */
export function nextEvent<E extends keyof PrimaryEvents>(
  primary: Primary,
  event: E,
  filter: (payload: Parameters<PrimaryEvents[E]>[0]) => boolean = () => true,
): Promise<Parameters<PrimaryEvents[E]>[0]> {
  return new Promise((resolve) => {
    const listener = (payload: Parameters<PrimaryEvents[E]>[0]): void => {
      if (!filter(payload)) return;
      primary.off(event, listener as never);
      resolve(payload);
    };
    primary.on(event, listener as never);
  });
}
