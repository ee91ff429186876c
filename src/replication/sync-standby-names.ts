import { WalshipError } from '../errors.js';

/**
 * `synchronousStandbyNames`: which standbys a commit waits for, in the syntax of PostgreSQL's
 * `synchronous_standby_names` (its `syncrep_scanner.l` and `syncrep_gram.y`):
 *
 * ```text
 * FIRST n (name, ...)   the n listed standbys of best priority (earliest in the list) are synchronous
 * ANY n (name, ...)     a commit waits for any n of the listed standbys (quorum)
 * n (name, ...)         the same as FIRST n (...)
 * name, ...             the same as FIRST 1 (...)  (the form of PostgreSQL 9.5 and earlier)
 * ```
 *
 * A name is an unquoted identifier (a letter, `_` or any non-ASCII character, then letters,
 * digits, `_`, `$` or non-ASCII characters), a run of digits (kept as written: `007` stays
 * `007`), `*` (matches every standby), or a double-quoted string in which `""` stands for
 * one `"` (so a name may hold spaces, commas, keywords or be empty). `FIRST` and `ANY` are
 * keywords in any ASCII case; to name a standby `first`, quote it. Unquoted names are *not*
 * folded to lower case (unlike SQL identifiers): the list keeps names as written, and matching
 * a standby's application name ignores ASCII case whether the name was quoted or not, as
 * PostgreSQL's `SyncRepGetStandbyPriority` does with `pg_strcasecmp`.
 *
 * Everything here is pure: no I/O, no state.
 */

/** How the synchronous standbys are chosen: by priority (`FIRST`) or by quorum (`ANY`). */
export type SyncMethod = 'first' | 'any';

/** A parsed `synchronousStandbyNames`. */
export interface SyncStandbyConfig {
  /** `first`: the `num` listed standbys of best priority; `any`: any `num` listed standbys. */
  readonly method: SyncMethod;
  /** How many standbys must confirm a commit: a positive integer. */
  readonly num: number;
  /** The listed names in order, as written (quoted ones without their quotes); `*` is the wildcard. */
  readonly names: readonly string[];
  /** The text the configuration was parsed from. */
  readonly text: string;
}

/** The largest `num` accepted (PostgreSQL keeps it in a C `int`). */
export const MAX_SYNC_STANDBYS = 2_147_483_647;

/** A syntax or range error in `synchronousStandbyNames`; its code is `INVALID_OPTIONS`. */
export class SyncStandbyNamesError extends WalshipError {
  /** 1-based character (code point) position of the error; the text's length + 1 at its end. */
  readonly position: number;
  /** The offending token as written, or `null` at the end of the input. */
  readonly near: string | null;

  constructor(text: string, position: number, near: string | null, reason: string) {
    const where = near === null ? `at position ${position} (end of input)` : `at position ${position} (at or near ${JSON.stringify(near)})`;
    super('INVALID_OPTIONS', `invalid synchronousStandbyNames ${JSON.stringify(clip(text))}: ${reason} ${where}`);
    this.position = position;
    this.near = near;
  }

  /** `'SyncStandbyNamesError'`, for stack traces and logs. */
  override get name(): string {
    return 'SyncStandbyNamesError';
  }
}

type TokenKind = 'name' | 'num' | 'any' | 'first' | '(' | ')' | ',' | 'junk' | 'unterminated' | 'end';

interface Token {
  readonly kind: TokenKind;
  /** The token as written. */
  readonly raw: string;
  /** For names: the name (quotes removed, `""` made `"`). */
  readonly value: string;
  /** 1-based code point position of its first character. */
  readonly position: number;
}

/**
 * Parses `synchronousStandbyNames`. Returns `null` for an empty or all-whitespace text:
 * synchronous replication is off. Throws a {@link SyncStandbyNamesError} (code
 * `INVALID_OPTIONS`) naming the position of a syntax error, or when `num` is not positive.
 */
export function parseSynchronousStandbyNames(text: string): SyncStandbyConfig | null {
  if (typeof text !== 'string') {
    throw new WalshipError('INVALID_OPTIONS', `synchronousStandbyNames must be a string, got ${text === null ? 'null' : typeof text}`);
  }
  const tokens = tokenize(text);
  if (tokens.length === 1) return null; // only the end: empty or whitespace
  let at = 0;
  const peek = (ahead = 0): Token => tokens[Math.min(at + ahead, tokens.length - 1)] as Token;
  const fail = (token: Token): never => {
    if (token.kind === 'unterminated') throw new SyncStandbyNamesError(text, token.position, token.raw, 'unterminated quoted identifier');
    throw new SyncStandbyNamesError(text, token.position, token.kind === 'end' ? null : token.raw, 'syntax error');
  };
  const expect = (kind: TokenKind): Token => {
    const token = peek();
    if (token.kind !== kind) fail(token);
    at++;
    return token;
  };
  const list = (): string[] => {
    const names: string[] = [];
    for (;;) {
      const token = peek();
      if (token.kind !== 'name' && token.kind !== 'num') fail(token);
      names.push(token.value);
      at++;
      if (peek().kind !== ',') return names;
      at++;
    }
  };

  let method: SyncMethod = 'first';
  let numToken: Token | null = null;
  const first = peek();
  if (first.kind === 'any' || first.kind === 'first') {
    method = first.kind;
    at++;
    numToken = expect('num');
  } else if (first.kind === 'num' && peek(1).kind === '(') {
    numToken = expect('num');
  }
  let names: string[];
  if (numToken === null) {
    names = list();
  } else {
    expect('(');
    names = list();
    expect(')');
  }
  expect('end');

  const num = numToken === null ? 1 : Number(numToken.raw);
  if (numToken !== null && num <= 0) {
    throw new SyncStandbyNamesError(text, numToken.position, numToken.raw, `number of synchronous standbys (${num}) must be greater than zero`);
  }
  if (numToken !== null && num > MAX_SYNC_STANDBYS) {
    throw new SyncStandbyNamesError(text, numToken.position, numToken.raw, `number of synchronous standbys must be at most ${MAX_SYNC_STANDBYS}`);
  }
  return Object.freeze({ method, num, names: Object.freeze(names), text });
}

