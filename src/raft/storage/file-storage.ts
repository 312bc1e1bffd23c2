// Durable Raft storage for one node: a segmented write-ahead log plus snapshot files in one directory.
//
// On-disk format (integers little-endian):
//   wal-<16-digit seq>.log   WAL segments, append-only; seq grows by one per segment. Records:
//       u32 payload length | u32 crc32(payload) | payload (UTF-8 JSON), one of
//       {k:'seg', seq, hs, last}  first record of every segment: its seq, the hard state and last index then
//       {k:'ents', i, e, hs}      entries i, i+1, ... as e = [term, 0 noop | 1 command, command][];
//                                 replaces the stored suffix from i; hs: the hard state saved with them or null
//       {k:'hs', hs}              a hard state saved without entries
//       {k:'reset', i}            every entry was dropped, the log now ends at i (snapshot from the leader)
//   snap-<16-digit index>.json   line 1 {"crc32":n,"length":n}, then `length` bytes of JSON
//                                {snapshot, resetAt}; written to a .tmp file, fsynced, renamed.
//
// Where the hard state lives: in the WAL, and at the start of every segment. A separate file replaced
// atomically would cost a write, an fsync, a rename and a directory fsync on every term or vote
// change, on top of the WAL's own fsync; in the WAL it rides along in the save's single fdatasync.
// Compaction only ever deletes a prefix of segments and never the active one, so the oldest segment
// kept starts with a copy of the hard state and every later change follows it.
import { writeSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { Entry, HardState, Json, PersistedState, RaftStorage, Snapshot } from '../types.js';
import { checkBatch, checkRestorable, emptyHardState, LogModel } from './memory-storage.js';

const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
const RECORD_HEADER_BYTES = 8;
const SEGMENT_NAME = /^wal-(\d{16})\.log$/;
const SNAPSHOT_NAME = /^snap-(\d{16})\.json$/;
const TEMP_SUFFIX = '.tmp';
const SNAPSHOTS_KEPT = 2;

type EncodedEntry = [term: number, kind: 0 | 1, command: Json];

type WalRecord =
  | { k: 'seg'; seq: number; hs: HardState; last: number }
  | { k: 'ents'; i: number; e: EncodedEntry[]; hs: HardState | null }
  | { k: 'hs'; hs: HardState }
  | { k: 'reset'; i: number };

/** Where in the WAL a snapshot received from the leader resets the log (see saveSnapshot). */
interface ResetMarker {
  seq: number;
  offset: number;
}

interface SnapshotFile {
  snapshot: Snapshot;
  resetAt: ResetMarker | null;
}

interface SegmentInfo {
  seq: number;
  /** Highest index any record in the segment wrote; the segment may go once a snapshot covers it. */
  maxIndex: number;
}

interface ActiveSegment {
  seq: number;
  fh: FileHandle;
  size: number;
  /** Written since the last fdatasync. */
  dirty: boolean;
}

interface ScannedRecord {
  offset: number;
  record: WalRecord;
}

interface SegmentScan {
  records: ScannedRecord[];
  /** Bytes up to the end of the last good record; less than the file size after a torn write. */
  validBytes: number;
  fileBytes: number;
}

export interface FileStorageOptions {
  /** Rotate to a new segment once the active one reaches this size (default 64 MiB). */
  segmentBytes?: number;
}

/** The WAL holds something that cannot come from a torn write: refusing to start beats serving it. */
export class WalCorruptionError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    reason: string,
  ) {
    super(`raft WAL corrupt: ${file} at byte ${offset}: ${reason}`);
    this.name = 'WalCorruptionError';
  }
}

/**
 * A write found no space left on the device. It was undone (the WAL still ends with its last whole
 * record, a snapshot's temp file is gone), so unlike other write errors this one leaves the storage
 * usable: the same call may be retried once there is space.
 */
export class StorageFullError extends Error {
  constructor(dir: string, cause: unknown) {
    super(`raft storage ${dir}: no space left on device; the write was undone`, { cause });
    this.name = 'StorageFullError';
  }
}

