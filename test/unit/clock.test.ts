import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { anchoredWallClock } from '../../src/clock.js';

describe('anchoredWallClock', () => {
  it('starts at the wall time and advances with the monotonic clock only', () => {
    let wall = 1_700_000_000_000;
    let mono = 5_000.25;
    const now = anchoredWallClock(
      () => wall,
      () => mono,
    );
    assert.equal(now(), 1_700_000_000_000);
    mono += 1_500;
    assert.equal(now(), 1_700_000_001_500);
    // An NTP step or `date -s`, either way: nothing moves.
    wall += 3_600_000;
    assert.equal(now(), 1_700_000_001_500);
    wall -= 7_200_000;
    mono += 10;
    assert.equal(now(), 1_700_000_001_510);
  });

  it('with the default sources, ignores a jump of Date.now', () => {
    const realNow = Date.now;
    const now = anchoredWallClock();
    const before = now();
    try {
      Date.now = () => realNow() + 24 * 3_600_000;
      assert.ok(now() - before < 1_000, 'a day forward on the wall clock does not move it');
      Date.now = () => realNow() - 24 * 3_600_000;
      assert.ok(now() >= before, 'nor does a day back');
    } finally {
      Date.now = realNow;
    }
  });
});