/**
 * The synchronous priority of a standby named `applicationName` (PostgreSQL's
 * `SyncRepGetStandbyPriority`, as `pg_stat_replication.sync_priority` shows it): under
 * `FIRST`, the 1-based position of the first listed name equal to it ignoring ASCII case, or
 * of the first `*`; under `ANY`, 1 for every listed standby. 0 when it is not listed or
 * synchronous replication is off (`config` null): such a standby is asynchronous.
 */
export function syncPriorityOf(config: SyncStandbyConfig | null, applicationName: string): number {
  if (config === null) return 0;
  const { names } = config;
  for (let i = 0; i < names.length; i++) {
    const name = names[i] as string;
    if (name === '*' || equalsIgnoringAsciiCase(name, applicationName)) return config.method === 'first' ? i + 1 : 1;
  }
  return 0;
}

/**
 * Writes `config` back in canonical form: `FIRST 2 (s1, "my standby", *)`. Names that the
 * scanner would not read back as the same single name are double-quoted.
 */
export function formatSynchronousStandbyNames(config: Pick<SyncStandbyConfig, 'method' | 'num' | 'names'>): string {
  return `${config.method === 'first' ? 'FIRST' : 'ANY'} ${config.num} (${config.names.map(quoteName).join(', ')})`;
}

function quoteName(name: string): string {
  if (name === '*' || /^[0-9]+$/.test(name)) return name;
  if (isIdentifier(name) && keyword(name) === null) return name;
  return `"${name.replaceAll('"', '""')}"`;
}

function isIdentifier(name: string): boolean {
  const chars = Array.from(name);
  if (chars.length === 0 || !isIdentStart(chars[0] as string)) return false;
  return chars.every(isIdentCont);
}

// The scanner's character classes. PostgreSQL's work on bytes and count every byte from
// 0x80 up as a letter, i.e. every byte of a multibyte UTF-8 character; here every character
// from U+0080 up is one.
function isIdentStart(ch: string): boolean {
  return /^[A-Za-z_]$/.test(ch) || (ch.codePointAt(0) as number) >= 0x80;
}

function isIdentCont(ch: string): boolean {
  return /^[A-Za-z_0-9$]$/.test(ch) || (ch.codePointAt(0) as number) >= 0x80;
}

function isDigit(ch: string): boolean {
  return ch >= '0' && ch <= '9';
}

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v';
}

/** `any` or `first` when an identifier, in any ASCII case, is one of the two keywords. */
function keyword(identifier: string): 'any' | 'first' | null {
  if (equalsIgnoringAsciiCase(identifier, 'any')) return 'any';
  if (equalsIgnoringAsciiCase(identifier, 'first')) return 'first';
  return null;
}

/**
 * Splits the text into tokens, ending with an `end` token. As flex does, each token is the
 * longest match, so `firstly` and `any1` are names while `first` and `ANY` are keywords. An
 * unterminated quoted name becomes an `unterminated` token, reported when the parser reaches
 * it (an earlier syntax error is reported first, as PostgreSQL's parser would).
 */
function tokenize(text: string): Token[] {
  const chars = Array.from(text);
  const tokens: Token[] = [];
  let i = 0;
  const push = (kind: TokenKind, start: number, value: string): void => {
    tokens.push({ kind, raw: chars.slice(start, i).join(''), value, position: start + 1 });
  };
  while (i < chars.length) {
    const ch = chars[i] as string;
    const start = i;
    if (isSpace(ch)) {
      i++;
    } else if (ch === '"') {
      let value = '';
      let closed = false;
      i++;
      while (i < chars.length) {
        const c = chars[i] as string;
        if (c !== '"') {
          value += c;
          i++;
        } else if (chars[i + 1] === '"') {
          value += '"';
          i += 2;
        } else {
          i++;
          closed = true;
          break;
        }
      }
      push(closed ? 'name' : 'unterminated', start, value);
      if (!closed) break;
    } else if (isIdentStart(ch)) {
      i++;
      while (i < chars.length && isIdentCont(chars[i] as string)) i++;
      const word = chars.slice(start, i).join('');
      push(keyword(word) ?? 'name', start, word);
    } else if (isDigit(ch)) {
      i++;
      while (i < chars.length && isDigit(chars[i] as string)) i++;
      push('num', start, chars.slice(start, i).join(''));
    } else if (ch === '*') {
      i++;
      push('name', start, '*');
    } else if (ch === '(' || ch === ')' || ch === ',') {
      i++;
      push(ch, start, ch);
    } else {
      i++;
      push('junk', start, ch);
    }
  }
  tokens.push({ kind: 'end', raw: '', value: '', position: chars.length + 1 });
  return tokens;
}

/** `pg_strcasecmp(a, b) == 0` for our strings: equal once ASCII `A`–`Z` are folded to lower case. */
function equalsIgnoringAsciiCase(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x >= 65 && x <= 90) x += 32;
    if (y >= 65 && y <= 90) y += 32;
    if (x !== y) return false;
  }
  return true;
}

function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