export class FileStorage implements RaftStorage {
  private readonly dir: string;
  private readonly segmentBytes: number;
  private chain: Promise<unknown> = Promise.resolve();
  /** Oldest first; the last one is the active segment. */
  private segments: SegmentInfo[] = [];
  private active: ActiveSegment | null = null;
  private hardState = emptyHardState();
  private lastIndex = 0;
  private snapshotIndex = 0;
  private failure: Error | null = null;
  private syncs = 0;
  private written = 0;

  constructor(dir: string, opts: FileStorageOptions = {}) {
    this.dir = dir;
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    if (!(this.segmentBytes > 0)) throw new Error(`FileStorage: segmentBytes must be positive`);
  }

  /** fsync/fdatasync calls so far, on files and on the directory. */
  get fsyncCount(): number {
    return this.syncs;
  }

  /** Bytes written to WAL segments and snapshot files so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Opens (creating the directory if needed), repairs a torn WAL tail and returns what was stored. */
  load(): Promise<PersistedState> {
    return this.serialize(() => this.recover());
  }

  save(hardState: HardState | null, entries: Entry[], sync: boolean): Promise<void> {
    return this.serialize(async () => {
      const seg = this.usable();
      checkBatch(entries, this.lastIndex, this.snapshotIndex);
      await this.guard(() => this.append(seg, hardState, entries, sync));
    });
  }

  saveSnapshot(snapshot: Snapshot, replaceLog: boolean): Promise<void> {
    return this.serialize(async () => {
      const seg = this.usable();
      await this.guard(() => this.storeSnapshot(seg, snapshot, replaceLog));
    });
  }

  /** Deletes whole segments whose entries are all at or below both `upTo` and the stored snapshot. */
  compact(upTo: number): Promise<void> {
    return this.serialize(async () => {
      this.usable();
      // Not guarded: a failed unlink leaves the bookkeeping as it was and the WAL intact.
      await this.deleteSegments(Math.min(upTo, this.snapshotIndex));
    });
  }

  /** Waits for queued operations, syncs what is unsynced and closes the active segment. */
  close(): Promise<void> {
    return this.serialize(() => this.closeActive());
  }

