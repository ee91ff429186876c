import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatLsn, isLsn, isWalshipError, parseLsn } from '../src/index.js';

describe('LSN format and parse', () => {
  it('formats like PostgreSQL: uppercase hex of the high and low 32 bits', () => {
    assert.equal(formatLsn(0), '0/0');
    assert.equal(formatLsn(0x16_b374d848), '16/B374D848');
    assert.equal(formatLsn(0x1_0000_0000), '1/0');
    assert.equal(formatLsn(Number.MAX_SAFE_INTEGER), '1FFFFF/FFFFFFFF');
  });

  it('parses PostgreSQL forms, case-insensitively and with leading zeros', () => {
    assert.equal(parseLsn('16/B374D848'), 0x16_b374d848);
    assert.equal(parseLsn('16/b374d848'), 0x16_b374d848);
    assert.equal(parseLsn('00000000/00000001'), 1);
    assert.equal(parseLsn('1FFFFF/FFFFFFFF'), Number.MAX_SAFE_INTEGER);
  });

  it('round-trips every safe LSN', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (lsn) => parseLsn(formatLsn(lsn)) === lsn),
      { seed: 4242, numRuns: 2000 },
    );
  });

  for (const bad of ['', '/', '1/', '/1', '1/2/3', 'G/0', '0x1/0', ' 1/0', '1/0 ', '123456789/0', '1/123456789', '200000/0', '-1/0', '1.5/0']) {
    it(`rejects ${JSON.stringify(bad)} with INVALID_LSN`, () => {
      assert.throws(() => parseLsn(bad), (err) => isWalshipError(err, 'INVALID_LSN'));
    });
  }

  it('rejects non-strings and non-LSN numbers with INVALID_LSN', () => {
    assert.throws(() => parseLsn(42 as unknown as string), (err) => isWalshipError(err, 'INVALID_LSN'));
    for (const bad of [-1, 1.5, Number.NaN, Infinity, 2 ** 53]) {
      assert.equal(isLsn(bad), false);
      assert.throws(() => formatLsn(bad), (err) => isWalshipError(err, 'INVALID_LSN'));
    }
  });
});
