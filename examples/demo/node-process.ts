import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { CommandName, Commands, NodeConfig, NodeMessage, NodeStatus, Request, RewindReport } from './messages.js';

/** How long main.ts waits for a node's answer, or for it to open. */
export const DEADLINE_MS = 20_000;

const SCRIPT = fileURLToPath(new URL('node.ts', import.meta.url));
// The child runs node.ts's TypeScript as this process does: through tsx, with `walship`
// resolved to this repository's sources (the package's "walship-source" export condition).
const EXEC_ARGV = ['--conditions=walship-source', '--import', import.meta.resolve('tsx')];

/** Every node started and not yet gone, so that none outlives main.ts. */
const running = new Set<NodeProcess>();

/** Kills every node still running (SIGKILL): on failure, on a signal, at exit. */
export function killAll(): void {
  for (const node of running) void node.kill();
}

/**
 * A walship node in a child process (node.ts), seen from main.ts: its commands, its status,
 * the keys of the commits it acknowledged, its rewinds, and `log` lines for main.ts to show.
 * Its end is a `crash` unless main.ts killed or closed it.
 */
export class NodeProcess extends EventEmitter<{ log: [text: string]; crash: [message: string] }> {
  readonly name: string;
  /** Keys of the commits this node acknowledged, as it reported them. */
  readonly acked: string[] = [];
  /** When its first acknowledgement arrived (`performance.now()`). */
  firstAckAt: number | null = null;
  status: NodeStatus | null = null;
  /** Its `rewind` events. */
  readonly rewinds: RewindReport[] = [];
  address = '';
  readonly #child: ChildProcess;
  readonly #replies = new Map<number, { resolve: (body: unknown) => void; reject: (err: Error) => void }>();
  #nextId = 0;
  #ending = false;
  readonly #exited: Promise<void>;
  /** Resolves once the node is open and listening (at most DEADLINE_MS); rejects if it ends first. */
  readonly ready: Promise<void>;

  /** Starts the node: `ready` resolves once it is open and listening. */
  constructor(config: NodeConfig) {
    super();
    this.name = config.name;
    this.#child = fork(SCRIPT, [JSON.stringify(config)], { execArgv: EXEC_ARGV, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    running.add(this);
    let fatal = '';
    let opened = (): void => {};
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not open within ${DEADLINE_MS} ms`)), DEADLINE_MS);
      opened = () => (clearTimeout(timer), resolve());
      this.once('crash', (message) => (clearTimeout(timer), reject(new Error(message))));
    });
    this.#child.on('message', (raw) => {
      const message = raw as NodeMessage;
      switch (message.kind) {
        case 'ready':
          this.address = message.address;
          opened();
          return;
        case 'reply': {
          const waiter = this.#replies.get(message.id);
          this.#replies.delete(message.id);
          if (message.error === undefined) waiter?.resolve(message.body);
          else waiter?.reject(new Error(`${this.name}: ${message.error}`));
          return;
        }
        case 'status':
          this.status = message.status;
          return;
        case 'acked':
          this.firstAckAt ??= performance.now();
          this.acked.push(...message.keys);
          return;
        case 'event':
          this.emit('log', message.text);
          return;
        case 'rewind':
          this.rewinds.push(message);
          return;
        case 'fatal':
          fatal = message.message;
          return;
      }
    });
    this.#exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        running.delete(this);
        const why = fatal === '' ? `exited (${signal ?? `code ${code}`})` : `failed: ${fatal}`;
        for (const { reject } of this.#replies.values()) reject(new Error(`${this.name} ${why}`));
        if (!this.#ending) this.emit('crash', `${this.name} ${why}`);
        resolve();
      });
    });
  }

  get pid(): number {
    return this.#child.pid ?? 0;
  }

  /** Sends a command and waits for its answer (at most DEADLINE_MS). */
  call<C extends CommandName>(cmd: C, args: Commands[C]['args']): Promise<Commands[C]['reply']> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not answer ${cmd} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
      const settle = <T>(then: (value: T) => void) => (value: T) => (clearTimeout(timer), then(value));
      this.#replies.set(id, { resolve: settle(resolve as (body: unknown) => void), reject: settle(reject) });
      this.#child.send({ id, cmd, args } satisfies Request<C>);
    });
  }

  /** SIGKILL: the process ends at once, with whatever it had not written or sent. */
  kill(): Promise<void> {
    this.#ending = true;
    this.#child.kill('SIGKILL');
    return this.#exited;
  }

  /** A clean shutdown (the node's `close()`), then the process exits. */
  async close(): Promise<void> {
    this.#ending = true;
    await this.call('close', {});
    await this.#exited;
  }
}
