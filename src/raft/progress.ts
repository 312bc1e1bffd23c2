// The leader's view of one follower's log (etcd's Progress): how far it matches, what to send next,
// and how much may be in flight. Probe sends one AppendEntries at a time until a match is found;
// replicate pipelines up to `maxInflight` of them; snapshot waits for an InstallSnapshot to finish.

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** Probe state: an append is outstanding; wait for its answer or the next heartbeat. */
  probeSent = false;
  /** Last index carried by each in-flight append, oldest first (replicate state). */
  private inflight: number[] = [];
  /** Index of the snapshot being sent (snapshot state). */
  pendingSnapshot = 0;
  snapshotSentAt = 0;
  /** Tick of the last message received from this follower (CheckQuorum, reachability). */
  lastActive: number;
  /** Highest heartbeat round (ctx) this follower acknowledged in the current term (ReadIndex). */
  readAck = 0;

  constructor(next: number, now: number) {
    this.next = next;
    this.lastActive = now;
  }

  isPaused(maxInflight: number): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflight.length >= maxInflight;
      case 'snapshot':
        return true;
    }
  }

  becomeProbe(): void {
    // After a snapshot was installed the follower holds at least the snapshot's entries.
    this.next = Math.max(this.match + 1, this.state === 'snapshot' ? this.pendingSnapshot + 1 : 0);
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflight = [];
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflight = [];
  }

  becomeSnapshot(index: number, now: number): void {
    this.state = 'snapshot';
    this.snapshotSentAt = now;
    this.pendingSnapshot = index;
    this.inflight = [];
  }

  /** Record that an append carrying entries up to `lastIndex` was sent (lastIndex = next-1 if empty). */
  sentAppend(lastIndex: number, entryCount: number): void {
    if (this.state === 'replicate') {
      if (entryCount > 0) {
        this.next = lastIndex + 1;
        this.inflight.push(lastIndex);
      }
    } else if (this.state === 'probe') {
      this.probeSent = true;
    }
  }

  /** A success response for `index`: returns true if it moved the match forward. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    if (this.next < index + 1) this.next = index + 1;
    while (this.inflight.length > 0 && this.inflight[0]! <= index) this.inflight.shift();
    return updated;
  }

  /**
   * A rejection of the append whose prevLogIndex was `rejected`, with the follower's hint turned
   * into a candidate next index. Returns false when the rejection is stale and must be ignored.
   */
  maybeDecrTo(rejected: number, hintNext: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.becomeProbe();
      this.next = Math.max(this.match + 1, Math.min(rejected, hintNext));
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(this.match + 1, Math.min(rejected, hintNext));
    this.probeSent = false;
    return true;
  }

  /** Heartbeat responses free the oldest in-flight slot so a lost append cannot stall the pipe forever. */
  freeFirstInflight(): void {
    this.inflight.shift();
  }
}
