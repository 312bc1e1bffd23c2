// Clocks. Durations (timeouts, leases, "heard from within") use performance.now(), which a wall-clock
// step cannot move. Times that go into the Raft log (lock expiry) or into Redis (queue visibility
// deadlines, compared by whichever node runs the redelivery monitor) must mean the same on every node,
// so they are wall-clock milliseconds, but read from an anchored clock: the wall time once, at
// creation, advanced by the monotonic clock after that. An NTP step or an operator's `date -s` on a
// running node then neither expires nor extends a hold; a restart re-anchors on the (corrected) wall
// clock.

/** Milliseconds since the epoch, as of `wall()` at creation, advancing only with `mono()`. */
export function anchoredWallClock(
  wall: () => number = Date.now,
  mono: () => number = () => performance.now(),
): () => number {
  const offset = wall() - mono();
  return () => Math.floor(offset + mono());
}
