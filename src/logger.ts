import createDebug, { type Debugger } from 'debug';

/** The three `debug` channels of a component: normal, `:error` and `:trace`. */
export interface Logger {
  (formatter: string, ...args: unknown[]): void;
  readonly error: Debugger;
  readonly trace: Debugger;
  /**
   * True for a node walship runs privately (its `logPrefix` begins with
   * {@link QUIET_LOG_PREFIX}): it logs nothing, and publishes no diagnostics either.
   */
  readonly quiet: boolean;
}

/**
 * The `logPrefix` of the nodes walship runs privately, for itself (a standby's rehearsal of a
 * promotion, src/promotion-rehearsal.ts): what they do is no user's business, so their
 * loggers stay silent whatever `DEBUG` says and they publish nothing on the diagnostics
 * channels. It begins with a NUL character, which no prefix meant for a log line would.
 */
export const QUIET_LOG_PREFIX = '\u0000walship:quiet';

/**
 * A logger for `walship:<component>`. `prefix` (the `logPrefix` option) is put in front
 * of every line so two nodes in one process can be told apart. Never log payload bytes
 * or credentials.
 */
export function createLogger(component: string, prefix?: string): Logger {
  const namespace = `walship:${component}`;
  const main = createDebug(namespace);
  const error = createDebug(`${namespace}:error`);
  const trace = createDebug(`${namespace}:trace`);
  const quiet = prefix?.startsWith(QUIET_LOG_PREFIX) === true;
  if (quiet) {
    for (const d of [main, error, trace]) d.enabled = false;
  } else if (prefix !== undefined && prefix !== '') {
    for (const d of [main, error, trace]) d.namespace = `${d.namespace} [${prefix}]`;
  }
  const log = ((formatter: string, ...args: unknown[]) => main(formatter, ...args)) as Logger;
  Object.defineProperty(log, 'error', { value: error });
  Object.defineProperty(log, 'trace', { value: trace });
  Object.defineProperty(log, 'quiet', { value: quiet });
  return log;
}
