import { formatLsn, type Lsn } from 'walship';
import type { NodeStatus, StandbyRow } from './messages.js';

/** A node as the status table shows it. */
export interface TableEntry {
  readonly name: string;
  readonly status: NodeStatus | null;
  /** Why it has no status: 'killed'. */
  readonly gone?: string;
}

/** Without a terminal, the table is printed this often. */
const PLAIN_EVERY_MS = 2_500;
const HEADER = ['node', 'role', 'state', 'tl', 'sync', 'sent', 'write', 'flush', 'replay', 'lag w/f/r ms', 'commits/s'];

/**
 * The demo's output: timestamped log lines, and a status table of the nodes. On a terminal the
 * table stays under the log and is redrawn in place; otherwise (a pipe, a file, CI) it is
 * printed as plain lines every few seconds, without escape codes.
 */
export class Display {
  readonly #out: NodeJS.WriteStream;
  readonly #tty: boolean;
  readonly #started = performance.now();
  #table: string[] = [];
  #drawn = 0;
  #plainAt = -Infinity;

  constructor(out: NodeJS.WriteStream) {
    this.#out = out;
    this.#tty = out.isTTY === true;
  }

  /** Seconds since the demo started, as a log prefix. */
  get #time(): string {
    return `[${((performance.now() - this.#started) / 1_000).toFixed(1).padStart(4)}s]`;
  }

  log(text: string): void {
    this.#erase();
    this.#out.write(`${this.#time} ${text}\n`);
    this.#draw();
  }

  /** Shows the nodes' latest status: redrawn on a terminal, otherwise every PLAIN_EVERY_MS (or now, with `force`). */
  table(entries: readonly TableEntry[], force = false): void {
    if (entries.length === 0) return;
    this.#table = render(entries);
    if (this.#tty) {
      this.#erase();
      this.#draw();
    } else if (force || performance.now() - this.#plainAt >= PLAIN_EVERY_MS) {
      this.#plainAt = performance.now();
      this.#out.write(this.#table.map((line) => `${this.#time}   ${line}\n`).join(''));
    }
  }

  /** Stops redrawing: the last table stays where it is. */
  stop(): void {
    this.#drawn = 0;
    this.#table = [];
  }

  #erase(): void {
    // Cursor up to the table's first line, then clear to the end of the screen.
    if (this.#drawn > 0) this.#out.write(`\x1b[${this.#drawn}F\x1b[J`);
    this.#drawn = 0;
  }

  #draw(): void {
    if (!this.#tty || this.#table.length === 0) return;
    this.#out.write(this.#table.map((line) => `${line}\n`).join(''));
    this.#drawn = this.#table.length;
  }
}

/** The table's lines: a header, then one line per node, in aligned columns. */
function render(entries: readonly TableEntry[]): string[] {
  // The primary's replicationStatus() says how far each standby is (pg_stat_replication).
  const primary = entries.find((e) => e.status?.role === 'primary' && e.gone === undefined);
  const rows = entries.map(({ name, status, gone }) => {
    if (gone !== undefined || status === null) return [name, '', gone ?? 'starting'];
    if (status.role === 'primary') {
      return [name, 'primary', 'in production', `${status.timeline}`, '', '', '', lsn(status.flushLsn), lsn(status.replayLsn), '', rate(status.commitsPerSecond)];
    }
    const row: StandbyRow | undefined = primary?.status?.standbys.find((r) => r.applicationName === name);
    const state = status.state === 'streaming' && row !== undefined ? row.state : status.state;
    const lags = row === undefined ? '' : [row.writeLagMs, row.flushLagMs, row.replayLagMs].map(ms).join('/');
    return [
      name, 'standby', state, `${status.timeline ?? ''}`, row?.syncState ?? '',
      lsn(row?.sentLsn ?? null), lsn(row?.writeLsn ?? null), lsn(row?.flushLsn ?? status.flushLsn), lsn(row?.replayLsn ?? status.replayLsn),
      lags, rate(status.commitsPerSecond),
    ];
  });
  const lines = [HEADER, ...rows];
  const widths = HEADER.map((_, i) => Math.max(...lines.map((cells) => (cells[i] ?? '').length)));
  return lines.map((cells) => cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
}

const lsn = (value: Lsn | null): string => (value === null ? '-' : formatLsn(value));
const ms = (value: number | null): string => (value === null ? '-' : value.toFixed(0));
const rate = (value: number): string => value.toFixed(0);