  // The driver never overlaps calls, but a promise chain makes overlapping ones safe anyway: each
  // operation starts when the previous one settled, whatever its outcome.
  private serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.chain.then(op);
    this.chain = run.catch(() => undefined);
    return run;
  }

  // After a failed write or fsync the kernel may have dropped the dirty pages, and the file may end in
  // a partial record: the only safe continuation is a restart that re-reads the disk.
  // Only a StorageFullError, thrown after its write was undone, leaves the storage usable.
  private async guard(op: () => Promise<void>): Promise<void> {
    try {
      await op();
    } catch (err) {
      if (!(err instanceof StorageFullError))
        this.failure = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
  }

  private checkHealthy(): void {
    if (this.failure !== null) {
      throw new Error(`FileStorage ${this.dir} failed earlier; reopen it`, { cause: this.failure });
    }
  }

  /** The active segment, when the storage is loaded and has not failed. */
  private usable(): ActiveSegment {
    this.checkHealthy();
    if (this.active === null) throw new Error(`FileStorage ${this.dir} is not open: call load() first`);
    return this.active;
  }

  private async append(
    seg: ActiveSegment,
    hardState: HardState | null,
    entries: Entry[],
    sync: boolean,
  ): Promise<void> {
    const head = entries[0];
    if (head !== undefined) {
      await this.writeOrUndo(seg, { k: 'ents', i: head.index, e: entries.map(encodeEntry), hs: hardState });
      this.lastIndex = head.index + entries.length - 1;
      this.noteIndex(this.lastIndex);
    } else if (hardState !== null) {
      await this.writeOrUndo(seg, { k: 'hs', hs: hardState });
    }
    if (hardState !== null) this.hardState = { ...hardState };
    if (sync && seg.dirty) await this.datasync(seg);
    if (seg.size >= this.segmentBytes) await this.rotate(seg);
  }

  /**
   * The one record of a save. When the device is full, whatever part of it reached the file is cut off
   * again (truncating needs no space): the WAL ends with its last whole record, nothing of this save
   * counts, and a retry writes it at the same place. Other errors stay fatal (see guard).
   */
  private async writeOrUndo(seg: ActiveSegment, record: WalRecord): Promise<void> {
    try {
      this.writeRecord(seg, record);
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      await seg.fh.truncate(seg.size);
      throw new StorageFullError(this.dir, err);
    }
  }

  private writeRecord(seg: ActiveSegment, record: WalRecord): void {
    const buf = encodeRecord(record);
    writeAllNow(seg.fh, buf, seg.size);
    seg.size += buf.length;
    seg.dirty = true;
    this.written += buf.length;
  }

  private noteIndex(index: number): void {
    const info = this.segments.at(-1);
    if (info !== undefined) info.maxIndex = Math.max(info.maxIndex, index);
  }

  private async datasync(seg: ActiveSegment): Promise<void> {
    await seg.fh.datasync();
    this.syncs++;
    seg.dirty = false;
  }

  private async rotate(old: ActiveSegment): Promise<void> {
    // A synced write to the next segment must never outlive unsynced writes to this one: that would
    // leave a hole in the middle of the log after a crash.
    if (old.dirty) await this.datasync(old);
    this.active = null;
    await old.fh.close();
    await this.startSegment(old.seq + 1);
  }

  /** Creates segment `seq` holding just its header, durably (file and directory entry), and makes it active. */
  private async startSegment(seq: number): Promise<void> {
    const fh = await open(this.segmentPath(seq), 'wx');
    const seg: ActiveSegment = { seq, fh, size: 0, dirty: false };
    try {
      this.writeRecord(seg, { k: 'seg', seq, hs: this.hardState, last: this.lastIndex });
      // Older segments may be deleted as soon as this one exists, so its copy of the hard state must
      // already be on disk.
      await this.datasync(seg);
      await this.syncDir();
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.segments.push({ seq, maxIndex: 0 });
    this.active = seg;
  }

  private async syncDir(): Promise<void> {
    const fh = await open(this.dir, 'r');
    try {
      await fh.sync();
      this.syncs++;
    } finally {
      await fh.close();
    }
  }

  /**
   * A snapshot from the leader (`replaceLog`) must drop the stored log, and the snapshot file and the
   * WAL cannot change in one atomic step. So the snapshot file is made durable first and names the WAL
   * position where its reset record goes; the record follows. If a crash falls in between, load()
   * applies the reset at that position anyway and writes the missing record. Syncing the WAL before
   * taking the position keeps a torn-tail repair from ever cutting below it.
   */
  private async storeSnapshot(seg: ActiveSegment, snapshot: Snapshot, replaceLog: boolean): Promise<void> {
    let resetAt: ResetMarker | null = null;
    if (replaceLog) {
      if (seg.dirty) await this.datasync(seg);
      resetAt = { seq: seg.seq, offset: seg.size };
    }
    await this.writeSnapshotFile({ snapshot, resetAt });
    this.snapshotIndex = Math.max(this.snapshotIndex, snapshot.meta.index);
    if (replaceLog) await this.writeReset(seg, snapshot.meta.index);
    await this.pruneSnapshots();
  }

  private async writeReset(seg: ActiveSegment, index: number): Promise<void> {
    this.writeRecord(seg, { k: 'reset', i: index });
    await this.datasync(seg);
    this.lastIndex = index;
    this.noteIndex(index);
    if (seg.size >= this.segmentBytes) await this.rotate(seg);
  }

  private async writeSnapshotFile(file: SnapshotFile): Promise<void> {
    const name = snapshotName(file.snapshot.meta.index);
    const temp = join(this.dir, name + TEMP_SUFFIX);
    const buf = encodeSnapshotFile(file);
    try {
      const fh = await open(temp, 'w');
      try {
        await writeAll(fh, buf, 0);
        await fh.datasync();
        this.syncs++;
      } finally {
        await fh.close();
      }
    } catch (err) {
      // Nothing refers to the temp file yet: without space, dropping it undoes the whole attempt.
      if (!isNoSpace(err)) throw err;
      await unlinkIfPresent(temp);
      throw new StorageFullError(this.dir, err);
    }
    this.written += buf.length;
    await rename(temp, join(this.dir, name));
    await this.syncDir();
  }

  /** Keeps the newest snapshots; an older one is a fallback should the newest ever fail its crc. */
  private async pruneSnapshots(): Promise<void> {
    const indexes = numberedNames(await readdir(this.dir), SNAPSHOT_NAME).sort((a, b) => b - a);
    for (const index of indexes.slice(SNAPSHOTS_KEPT))
      await unlinkIfPresent(join(this.dir, snapshotName(index)));
  }

  // No directory fsync after the unlinks: if some deletions are lost in a crash, load() recognises
  // the survivors by the gap in sequence numbers they leave, and deletes them again.
  private async deleteSegments(limit: number): Promise<void> {
    for (;;) {
      const oldest = this.segments[0];
      if (oldest === undefined || this.segments.length === 1 || oldest.maxIndex > limit) return;
      await unlinkIfPresent(this.segmentPath(oldest.seq));
      this.segments.shift();
    }
  }

  private async closeActive(): Promise<void> {
    const seg = this.active;
    if (seg === null) return;
    this.active = null;
    try {
      if (seg.dirty && this.failure === null) await this.datasync(seg);
    } finally {
      await seg.fh.close();
    }
  }

  private async recover(): Promise<PersistedState> {
    this.checkHealthy();
    await this.closeActive();
    await mkdir(this.dir, { recursive: true });
    const names = await readdir(this.dir);
    for (const name of names) if (name.endsWith(TEMP_SUFFIX)) await unlinkIfPresent(join(this.dir, name));
    const stored = await this.readNewestSnapshot(names);
    const snapshotIndex = stored?.snapshot.meta.index ?? 0;
    const { live, leftovers } = splitLeftovers(numberedNames(names, SEGMENT_NAME).sort((a, b) => a - b));
    const replay = new Replay(snapshotIndex, stored?.resetAt ?? null);
    for (const [n, seq] of live.entries()) {
      const file = this.segmentPath(seq);
      replay.segment(seq, file, await readFile(file), n === live.length - 1);
    }
    const entries = replay.log.entriesAfter(snapshotIndex);
    checkRestorable(entries, snapshotIndex, `FileStorage ${this.dir}`);
    this.hardState = replay.hardState;
    this.lastIndex = replay.log.lastIndex;
    this.snapshotIndex = snapshotIndex;
    this.segments = replay.segments;
    await this.openTail(replay);
    for (const seq of leftovers) await unlinkIfPresent(this.segmentPath(seq));
    return { hardState: { ...this.hardState }, snapshot: stored?.snapshot ?? null, entries };
  }

  /** Makes the last segment the active one: cut a torn tail, rebuild a lost header, finish a reset. */
  private async openTail(replay: Replay): Promise<void> {
    const tail = replay.tail;
    if (tail === null || tail.scan.records.length === 0) {
      // No segment yet, or one whose header never reached the disk (so it holds nothing else).
      const seq = tail?.seq ?? 1;
      if (tail !== null) {
        await unlinkIfPresent(this.segmentPath(seq));
        this.segments.pop();
      }
      await this.startSegment(seq);
    } else {
      const fh = await open(this.segmentPath(tail.seq), 'r+');
      const seg: ActiveSegment = { seq: tail.seq, fh, size: tail.scan.validBytes, dirty: false };
      this.active = seg;
      if (tail.scan.validBytes < tail.scan.fileBytes) {
        await fh.truncate(tail.scan.validBytes);
        await this.datasync(seg);
      }
    }
    if (replay.resetPending !== null) await this.writeReset(this.usable(), replay.resetPending);
  }

  private async readNewestSnapshot(names: string[]): Promise<SnapshotFile | null> {
    const indexes = numberedNames(names, SNAPSHOT_NAME).sort((a, b) => b - a);
    for (const index of indexes) {
      const file = decodeSnapshotFile(await readFile(join(this.dir, snapshotName(index))));
      // A snapshot failing its checks is skipped for the previous one; the WAL replay then proves
      // (or refutes, loudly) that the log still connects to it.
      if (file !== null && file.snapshot.meta.index === index) return file;
    }
    return null;
  }

  private segmentPath(seq: number): string {
    return join(this.dir, `wal-${pad16(seq)}.log`);
  }
}

/** Folds WAL segments, oldest first, into the log, the hard state and the per-segment bookkeeping. */
class Replay {
  readonly log: LogModel;
  hardState = emptyHardState();
  readonly segments: SegmentInfo[] = [];
  tail: { seq: number; scan: SegmentScan } | null = null;
  /** Index of a reset the newest snapshot asked for but whose WAL record is missing. */
  resetPending: number | null = null;
  private readonly snapshotIndex: number;
  private marker: ResetMarker | null;

  constructor(snapshotIndex: number, marker: ResetMarker | null) {
    this.snapshotIndex = snapshotIndex;
    this.log = new LogModel(snapshotIndex);
    this.marker = marker;
  }

  segment(seq: number, file: string, buf: Buffer, isLast: boolean): void {
    const scan = scanSegment(buf, file, isLast);
    checkHeader(scan, seq, file, isLast);
    // The segment holding a reset marker was compacted away: the reset precedes everything left.
    if (this.marker !== null && this.marker.seq < seq) this.marker = null;
    const info: SegmentInfo = { seq, maxIndex: 0 };
    for (const { offset, record } of scan.records) {
      this.checkMarker(file, seq, offset, record);
      info.maxIndex = Math.max(info.maxIndex, this.apply(record));
    }
    if (this.marker?.seq === seq) this.finishMarker(file, scan, isLast);
    if (isLast) this.tail = { seq, scan };
    this.segments.push(info);
    if (isLast && this.marker !== null) {
      throw new WalCorruptionError(
        file,
        scan.validBytes,
        `snapshot expects a log reset in segment ${this.marker.seq}`,
      );
    }
  }

  /** Applies one record; returns the highest log index it wrote. */
  private apply(record: WalRecord): number {
    switch (record.k) {
      case 'seg':
      case 'hs':
        this.hardState = record.hs;
        return 0;
      case 'ents':
        this.log.append(record.e.map((e, n) => decodeEntry(e, record.i + n)));
        if (record.hs !== null) this.hardState = record.hs;
        return record.i + record.e.length - 1;
      case 'reset':
        this.log.reset(record.i);
        return record.i;
    }
  }

  /** The first record at or past the snapshot's marker must be the reset record it announced. */
  private checkMarker(file: string, seq: number, offset: number, record: WalRecord): void {
    const marker = this.marker;
    if (marker?.seq !== seq || offset < marker.offset) return;
    if (offset !== marker.offset || record.k !== 'reset' || record.i !== this.snapshotIndex) {
      throw new WalCorruptionError(
        file,
        offset,
        `expected the log reset to index ${this.snapshotIndex} here`,
      );
    }
    this.marker = null;
  }

  private finishMarker(file: string, scan: SegmentScan, isLast: boolean): void {
    if (!isLast || scan.validBytes !== this.marker?.offset) {
      throw new WalCorruptionError(
        file,
        scan.validBytes,
        `log reset to index ${this.snapshotIndex} is missing`,
      );
    }
    // The crash came between the snapshot and its reset record: do the reset, then write the record.
    this.log.reset(this.snapshotIndex);
    this.resetPending = this.snapshotIndex;
    this.marker = null;
  }
}

function checkHeader(scan: SegmentScan, seq: number, file: string, isLast: boolean): void {
  const first = scan.records[0];
  if (first === undefined) {
    // Only the newest segment may lack its header: a crash right after it was created.
    if (!isLast) throw new WalCorruptionError(file, 0, 'segment has no header record');
    return;
  }
  if (first.record.k !== 'seg' || first.record.seq !== seq) {
    throw new WalCorruptionError(file, 0, `first record is not the header of segment ${seq}`);
  }
}

/**
 * Splits a segment file into records. A bad record is a torn write only when it is at the end of the
 * newest segment; anywhere else it means damage and throws. "At the end" is checked by searching the
 * rest of the file for any valid record, since a flipped bit in a length field would otherwise pass
 * for a torn tail and silently cut off good records.
 */
function scanSegment(buf: Buffer, file: string, isLast: boolean): SegmentScan {
  const records: ScannedRecord[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const problem = frameProblem(buf, offset);
    if (problem !== null) {
      if (!isLast) throw new WalCorruptionError(file, offset, problem);
      const next = findFrame(buf, offset + 1);
      if (next >= 0)
        throw new WalCorruptionError(file, offset, `${problem}, yet a valid record follows at byte ${next}`);
      return { records, validBytes: offset, fileBytes: buf.length };
    }
    const length = buf.readUInt32LE(offset);
    const payload = buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
    try {
      records.push({ offset, record: decodeRecord(payload) });
    } catch (err) {
      // Its crc matched, so this is not a torn write but a record we do not understand.
      throw new WalCorruptionError(file, offset, err instanceof Error ? err.message : String(err));
    }
    offset += RECORD_HEADER_BYTES + length;
  }
  return { records, validBytes: offset, fileBytes: buf.length };
}

/** Why the record framed at `offset` is unusable, or null when its crc checks out. */
function frameProblem(buf: Buffer, offset: number): string | null {
  if (buf.length - offset < RECORD_HEADER_BYTES) return 'partial record header';
  const length = buf.readUInt32LE(offset);
  // Never written (payloads are JSON objects), but what a crash leaves when the file grew before its
  // data reached the disk: zeros, whose crc32 is zero too.
  if (length === 0) return 'empty record';
  if (length > buf.length - offset - RECORD_HEADER_BYTES)
    return `record of ${length} bytes runs past the end`;
  const payload = buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
  if (crc32(payload) !== buf.readUInt32LE(offset + 4)) return 'crc mismatch';
  return null;
}

/**
 * Offset of the first position at or after `from` holding a record that passes its crc, or -1.
 * Payloads are JSON objects, so only frames whose payload starts with `{` and ends with `}` are
 * checksummed. JSON text bytes are all >= 0x20, so a length read from inside a payload is at least
 * 0x20202020 and cannot fit: the search does not find false records inside real ones.
 */
function findFrame(buf: Buffer, from: number): number {
  for (let p = from; p + RECORD_HEADER_BYTES < buf.length; p++) {
    const length = buf.readUInt32LE(p);
    const end = p + RECORD_HEADER_BYTES + length;
    if (length < 2 || end > buf.length) continue;
    if (buf[p + RECORD_HEADER_BYTES] !== 0x7b || buf[end - 1] !== 0x7d) continue;
    if (frameProblem(buf, p) === null) return p;
  }
  return -1;
}

function encodeRecord(record: WalRecord): Buffer {
  const payload = Buffer.from(JSON.stringify(record), 'utf8');
  const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

function decodeRecord(payload: Buffer): WalRecord {
  const v: unknown = JSON.parse(payload.toString('utf8'));
  if (!isObject(v)) throw new Error('record is not a JSON object');
  switch (v.k) {
    case 'seg':
      if (isCount(v.seq) && isHardState(v.hs) && isCount(v.last))
        return { k: 'seg', seq: v.seq, hs: v.hs, last: v.last };
      break;
    case 'ents':
      if (isCount(v.i) && v.i >= 1 && isList(v.e) && v.e.length > 0 && v.e.every(isEncodedEntry)) {
        if (v.hs === null || isHardState(v.hs)) return { k: 'ents', i: v.i, e: v.e, hs: v.hs };
      }
      break;
    case 'hs':
      if (isHardState(v.hs)) return { k: 'hs', hs: v.hs };
      break;
    case 'reset':
      if (isCount(v.i)) return { k: 'reset', i: v.i };
      break;
  }
  throw new Error(`malformed record of kind ${JSON.stringify(v.k)}`);
}

// Entries of a batch are stored without their (implied, contiguous) indexes and with a numeric kind:
// most of a WAL is entries, and field names would otherwise dominate small commands.
function encodeEntry(e: Entry): EncodedEntry {
  return [e.term, e.kind === 'noop' ? 0 : 1, e.command];
}

function decodeEntry([term, kind, command]: EncodedEntry, index: number): Entry {
  return { index, term, kind: kind === 0 ? 'noop' : 'command', command };
}

function encodeSnapshotFile(file: SnapshotFile): Buffer {
  const body = Buffer.from(JSON.stringify(file), 'utf8');
  const head = Buffer.from(`${JSON.stringify({ crc32: crc32(body), length: body.length })}\n`, 'utf8');
  return Buffer.concat([head, body]);
}

/** The snapshot file's contents, or null when it is damaged in any way. */
function decodeSnapshotFile(buf: Buffer): SnapshotFile | null {
  const newline = buf.indexOf(0x0a);
  if (newline < 0) return null;
  try {
    const head: unknown = JSON.parse(buf.subarray(0, newline).toString('utf8'));
    const body = buf.subarray(newline + 1);
    if (!isObject(head) || head.length !== body.length || head.crc32 !== crc32(body)) return null;
    const v: unknown = JSON.parse(body.toString('utf8'));
    if (!isObject(v) || !isSnapshot(v.snapshot) || !(v.resetAt === null || isResetMarker(v.resetAt)))
      return null;
    return { snapshot: v.snapshot, resetAt: v.resetAt };
  } catch {
    return null;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isList(v: unknown): v is unknown[] {
  return Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function isHardState(v: unknown): v is HardState {
  return (
    isObject(v) && isCount(v.term) && isCount(v.commit) && (v.vote === null || typeof v.vote === 'string')
  );
}

function isEncodedEntry(v: unknown): v is EncodedEntry {
  return isList(v) && v.length === 3 && isCount(v[0]) && (v[1] === 0 || v[1] === 1);
}

function isSnapshot(v: unknown): v is Snapshot {
  if (!isObject(v) || !('data' in v) || !isObject(v.meta)) return false;
  const { index, term, voters } = v.meta;
  return isCount(index) && isCount(term) && isList(voters) && voters.every((x) => typeof x === 'string');
}

function isResetMarker(v: unknown): v is ResetMarker {
  return isObject(v) && isCount(v.seq) && isCount(v.offset);
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten === 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/**
 * A WAL record is written on the calling thread: it lands in the page cache in microseconds, while a
 * trip through libuv's thread pool and back through a busy event loop cost a leader about 0.3 ms
 * per save, on the commit path of every command. Only the fdatasync, which waits for the device,
 * goes to the pool.
 */
function writeAllNow(fh: FileHandle, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) {
    const bytesWritten = writeSync(fh.fd, buf, done, buf.length - done, position + done);
    if (bytesWritten === 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function numberedNames(names: string[], pattern: RegExp): number[] {
  const out: number[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (m?.[1] !== undefined) out.push(Number(m[1]));
  }
  return out;
}

/**
 * Compaction deletes segments oldest first, but without a directory fsync a crash may keep any subset
 * of those deletions; nothing else removes segments. So segments before the last gap in sequence
 * numbers are not replayed: after an interrupted compaction they only hold entries the snapshot
 * covers, and if a segment was lost some other way, replaying what came before it would skip the
 * truncations it recorded and could serve stale entries. Starting after the gap turns such a loss
 * into missing entries, which load() reports.
 */
function splitLeftovers(seqs: number[]): { live: number[]; leftovers: number[] } {
  let start = 0;
  for (let n = 1; n < seqs.length; n++) if (seqs[n] !== (seqs[n - 1] ?? 0) + 1) start = n;
  return { live: seqs.slice(start), leftovers: seqs.slice(0, start) };
}

function snapshotName(index: number): string {
  return `snap-${pad16(index)}.json`;
}

function pad16(n: number): string {
  return String(n).padStart(16, '0');
}
