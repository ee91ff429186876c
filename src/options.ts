import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { WalshipError } from './errors.js';

/**
 * The one ajv instance shared by every component. Each component keeps its own JSON
 * schema and defaults next to its code and compiles it here once.
 * `useDefaults` stays off: defaults are merged without touching the caller's object.
 * `validateSchema` is off: checking our own schemas against JSON Schema's meta-schema meant
 * compiling the meta-schema at every import (10-15 % of walship's import time);
 * test/options.test.ts checks them instead.
 */
const ajv = new Ajv({ allErrors: true, strict: true, useDefaults: false, coerceTypes: false, validateSchema: false });

/** A compiled validator that throws `INVALID_OPTIONS` naming the offending field. */
export type OptionsValidator<T> = (options: unknown) => asserts options is T;

/**
 * Compiles `schema` now, at import (not on first use: the first `promote()` would pay for the
 * `Primary`'s schema); the returned function validates an options object.
 */
export function compileOptions<T>(what: string, schema: object): OptionsValidator<T> {
  const validate: ValidateFunction = ajv.compile(schema);
  return (options: unknown): asserts options is T => {
    if (validate(options)) return;
    const problems = (validate.errors ?? []).map((error) => describeError(what, error));
    throw new WalshipError('INVALID_OPTIONS', `invalid ${what} options: ${problems.join('; ')}`);
  };
}

function describeError(what: string, error: ErrorObject): string {
  const path = `${what}${error.instancePath.replaceAll('/', '.')}`;
  switch (error.keyword) {
    case 'additionalProperties':
      return `${path} has unknown option "${String(error.params['additionalProperty'])}"`;
    case 'enum':
      return `${path} must be one of ${(error.params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'type':
      return `${path} must be ${String(error.params['type'])}`;
    default:
      return `${path} ${error.message ?? 'is invalid'}`;
  }
}

/** Returns a new object: `defaults` overlaid with the defined values of `options`. */
export function withDefaults<D extends object, O extends object>(defaults: D, options: O): D & O {
  const merged: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) merged[key] = value;
  }
  return merged as D & O;
}
