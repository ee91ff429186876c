import createDebug, { type Debugger } from 'debug';

/** The three `debug` channels of a component: normal, `:error` and `:trace`. */
export interface Logger {
  (formatter: string, ...args: unknown[]): void;
  readonly error: Debugger;
  readonly trace: Debugger;
}

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
  if (prefix !== undefined && prefix !== '') {
    for (const d of [main, error, trace]) d.namespace = `${d.namespace} [${prefix}]`;
  }
  const log = ((formatter: string, ...args: unknown[]) => main(formatter, ...args)) as Logger;
  Object.defineProperty(log, 'error', { value: error });
  Object.defineProperty(log, 'trace', { value: trace });
  return log;
}
