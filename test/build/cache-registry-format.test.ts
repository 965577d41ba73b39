/** The registry build cache's pure parts: flag parsing, the index format, and the step-of-parent check. */
import { describe, expect, it } from 'vitest';
import {
  CACHE_KEY_ANNOTATION,
  CACHE_VERSION_ANNOTATION,
  cacheIndexBytes,
  isStepOf,
  parseCacheFrom,
  parseCacheIndex,
  parseCacheTo,
} from '../../src/engine/build/executor/registry-cache-format.js';
import { appendLayer, emptyImage } from '../../src/engine/image/mutate.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { parseManifest } from '../../src/engine/oci/types.js';
import { formatReference } from '../../src/engine/oci/reference.js';
import { codeOf } from '../support/outcomes.js';

const key = (n: number): string => digestOf(Buffer.from(`key ${n}`));
const dig = (s: string): Digest => digestOf(Buffer.from(s));

describe('--cache-to / --cache-from values', () => {
  it.each([
    ['localhost:5000/cache', 'localhost:5000/cache:buildcache', 'min', false],
    ['localhost:5000/cache:v1,mode=max', 'localhost:5000/cache:v1', 'max', false],
    [
      'type=registry,ref=localhost:5000/c,mode=min,ignore-error=true',
      'localhost:5000/c:buildcache',
      'min',
      true,
    ],
  ])('%s', (value, ref, mode, ignoreError) => {
    const spec = parseCacheTo(value);
    expect(formatReference(spec.ref)).toBe(ref);
    expect(spec.mode).toBe(mode);
    expect(spec.ignoreError).toBe(ignoreError);
  });

  it.each([
    'localhost:5000/c,mode=all',
    'localhost:5000/c,compression=zstd',
    'type=local,dest=/tmp/x',
    `localhost:5000/c@${'sha256:' + 'a'.repeat(64)}`,
    'mode=max',
    'a,b',
    'Not/A/Ref',
  ])('refuses %s', (value) => {
    expect(codeOf(() => parseCacheTo(value))).toBe('INVALID_ARGUMENT');
  });

  it('cache-from takes a tag, a digest, or a repository (its buildcache tag)', () => {
    expect(formatReference(parseCacheFrom('localhost:5000/c').ref)).toBe('localhost:5000/c:buildcache');
    const pinned = `localhost:5000/c@sha256:${'b'.repeat(64)}`;
    expect(formatReference(parseCacheFrom(pinned).ref)).toBe(pinned);
    expect(codeOf(() => parseCacheFrom('localhost:5000/c,mode=max'))).toBe('INVALID_ARGUMENT');
  });
});

describe('cache index', () => {
  const m1 = { mediaType: MediaType.OciManifest, digest: dig('m1'), size: 10 };
  const m2 = { mediaType: MediaType.DockerManifest, digest: dig('m2'), size: 20 };

  it('round-trips keys to manifests, first of a repeated key winning, byte-stable', () => {
    const entries = [
      { key: key(1), manifest: m1 },
      { key: key(2), manifest: m2 },
      { key: key(1), manifest: m2 },
    ];
    const bytes = cacheIndexBytes(entries);
    expect(cacheIndexBytes(entries).equals(bytes)).toBe(true);
    const doc = parseManifest(bytes, digestOf(bytes), MediaType.OciIndex);
    const map = parseCacheIndex(doc, 'cache');
    expect([...map.keys()]).toEqual([key(1), key(2)]);
    expect(map.get(key(1))!.digest).toBe(m1.digest);
    expect(map.get(key(2))!.mediaType).toBe(MediaType.DockerManifest);
  });

  const doc = (index: object, mediaType: string = MediaType.OciIndex) => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, ...index }));
    return parseManifest(bytes, digestOf(bytes), mediaType);
  };
  const version = { annotations: { [CACHE_VERSION_ANNOTATION]: '1' } };

  it.each([
    ['an image manifest', doc({ config: m1, layers: [] }, MediaType.OciManifest), 'MANIFEST_INVALID'],
    ['an index without the version', doc({ manifests: [] }), 'MANIFEST_INVALID'],
    [
      'another version',
      doc({ manifests: [], annotations: { [CACHE_VERSION_ANNOTATION]: '2' } }),
      'MANIFEST_INVALID',
    ],
    ['an entry without key', doc({ manifests: [m1], ...version }), 'MANIFEST_INVALID'],
    [
      'a bad key',
      doc({ manifests: [{ ...m1, annotations: { [CACHE_KEY_ANNOTATION]: 'sha256:zz' } }], ...version }),
      'MANIFEST_INVALID',
    ],
    [
      'an entry naming an index',
      doc({
        manifests: [
          { ...m1, mediaType: MediaType.OciIndex, annotations: { [CACHE_KEY_ANNOTATION]: key(1) } },
        ],
        ...version,
      }),
      'MANIFEST_INVALID',
    ],
    [
      // Built directly: the registry's 4 MiB manifest limit would stop such a document before.
      'too many entries',
      {
        kind: 'index' as const,
        mediaType: MediaType.OciIndex,
        bytes: Buffer.alloc(0),
        digest: dig('big'),
        index: {
          schemaVersion: 2 as const,
          manifests: Array.from({ length: 16_385 }, () => ({
            ...m1,
            annotations: { [CACHE_KEY_ANNOTATION]: key(1) },
          })),
          ...version,
        },
      },
      'SIZE_LIMIT',
    ],
  ])('refuses %s', (_what, d, code) => {
    expect(codeOf(() => parseCacheIndex(d, 'cache'))).toBe(code);
  });
});

describe('isStepOf', () => {
  const platform = { os: 'linux', architecture: 'amd64' };
  const layer = (n: number) => ({
    mediaType: MediaType.OciLayerGzip,
    digest: dig(`layer ${n}`),
    size: n,
    diffId: dig(`diff ${n}`),
  });
  const h = (s: string) => ({ created: '2024-01-01T00:00:00Z', created_by: s });
  const parent = appendLayer(emptyImage(platform), { layer: layer(1), history: h('COPY a /') });
  const withLayer = appendLayer(parent, { layer: layer(2), history: h('RUN x') });
  const configOnly = appendLayer(parent, { history: h('ENV A=1') });

  it('accepts one more layer step and one more config step', () => {
    expect(isStepOf(parent, withLayer)).toBe(true);
    expect(isStepOf(parent, configOnly)).toBe(true);
  });

  it.each([
    ['the parent itself', parent],
    ['two steps on', appendLayer(withLayer, { history: h('CMD x') })],
    ['another base', appendLayer(emptyImage(platform), { layer: layer(3), history: h('COPY a /') })],
    [
      'a changed history',
      appendLayer(appendLayer(emptyImage(platform), { layer: layer(1), history: h('COPY b /') }), {
        history: h('ENV A=1'),
      }),
    ],
    [
      'an empty_layer entry with a layer',
      {
        ...withLayer,
        config: {
          ...withLayer.config,
          history: [...parent.config.history!, { ...h('RUN x'), empty_layer: true }],
        },
      },
    ],
  ])('refuses %s', (_what, step) => {
    expect(isStepOf(parent, step)).toBe(false);
  });
});
