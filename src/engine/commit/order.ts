/**
 * Pure rules that turn change records into layer tar entries: whiteout names, the entry order (sorted by path,
 * component by component; in each directory the opaque marker first, then `.wh.` whiteouts, then the other
 * entries) and the `SOURCE_DATE_EPOCH` clamp.
 */
import { TerminalError } from '../errors.js';
import { OPAQUE_MARKER, opaqueMarkerFor, WHITEOUT_PREFIX, whiteoutPathFor } from '../union/whiteouts.js';
import type { Change } from './types.js';

export { OPAQUE_MARKER, WHITEOUT_PREFIX };

/** One entry of a layer tar: its tar path (no trailing slash) and the change it comes from. */
export interface LayerEntry {
  readonly name: string;
  readonly change: Change;
  /** `name` split on `/`, precomputed for sorting. */
  readonly parts: readonly string[];
}

/** Sort rank of a path component in its directory: opaque marker, then whiteouts, then everything else. */
export function componentRank(c: string): number {
  if (c === OPAQUE_MARKER) return 0;
  if (c.startsWith(WHITEOUT_PREFIX)) return 1;
  return 2;
}

/** Compares two tar paths for layer order (a directory sorts right before its children). */
export function compareLayerPaths(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    const rx = componentRank(x);
    const ry = componentRank(y);
    if (rx !== ry) return rx - ry;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

function invalidPath(path: string, why: string): TerminalError {
  return new TerminalError('INVALID_ARGUMENT', `layer entry ${JSON.stringify(path)}: ${why}`);
}

/** Checks a change path: relative, `/`-separated, no empty, `.` or `..` components. */
export function validateChangePath(path: string): string[] {
  if (path === '' || path.startsWith('/') || path.endsWith('/'))
    throw invalidPath(path, 'not a clean relative path');
  const parts = path.split('/');
  for (const p of parts)
    if (p === '' || p === '.' || p === '..') throw invalidPath(path, 'not a clean relative path');
  return parts;
}

/** The tar path a change is written at: the path itself, `DIR/.wh.NAME` for a delete, `PATH/.wh..wh..opq` for opaque. */
export function entryName(change: Change): string {
  const parts = validateChangePath(change.path);
  const base = parts[parts.length - 1]!;
  if (change.kind === 'delete') return whiteoutPathFor(change.path);
  if (change.kind === 'opaque') return opaqueMarkerFor(change.path);
  if (base.startsWith(WHITEOUT_PREFIX))
    throw invalidPath(change.path, `names starting with ${WHITEOUT_PREFIX} are reserved for whiteouts`);
  return change.path;
}

/**
 * Turns change records into layer entries in write order. Throws INVALID_ARGUMENT on bad paths and on two changes
 * writing the same tar path (a layer must not hold duplicates).
 */
export function layerEntries(changes: Iterable<Change>): LayerEntry[] {
  const entries: LayerEntry[] = [];
  for (const change of changes) {
    const name = entryName(change);
    entries.push({ name, change, parts: name.split('/') });
  }
  entries.sort((a, b) => compareLayerPaths(a.parts, b.parts));
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.name === entries[i - 1]!.name)
      throw invalidPath(entries[i]!.name, 'appears twice in one layer');
  }
  return entries;
}

/** A modification time clamped to `SOURCE_DATE_EPOCH` (seconds) when one is given: `min(mtime, epoch)`. */
export function clampMtime(mtimeSec: number, sourceDateEpoch: number | undefined): number {
  return sourceDateEpoch !== undefined && mtimeSec > sourceDateEpoch ? sourceDateEpoch : mtimeSec;
}
