import type { Application, CommittedBatch, Snapshot } from 'walship';

// The application under test: a small bank ledger, as a user of walship would write it. Each
// committed entry is one transfer; every node (primary and standbys) applies the same
// transfers in the same order, so every node holds the same balances.

/** One transfer between two accounts: the content of one WAL entry. */
export interface Transfer {
  /** Unique per transfer: what the tests look for on each node. */
  readonly id: number;
  /** The account debited. */
  readonly from: string;
  /** The account credited. */
  readonly to: string;
  /** A whole amount, at least 1. */
  readonly amount: number;
}

/** How a transfer ended when the ledger applied it. */
export type TransferOutcome = 'booked' | 'declined';

/** The ledger's accounts. */
export const ACCOUNTS: readonly string[] = ['alice', 'bob', 'carol', 'dave'];

/** What each account holds before any transfer: money is only moved, so the total stays this times four. */
export const OPENING_BALANCE = 1_000;

/** Encodes a transfer as a WAL entry. */
export function transferEntry(transfer: Transfer): Buffer {
  return Buffer.from(JSON.stringify(transfer));
}

/** Decodes a WAL entry written by {@link transferEntry}; anything else is refused. */
export function decodeTransfer(data: Uint8Array): Transfer {
  const value = JSON.parse(Buffer.from(data).toString()) as Partial<Transfer> | null;
  const { id, from, to, amount } = value ?? {};
  if (!Number.isSafeInteger(id) || typeof from !== 'string' || typeof to !== 'string' || !ACCOUNTS.includes(from) || !ACCOUNTS.includes(to) || from === to || !Number.isSafeInteger(amount) || amount! < 1) {
    throw new Error(`not a transfer: ${Buffer.from(data).toString().slice(0, 100)}`);
  }
  return { id: id!, from, to, amount: amount! };
}

/** The snapshot's content: balances and every transfer's outcome. */
interface LedgerState {
  readonly balances: [string, number][];
  readonly outcomes: [number, TransferOutcome][];
}

/**
 * The replicated state machine: balances, and the outcome of every transfer applied. A transfer
 * that would overdraw its account is declined, on every node alike (the decision depends only
 * on the transfers before it). It keeps its journal in memory, as a test application may; a
 * real one would keep it in its database.
 */
export class Ledger implements Application {
  readonly #balances = new Map<string, number>(ACCOUNTS.map((account) => [account, OPENING_BALANCE]));
  readonly #outcomes = new Map<number, TransferOutcome>();
  #duplicates = 0;

  apply(batch: CommittedBatch): void {
    for (const entry of batch.entries) {
      const transfer = decodeTransfer(entry.data);
      // walship applies each batch once; a second sight of a transfer is counted for the tests to catch.
      if (this.#outcomes.has(transfer.id)) {
        this.#duplicates++;
        continue;
      }
      const from = this.#balances.get(transfer.from)!;
      if (from < transfer.amount) {
        this.#outcomes.set(transfer.id, 'declined');
        continue;
      }
      this.#balances.set(transfer.from, from - transfer.amount);
      this.#balances.set(transfer.to, this.#balances.get(transfer.to)! + transfer.amount);
      this.#outcomes.set(transfer.id, 'booked');
    }
  }

  snapshot(): Promise<Uint8Array> {
    const state: LedgerState = { balances: [...this.#balances], outcomes: [...this.#outcomes] };
    return Promise.resolve(Buffer.from(JSON.stringify(state)));
  }

  async restore(snapshot: Snapshot): Promise<void> {
    const state = JSON.parse((await snapshot.bytes()).toString()) as LedgerState;
    this.#balances.clear();
    for (const [account, balance] of state.balances) this.#balances.set(account, balance);
    this.#outcomes.clear();
    for (const [id, outcome] of state.outcomes) this.#outcomes.set(id, outcome);
    this.#duplicates = 0;
  }

  /** The balance of `account`. */
  balance(account: string): number {
    return this.#balances.get(account) ?? 0;
  }

  /** The sum of every balance: `ACCOUNTS.length * OPENING_BALANCE` whatever was applied. */
  total(): number {
    let sum = 0;
    for (const balance of this.#balances.values()) sum += balance;
    return sum;
  }

  /** How transfer `id` ended, or `undefined` if this ledger has not applied it. */
  outcome(id: number): TransferOutcome | undefined {
    return this.#outcomes.get(id);
  }

  /** How many transfers were applied (booked or declined). */
  get transfers(): number {
    return this.#outcomes.size;
  }

  /** How many times a transfer already applied came again (0 unless walship applied a batch twice). */
  get duplicates(): number {
    return this.#duplicates;
  }

  /** The whole state, comparable with `deepEqual` between nodes. */
  state(): { balances: Record<string, number>; outcomes: Record<number, TransferOutcome> } {
    return { balances: Object.fromEntries(this.#balances), outcomes: Object.fromEntries(this.#outcomes) };
  }
}
