import type { Lsn } from '../lsn.js';

/**
 * Segment file names, exactly as PostgreSQL names WAL files: 24 uppercase hex digits,
 * `TTTTTTTT` timeline, then the segment number split into `XXXXXXXX` (segments per 4 GiB
 * "log id") and `YYYYYYYY` (segment within it), e.g. `000000010000000000000003`.
 */

/** Smallest allowed segment size: 64 KiB. */
export const MIN_SEGMENT_SIZE = 64 * 1024;
/** Largest allowed segment size: 1 GiB. */
export const MAX_SEGMENT_SIZE = 1024 * 1024 * 1024;
/** Default segment size: 16 MiB, as PostgreSQL's default `wal_segment_size`. */
export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

const TWO_32 = 0x1_0000_0000;
const NAME = /^[0-9A-F]{24}$/;

/** Every valid segment size: the powers of two from 64 KiB to 1 GiB. */
export const SEGMENT_SIZES: readonly number[] = Object.freeze(
  Array.from({ length: 15 }, (_, i) => MIN_SEGMENT_SIZE * 2 ** i),
);

/** True when `size` is a power of two from 64 KiB to 1 GiB. */
export function isValidSegmentSize(size: number): boolean {
  return SEGMENT_SIZES.includes(size);
}

function hex8(value: number): string {
  return value.toString(16).toUpperCase().padStart(8, '0');
}

/** The file name of segment `segno` on `timeline` for segments of `segmentSize` bytes. */
export function segmentFileName(timeline: number, segno: number, segmentSize: number): string {
  const perLogId = TWO_32 / segmentSize;
  return hex8(timeline) + hex8(Math.floor(segno / perLogId)) + hex8(segno % perLogId);
}

/** A parsed segment file name. */
export interface SegmentName {
  /** The timeline that wrote the segment (the name's first 8 hex digits). */
  readonly timeline: number;
  /** The segment's number: its first LSN divided by the segment size. */
  readonly segno: number;
}

/**
 * Parses a segment file name; `null` for any other file name, including names whose low
 * part is out of range for this segment size (such a file was not written with this size).
 */
export function parseSegmentFileName(name: string, segmentSize: number): SegmentName | null {
  if (!NAME.test(name)) return null;
  const timeline = Number.parseInt(name.slice(0, 8), 16);
  const logId = Number.parseInt(name.slice(8, 16), 16);
  const seg = Number.parseInt(name.slice(16, 24), 16);
  const perLogId = TWO_32 / segmentSize;
  if (timeline === 0 || seg >= perLogId) return null;
  const segno = logId * perLogId + seg;
  if (!Number.isSafeInteger(segno * segmentSize)) return null;
  return { timeline, segno };
}

/** The segment number holding byte position `lsn`. */
export function segmentOf(lsn: Lsn, segmentSize: number): number {
  return Math.floor(lsn / segmentSize);
}

/** The LSN at which segment `segno` starts. */
export function segmentStart(segno: number, segmentSize: number): Lsn {
  return segno * segmentSize;
}

/** A WAL file that goes to an archive: a segment, the `.partial` copy of a timeline's last segment, or a timeline history file. */
export type WalFileName =
  | { readonly kind: 'segment' | 'partial'; readonly timeline: number; readonly segno: number }
  | { readonly kind: 'history'; readonly timeline: number };

const HISTORY_NAME = /^([0-9A-F]{8})\.history$/;

/** Parses the name of a file an archive holds (see {@link WalFileName}); `null` for any other name. */
export function parseWalFileName(name: string, segmentSize: number): WalFileName | null {
  const history = HISTORY_NAME.exec(name);
  if (history !== null) {
    const timeline = Number.parseInt(history[1] as string, 16);
    return timeline === 0 ? null : { kind: 'history', timeline };
  }
  const partial = name.endsWith('.partial');
  const segment = parseSegmentFileName(partial ? name.slice(0, -'.partial'.length) : name, segmentSize);
  return segment === null ? null : { kind: partial ? 'partial' : 'segment', ...segment };
}
