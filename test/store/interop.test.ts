import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { parseManifest } from '../../src/engine/oci/types.js';
import { FsStore } from '../../src/engine/store/index.js';
import { requirePeer } from '../support/peers.js';
import { tempDir } from './helpers.js';
import { addImage, addLayer } from './image.js';

const run = promisify(execFile);

/** Runs a peer tool; a missing tool fails the test (requirePeer throws), it never skips. */
async function peer(tool: string, args: string[]): Promise<string> {
  const bin = requirePeer(tool);
  try {
    const { stdout } = await run(bin, args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${tool} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

async function buildImage(root: string): Promise<{ store: FsStore; manifestDigest: string }> {
  const store = await FsStore.open(root);
  const layer = await addLayer(store, { 'hello.txt': 'hello from strata\n', 'etc/app.conf': 'x=1\n' });
  const { manifest } = await addImage(store, [layer], 'interop');
  await store.setRef('example.com/test/app:1', manifest);
  return { store, manifestDigest: manifest.digest };
}

describe('OCI layout interop with skopeo and umoci', () => {
  it('skopeo inspects and copies an image the store wrote, with the full reference as the tag', async () => {
    const root = join(await tempDir(), 'store');
    const { manifestDigest } = await buildImage(root);
    const info = JSON.parse(await peer('skopeo', ['inspect', `oci:${root}:example.com/test/app:1`])) as {
      Digest: string;
      Architecture: string;
      Layers: string[];
    };
    expect(info.Digest).toBe(manifestDigest);
    expect(info.Architecture).toBe('amd64');
    expect(info.Layers).toHaveLength(1);

    const other = join(await tempDir(), 'other');
    await peer('skopeo', ['copy', `oci:${root}:example.com/test/app:1`, `oci:${other}:x`]);
    const copied = await FsStore.open(other);
    expect((await copied.getRef('x'))?.digest).toBe(manifestDigest);
  });

  it('umoci lists, stats and unpacks the layout (it accepts the full reference as a tag)', async () => {
    const root = join(await tempDir(), 'store');
    await buildImage(root);
    expect((await peer('umoci', ['ls', '--layout', root])).split('\n')).toContain('example.com/test/app:1');
    const stat = JSON.parse(
      await peer('umoci', ['stat', '--json', '--image', `${root}:example.com/test/app:1`]),
    ) as object;
    expect(stat).toHaveProperty('history');
    const bundle = join(await tempDir(), 'bundle');
    await peer('umoci', ['unpack', '--rootless', '--image', `${root}:example.com/test/app:1`, bundle]);
    expect(await readFile(join(bundle, 'rootfs', 'hello.txt'), 'utf8')).toBe('hello from strata\n');
    // umoci gc leaves our ingest/ directory and reachable blobs alone; the store still opens and reads.
    await peer('umoci', ['gc', '--layout', root]);
    const store = await FsStore.open(root);
    const ref = await store.getRef('example.com/test/app:1');
    expect(ref).toBeDefined();
    expect(await store.has(ref!.digest)).toBe(true);
  });

  it('reads an image skopeo copied into it, keeping the refs it had', async () => {
    const src = join(await tempDir(), 'src');
    const { manifestDigest } = await buildImage(src);
    const root = join(await tempDir(), 'store');
    const store = await FsStore.open(root);
    const own = await store.putBytes(
      Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] })),
    );
    await store.setRef('example.com/mine:1', {
      mediaType: MediaType.OciIndex,
      digest: own.digest,
      size: own.size,
    });

    await peer('skopeo', ['copy', `oci:${src}:example.com/test/app:1`, `oci:${root}:example.com/x:2`]);

    const refs = await store.listRefs();
    expect(refs.map((r) => r.name)).toEqual(['example.com/mine:1', 'example.com/x:2']);
    const desc = await store.getRef('example.com/x:2');
    expect(desc?.digest).toBe(manifestDigest);
    const bytes = await store.readBlob(desc!.digest);
    expect(digestOf(bytes)).toBe(manifestDigest);
    const doc = parseManifest(bytes, desc!.digest, desc!.mediaType);
    expect(doc.kind).toBe('manifest');
    if (doc.kind === 'manifest') {
      for (const l of doc.manifest.layers) expect(await store.stat(l.digest)).toEqual({ size: l.size });
    }
    // Our own writes after skopeo's still keep its entry, and gc keeps what skopeo wrote.
    await store.setRef('example.com/mine:2', {
      mediaType: MediaType.OciIndex,
      digest: own.digest,
      size: own.size,
    });
    expect((await store.listRefs()).map((r) => r.name)).toEqual([
      'example.com/mine:1',
      'example.com/x:2',
      'example.com/mine:2',
    ]);
    const later = await FsStore.open(root, { now: () => Date.now() + 2 * 60 * 60 * 1000 });
    expect((await later.gc()).removed).toEqual([]);
    await peer('skopeo', ['inspect', `oci:${root}:example.com/x:2`]);
  });
});
