/**
 * The registry build cache's format and options, as pure functions (ADR 0018): a cache is an OCI image index,
 * tagged in a repository, whose descriptors point at step images (pushed to the same repository) and carry the
 * step's cache key as the annotation {@link CACHE_KEY_ANNOTATION}. No I/O here.
 */
import { TerminalError } from '../../errors.js';
import { MediaType, isManifestMediaType } from '../../oci/media-types.js';
import { parseReference, withTag, type ImageReference } from '../../oci/reference.js';
import type { Descriptor, ImageIndex, ManifestDocument } from '../../oci/types.js';
import type { ImageValue } from '../../image/mutate.js';

/** Annotation of each index descriptor: the step cache key (`cache-key.ts`) whose result it is. */
export const CACHE_KEY_ANNOTATION = 'io.strata.build-cache.key';
/** Annotation of the index itself: the format version; an index without it is not a strata build cache. */
export const CACHE_VERSION_ANNOTATION = 'io.strata.build-cache.version';
/** The format version written and understood. */
export const CACHE_VERSION = '1';
/** The tag used when a cache reference names a repository only (`spec.cache.repository`, `--cache-to repo`). */
export const DEFAULT_CACHE_TAG = 'buildcache';
/** Entries one index may hold; more is refused as hostile (a 4 MiB manifest fits about 12 000). */
export const MAX_CACHE_ENTRIES = 16_384;

/** Which steps `--cache-to` exports: the target stage's (BuildKit's mode=min) or every stage's (mode=max). */
export type CacheExportMode = 'min' | 'max';

/** One parsed `--cache-to`. */
export interface CacheExportSpec {
  /** Where the index goes: always with a tag, never a digest. */
  readonly ref: ImageReference;
  readonly mode: CacheExportMode;
  /** Warn instead of failing the build when the export fails (BuildKit's `ignore-error=true`). */
  readonly ignoreError: boolean;
}

/** One parsed `--cache-from`. */
export interface CacheImportSpec {
  /** The index to read: a tag or a digest. */
  readonly ref: ImageReference;
}

/** A step to export: its key and the step image's manifest descriptor. */
export interface CacheIndexEntry {
  readonly key: string;
  readonly manifest: Descriptor;
}

