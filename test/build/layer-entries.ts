import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import type { Digest } from '../../src/engine/oci/digest.js';
import type { ContentStore } from '../../src/engine/store/types.js';

/** The entry names of a (gzip) layer blob in the store, streamed. */
export async function layerEntries(store: ContentStore, digest: Digest): Promise<string[]> {
  const names: string[] = [];
  const ex = extract();
  ex.on('entry', (header, stream, next) => {
    names.push(header.name.replace(/^\.\//, '').replace(/\/$/, ''));
    stream.on('end', next);
    stream.resume();
  });
  const blob = await store.openBlob(digest);
  await new Promise<void>((resolve, reject) => {
    ex.on('finish', resolve);
    ex.on('error', reject);
    blob.on('error', reject);
    blob.pipe(createGunzip()).on('error', reject).pipe(ex);
  });
  return names;
}
