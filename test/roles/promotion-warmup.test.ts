import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { warmPromotionPath } from '../../src/roles/promotion-warmup.js';

describe('warmPromotionPath', () => {
  it('leaves nothing behind: no timer, handle or request of its own, and runs again alike', () => {
    const before = process.getActiveResourcesInfo();
    warmPromotionPath();
    warmPromotionPath();
    assert.deepEqual(process.getActiveResourcesInfo(), before, 'the warm-up must start nothing that outlives it');
  });
});
