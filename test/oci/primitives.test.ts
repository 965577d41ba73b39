import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { digestOf, DigestingStream, isDigest, parseDigest } from '../../src/engine/oci/digest.js';
import { isIndexMediaType, layerCompression, MediaType } from '../../src/engine/oci/media-types.js';
import { normalizePlatform, parsePlatform, platformMatches } from '../../src/engine/oci/platform.js';
import { parseManifest } from '../../src/engine/oci/types.js';
import { hasCode } from '../../src/engine/errors.js';

describe('digests', () => {
  it('validates sha256 and sha512, rejects malformed ones', () => {
    expect(isDigest(digestOf('x'))).toBe(true);
    expect(isDigest(`sha512:${'0'.repeat(128)}`)).toBe(true);
    for (const bad of [
      'sha256:',
      'sha256:ABC',
      `sha256:${'A'.repeat(64)}`,
      `sha256:${'0'.repeat(63)}`,
      `foo:${'0'.repeat(64)}`,
      'nocolon',
      `sha256:${'g'.repeat(64)}`,
    ]) {
      expect(() => parseDigest(bad), bad).toThrow(/digest/);
    }
  });

  it('DigestingStream verifies digest and size while streaming', async () => {
    const data = Buffer.from('hello world');
    const ok = new DigestingStream({ digest: digestOf(data), size: data.length });
    await pipeline(Readable.from([data]), ok, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(ok.digest).toBe(digestOf(data));

    const wrong = new DigestingStream({ digest: digestOf('other'), size: data.length, what: 'blob X' });
    await expect(
      pipeline(Readable.from([data]), wrong, new Writable({ write: (_c, _e, cb) => cb() })),
    ).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: expect.stringContaining('blob X') });

    const over = new DigestingStream({ size: 3 });
    await expect(
      pipeline(Readable.from([data]), over, new Writable({ write: (_c, _e, cb) => cb() })),
    ).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
  });
});

describe('media types', () => {
  it('classifies layers and indexes, never throws on unknown types', () => {
    expect(layerCompression(MediaType.DockerLayer)).toBe('gzip');
    expect(layerCompression(MediaType.OciLayerZstd)).toBe('zstd');
    expect(layerCompression(MediaType.OciLayer)).toBe('none');
    expect(layerCompression('application/x-weird')).toBe('unknown');
    expect(isIndexMediaType(`${MediaType.DockerManifestList}; charset=utf-8`)).toBe(true);
    expect(isIndexMediaType('application/x-weird')).toBe(false);
  });
});

describe('platforms', () => {
  it('normalizes the usual aliases', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'aarch64' })).toEqual({
      os: 'linux',
      architecture: 'arm64',
    });
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/arm')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(() => parsePlatform('linux')).toThrow(/os\/arch/);
  });
  it('matches os/arch, and the variant only when asked', () => {
    expect(
      platformMatches(
        { os: 'linux', architecture: 'arm64' },
        { os: 'linux', architecture: 'arm64', variant: 'v8' },
      ),
    ).toBe(true);
    expect(
      platformMatches(
        { os: 'linux', architecture: 'arm', variant: 'v6' },
        { os: 'linux', architecture: 'arm', variant: 'v7' },
      ),
    ).toBe(false);
    expect(
      platformMatches(
        { os: 'linux', architecture: 'arm' },
        { os: 'linux', architecture: 'arm', variant: 'v6' },
      ),
    ).toBe(true);
    expect(
      platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' }),
    ).toBe(false);
    expect(platformMatches({ os: 'linux', architecture: 'amd64' }, undefined)).toBe(false);
  });
});

describe('parseManifest', () => {
  const d = digestOf('x');
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: d, size: 1 },
    layers: [{ mediaType: 'application/x-unknown-layer', digest: d, size: 1 }],
  };
  const doc = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

  it('parses manifests and indexes, keeping exact bytes; unknown layer types pass', () => {
    const b = doc(manifest);
    const m = parseManifest(b, digestOf(b), undefined);
    expect(m.kind).toBe('manifest');
    expect(m.bytes).toBe(b);
    const idx = doc({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.example.unknown', digest: d, size: 5 }],
    });
    expect(parseManifest(idx, digestOf(idx), MediaType.OciIndex).kind).toBe('index');
  });

  it('rejects bad documents with clear errors', () => {
    const cases: Array<[Buffer, string | undefined, string]> = [
      [Buffer.from('{nope'), undefined, 'MANIFEST_INVALID'],
      [doc({ schemaVersion: 1, name: 'x' }), undefined, 'UNSUPPORTED_MEDIA_TYPE'],
      [
        doc({ ...manifest, config: { mediaType: MediaType.OciConfig, digest: 'sha256:zz', size: 1 } }),
        undefined,
        'MANIFEST_INVALID',
      ],
      [
        doc({ ...manifest, layers: [{ mediaType: MediaType.OciLayerGzip, digest: d, size: -1 }] }),
        undefined,
        'MANIFEST_INVALID',
      ],
      [doc(manifest), 'application/x-not-a-manifest', 'UNSUPPORTED_MEDIA_TYPE'],
      [Buffer.alloc(4 * 1024 * 1024 + 1, 0x20), undefined, 'SIZE_LIMIT'],
    ];
    for (const [bytes, mt, code] of cases) {
      let err: unknown;
      try {
        parseManifest(bytes, digestOf(bytes), mt);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, code as never), `${code}: ${String(err)}`).toBe(true);
    }
  });
});