function badFlag(flag: string, value: string, why: string): TerminalError {
  return new TerminalError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(value)}: ${why}`);
}

/** Splits `REF,k=v,…` (or BuildKit's `type=registry,ref=REF,…`) into the reference and the other fields. */
function splitFields(flag: string, value: string): { ref: string; fields: Map<string, string> } {
  let ref: string | undefined;
  const fields = new Map<string, string>();
  for (const part of value.split(',')) {
    const i = part.indexOf('=');
    if (i < 0) {
      if (ref !== undefined || part === '') throw badFlag(flag, value, 'give one reference');
      ref = part;
      continue;
    }
    const k = part.slice(0, i);
    const v = part.slice(i + 1);
    if (k === 'ref') {
      if (ref !== undefined) throw badFlag(flag, value, 'give one reference');
      ref = v;
    } else if (k === 'type') {
      if (v !== 'registry') throw badFlag(flag, value, `type=${v} is not supported (only registry)`);
    } else {
      if (fields.has(k)) throw badFlag(flag, value, `${k} is given twice`);
      fields.set(k, v);
    }
  }
  if (ref === undefined || ref === '') throw badFlag(flag, value, 'no reference');
  return { ref, fields };
}

/** A cache reference: a repository alone gets the tag {@link DEFAULT_CACHE_TAG}. */
export function cacheReference(input: string, flag: string, allowDigest: boolean): ImageReference {
  let ref: ImageReference;
  try {
    ref = parseReference(input, { defaultTag: false });
  } catch (err) {
    throw new TerminalError('INVALID_ARGUMENT', `${flag}: ${(err as Error).message}`, { cause: err });
  }
  if (ref.digest !== undefined && !allowDigest)
    throw badFlag(flag, input, 'the cache is written under a tag; give a tag, not a digest');
  if (ref.tag === undefined && ref.digest === undefined) return withTag(ref, DEFAULT_CACHE_TAG);
  return ref;
}

/** Parses a `--cache-to` value: `REF[,mode=min|max][,ignore-error=true|false]` (`type=registry,ref=REF` too). */
export function parseCacheTo(value: string): CacheExportSpec {
  const { ref, fields } = splitFields('--cache-to', value);
  let mode: CacheExportMode = 'min';
  let ignoreError = false;
  for (const [k, v] of fields) {
    if (k === 'mode') {
      if (v !== 'min' && v !== 'max') throw badFlag('--cache-to', value, `mode must be min or max, not ${v}`);
      mode = v;
    } else if (k === 'ignore-error') {
      if (v !== 'true' && v !== 'false')
        throw badFlag('--cache-to', value, `ignore-error must be true or false, not ${v}`);
      ignoreError = v === 'true';
    } else throw badFlag('--cache-to', value, `unknown option ${k} (known: mode, ignore-error)`);
  }
  return { ref: cacheReference(ref, '--cache-to', false), mode, ignoreError };
}

/** Parses a `--cache-from` value: `REF` or `type=registry,ref=REF`. */
export function parseCacheFrom(value: string): CacheImportSpec {
  const { ref, fields } = splitFields('--cache-from', value);
  const extra = [...fields.keys()];
  if (extra.length > 0) throw badFlag('--cache-from', value, `unknown option ${extra[0]}`);
  return { ref: cacheReference(ref, '--cache-from', true) };
}

/**
 * The index document of a cache: one descriptor per key, in the given order (the first entry of a repeated key
 * wins). Byte-stable: the same entries give the same digest, so an unchanged cache is not rewritten.
 */
export function cacheIndexBytes(entries: readonly CacheIndexEntry[]): Buffer {
  const seen = new Set<string>();
  const manifests: Descriptor[] = [];
  for (const e of entries) {
    if (seen.has(e.key)) continue;
    seen.add(e.key);
    manifests.push({
      mediaType: e.manifest.mediaType,
      digest: e.manifest.digest,
      size: e.manifest.size,
      annotations: { [CACHE_KEY_ANNOTATION]: e.key },
    });
  }
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests,
    annotations: { [CACHE_VERSION_ANNOTATION]: CACHE_VERSION },
  };
  return Buffer.from(JSON.stringify(index));
}

/**
 * Reads a fetched cache index: key → step image manifest descriptor. Throws MANIFEST_INVALID naming what is wrong
 * when the document is not a strata build cache of a known version (an image, a foreign index, a bad key).
 */
export function parseCacheIndex(doc: ManifestDocument, what: string): Map<string, Descriptor> {
  if (doc.kind !== 'index')
    throw new TerminalError('MANIFEST_INVALID', `${what}: an image manifest, not a build cache index`);
  const version = doc.index.annotations?.[CACHE_VERSION_ANNOTATION];
  if (version === undefined)
    throw new TerminalError(
      'MANIFEST_INVALID',
      `${what}: not a strata build cache (no ${CACHE_VERSION_ANNOTATION} annotation)`,
    );
  if (version !== CACHE_VERSION)
    throw new TerminalError('MANIFEST_INVALID', `${what}: build cache version ${version} is not supported`);
  if (doc.index.manifests.length > MAX_CACHE_ENTRIES)
    throw new TerminalError(
      'SIZE_LIMIT',
      `${what}: ${doc.index.manifests.length} cache entries exceed the limit of ${MAX_CACHE_ENTRIES}`,
    );
  const out = new Map<string, Descriptor>();
  doc.index.manifests.forEach((d, i) => {
    const key = d.annotations?.[CACHE_KEY_ANNOTATION];
    if (typeof key !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(key))
      throw new TerminalError('MANIFEST_INVALID', `${what}: manifests[${i}] has no valid cache key`);
    if (!isManifestMediaType(d.mediaType))
      throw new TerminalError('MANIFEST_INVALID', `${what}: manifests[${i}] is not an image manifest`);
    if (!out.has(key)) out.set(key, d);
  });
  return out;
}

/**
 * True when `step` is what one build step can make of `parent`: the parent's layers and diffIDs unchanged as a
 * prefix, at most one layer more, and exactly one history entry more after the parent's (equal) history. An
 * imported entry failing this is refused, so a broken or foreign cache cannot splice unrelated content in.
 */
export function isStepOf(parent: ImageValue, step: ImageValue): boolean {
  const pl = parent.layers;
  const sl = step.layers;
  if (sl.length !== pl.length && sl.length !== pl.length + 1) return false;
  if (!pl.every((l, i) => sl[i]!.digest === l.digest)) return false;
  const pd = parent.config.rootfs.diff_ids;
  const sd = step.config.rootfs.diff_ids;
  if (sd.length !== sl.length || !pd.every((d, i) => sd[i] === d)) return false;
  const ph = parent.config.history ?? [];
  const sh = step.config.history ?? [];
  if (sh.length !== ph.length + 1) return false;
  if (!ph.every((h, i) => JSON.stringify(h) === JSON.stringify(sh[i]))) return false;
  // A step that adds a layer records a non-empty history entry, and vice versa.
  return (sl.length === pl.length + 1) === (sh.at(-1)!.empty_layer !== true);
}
