// MESI transitions of one line at one node (SPEC 6). Pure: the caller owns the line, performs the
// write-back, sends the request or the eviction notice, and answers the home with the data.
//
// Ordering rules the caller must keep, which the transitions below assume:
// - `writeBack` happens before the state change is visible to anyone (seed 000 "Writeback Safety"):
//   an M line is in memory before the node answers a snoop/invalidate or drops the line, so whoever
//   reads memory afterwards sees it.
// - An eviction notice is sent after the line is dropped, and the node sends no new request for that
//   key until the home has processed the notice; otherwise a late notice would delist a fresh copy.
// - A node applies local events and the home's snoops/invalidations for one key one at a time.
import type { LineState } from './types.js';

/** What happens at a node: its own accesses and evictions, and the home's messages. */
export type CacheEvent = 'read' | 'write' | 'evict' | 'snoop_read' | 'invalidate';

export interface Transition {
  /** State after the event. For an event that needs the home, the state until the grant arrives. */
  readonly next: LineState;
  /** Write the line to memory before changing state (only ever from M). */
  readonly writeBack: boolean;
  /** Answer a snoop with the line's data (false: answer "not held", the home reads memory). */
  readonly supplies: boolean;
  /** The access cannot complete locally: send this request to the key's home and wait for its grant. */
  readonly request: 'read_miss' | 'write' | null;
  /** Tell the home the line is gone (after any write-back). */
  readonly notifyHome: boolean;
}

const t = (next: LineState, o: Partial<Omit<Transition, 'next'>> = {}): Transition =>
  Object.freeze({
    next,
    writeBack: o.writeBack ?? false,
    supplies: o.supplies ?? false,
    request: o.request ?? null,
    notifyHome: o.notifyHome ?? false,
  });

/** The whole protocol at a node, as one table so each cell can be read (and tested) on its own. */
const TABLE: Readonly<Record<LineState, Readonly<Record<CacheEvent, Transition>>>> = {
  M: {
    read: t('M'),
    write: t('M'),
    evict: t('I', { writeBack: true, notifyHome: true }),
    // M is the only copy that is newer than memory: it goes to memory before a peer may share it.
    snoop_read: t('S', { writeBack: true, supplies: true }),
    invalidate: t('I', { writeBack: true }),
  },
  E: {
    read: t('E'),
    // E means nobody else holds the line, so the upgrade needs no message (that is what E is for).
    write: t('M'),
    evict: t('I', { notifyHome: true }),
    snoop_read: t('S', { supplies: true }),
    invalidate: t('I'),
  },
  S: {
    read: t('S'),
    // Other copies may exist: only the home knows which, so the write goes through it.
    write: t('S', { request: 'write' }),
    evict: t('I', { notifyHome: true }),
    snoop_read: t('S', { supplies: true }),
    invalidate: t('I'),
  },
  I: {
    read: t('I', { request: 'read_miss' }),
    write: t('I', { request: 'write' }),
    evict: t('I'),
    // A stale directory listing: the line was dropped (and written back) before the message came.
    snoop_read: t('I'),
    invalidate: t('I'),
  },
};

/** The transition of a line in `state` on `event`. */
export function transition(state: LineState, event: CacheEvent): Transition {
  return TABLE[state][event];
}

/** True for states whose data a local read may return without asking anyone. */
export function isValid(state: LineState): boolean {
  return state !== 'I';
}
