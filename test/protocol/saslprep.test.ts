import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { saslprep } from '../../src/protocol/saslprep.js';

describe('SASLprep, as PostgreSQL applies it', () => {
  // RFC 4013, section 3, where PostgreSQL uses the raw bytes instead of failing.
  const cases: [string, string, string | null][] = [
    ['soft hyphen mapped to nothing', 'I\u00adX', 'IX'],
    ['plain ASCII', 'user', 'user'],
    ['upper case kept', 'USER', 'USER'],
    ['NFKC of ª', '\u00aa', 'a'],
    ['NFKC of Ⅸ', '\u2168', 'IX'],
    ['ASCII control characters pass through', '\u0007', '\u0007'],
    ['bidi: RandAL followed by a digit', '\u0627\u0031', null],
    ['bidi: RandAL on both ends', '\u0627\u0031\u0628', '\u0627\u0031\u0628'],
    ['bidi: RandAL mixed with L', '\u0627a\u0628', null],
    ['non-ASCII space mapped to a space', 'a\u00a0b', 'a b'],
    ['only characters mapped to nothing', '\u00ad\u034f', null],
    ['zero width space, in both C.1.2 and B.1, becomes a space', 'a\u200bb', 'a b'],
    ['private use', 'p\ue000', null],
    ['unassigned in Unicode 3.2', 'p\u0221', null],
    ['emoji, unassigned in Unicode 3.2', 'p\u{1f600}', null],
    ['non-character', 'p\ufffe', null],
    ['tagging character', 'p\u{e0041}', null],
    ['NFKC of a ligature', '\ufb01x', 'fix'],
    ['NFKC composes', 'e\u0301', '\u00e9'],
  ];
  for (const [what, input, expected] of cases) {
    it(what, () => assert.equal(saslprep(input), expected));
  }
});
