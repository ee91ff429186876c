import { WalshipError } from './errors.js';

/**
 * A log sequence number: a byte position in the write-ahead log, kept as a `number`
 * below 2^53 so it is exact. Shown as PostgreSQL's `X/Y` (high and low 32 bits in hex).
 */
export type Lsn = number;

const TWO_32 = 0x1_0000_0000;
/** Largest high word whose LSNs stay below 2^53. */
const MAX_HIGH = 0x1f_ffff;
const HEX = /^[0-9A-Fa-f]{1,8}$/;

/** True when `value` is a valid LSN: a non-negative safe integer. */
export function isLsn(value: unknown): value is Lsn {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Throws `INVALID_LSN` unless `value` is a valid LSN. */
export function assertLsn(value: unknown, what = 'lsn'): asserts value is Lsn {
  if (!isLsn(value)) {
    throw new WalshipError('INVALID_LSN', `${what} must be a non-negative safe integer, got ${describe(value)}`);
  }
}

/** Formats an LSN as PostgreSQL does: `16/B374D848` (uppercase hex, no padding). */
export function formatLsn(lsn: Lsn): string {
  assertLsn(lsn);
  const high = Math.floor(lsn / TWO_32);
  const low = lsn - high * TWO_32;
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** Parses PostgreSQL's `X/Y` LSN form (case-insensitive hex, 1–8 digits each side). */
export function parseLsn(text: string): Lsn {
  if (typeof text !== 'string') {
    throw new WalshipError('INVALID_LSN', `an LSN must be a string like "16/B374D848", got ${describe(text)}`);
  }
  const slash = text.indexOf('/');
  const highText = text.slice(0, slash);
  const lowText = text.slice(slash + 1);
  if (slash < 0 || !HEX.test(highText) || !HEX.test(lowText)) {
    throw new WalshipError('INVALID_LSN', `"${truncate(text)}" is not an LSN; expected hex "X/Y" such as "16/B374D848"`);
  }
  const high = Number.parseInt(highText, 16);
  if (high > MAX_HIGH) {
    throw new WalshipError('INVALID_LSN', `LSN "${truncate(text)}" is beyond 2^53, the largest position walship supports`);
  }
  return high * TWO_32 + Number.parseInt(lowText, 16);
}

function truncate(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `"${truncate(value)}"`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  return value === null ? 'null' : typeof value;
}
