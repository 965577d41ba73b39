import { rm } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { buildTar, dirs, freshStore, layerTar, loadFrom } from './helpers.js';

const ID1 = 'a'.repeat(64);
const ID2 = 'b'.repeat(64);
const ID3 = 'c'.repeat(64);

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('legacy docker archives (<id>/layer.tar)', () => {
  it('docker 1.10–24 layout: manifest.json with <hex>.json configs and <id>/layer.tar layers, a symlinked shared layer, any order', async () => {
    const base = await layerTar({ 'etc/base': 'base\n' });
    const top = await layerTar({ 'srv/app': 'app\n' });
    const topGz = gzipSync(top); // docker load accepts compressed layer.tar files too
    const diffIds = [digestOf(base), digestOf(top)];
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/srv/app'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: [{ created_by: 'base' }, { created_by: 'app' }],
    });
    const cfgName = `${digestOf(config).slice(7)}.json`;
    const second = JSON.stringify({
      ...JSON.parse(config),
      rootfs: { type: 'layers', diff_ids: [diffIds[0]] },
    });
    const cfg2Name = `${digestOf(second).slice(7)}.json`;
    const file = await buildTar([
      {
        name: 'manifest.json',
        data: JSON.stringify([
          { Config: cfgName, RepoTags: ['app:1'], Layers: [`${ID1}/layer.tar`, `${ID2}/layer.tar`] },
          { Config: cfg2Name, RepoTags: ['localhost:5000/base:1'], Layers: [`${ID3}/layer.tar`] },
        ]),
      },
      { name: `${ID3}/`, dir: true },
      { name: `${ID3}/layer.tar`, symlink: `../${ID1}/layer.tar` },
      { name: `${ID2}/layer.tar`, data: topGz },
      { name: `${ID2}/VERSION`, data: '1.0' },
      { name: `./${ID1}/layer.tar`, data: base },
      { name: cfgName, data: config },
      { name: cfg2Name, data: second },
      { name: 'repositories', data: JSON.stringify({ app: { '1': ID2 } }) },
    ]);
    const store = await freshStore();
    const result = await loadFrom(store, file);
    expect(result.format).toBe('docker-archive');
    expect(result.images.map((i) => i.reference)).toEqual([
      'docker.io/library/app:1',
      'localhost:5000/base:1',
    ]);
    const img = await loadLocalImage(store, await findLocalRef(store, 'app:1'));
    expect(img.configDigest).toBe(digestOf(config));
    expect(img.manifest.manifest.layers).toEqual([
      { mediaType: MediaType.OciLayer, digest: diffIds[0], size: base.length },
      { mediaType: MediaType.OciLayerGzip, digest: digestOf(topGz), size: topGz.length },
    ]);
    const baseImg = await loadLocalImage(store, await findLocalRef(store, 'localhost:5000/base:1'));
    expect(baseImg.manifest.manifest.layers[0]!.digest).toBe(diffIds[0]);
  });

  it('legacy-only archive: repositories and a v1 json parent chain, no manifest.json', async () => {
    const base = await layerTar({ 'etc/base': 'base\n' });
    const top = await layerTar({ 'srv/app': 'app\n' });
    const file = await buildTar([
      { name: 'repositories', data: JSON.stringify({ 'example.com/old': { v1: ID2, stable: ID2 } }) },
      {
        name: `${ID2}/json`,
        data: JSON.stringify({
          id: ID2,
          parent: ID1,
          created: '2015-05-06T07:08:09Z',
          author: 'someone',
          container_config: { Cmd: ['/bin/sh', '-c', '#(nop) ADD app'] },
          config: { Cmd: ['/srv/app'], Env: ['A=1'] },
          architecture: 'amd64',
          os: 'linux',
          Size: 123,
        }),
      },
      { name: `${ID2}/layer.tar`, data: gzipSync(top) },
      { name: `${ID2}/VERSION`, data: '1.0' },
      {
        name: `${ID1}/json`,
        data: JSON.stringify({
          id: ID1,
          created: '2015-05-06T07:00:00Z',
          container_config: { Cmd: ['/bin/sh', '-c', '#(nop) ADD base'] },
        }),
      },
      { name: `${ID1}/layer.tar`, data: base },
    ]);
    const store = await freshStore();
    const result = await loadFrom(store, file);
    expect(result.format).toBe('docker-legacy');
    expect(result.images.map((i) => i.reference).sort()).toEqual([
      'example.com/old:stable',
      'example.com/old:v1',
    ]);
    const img = await loadLocalImage(store, await findLocalRef(store, 'example.com/old:v1'));
    expect(img.config.rootfs.diff_ids).toEqual([digestOf(base), digestOf(top)]);
    expect(img.config.config).toEqual({ Cmd: ['/srv/app'], Env: ['A=1'] });
    expect(img.config).not.toHaveProperty('id');
    expect(img.config).not.toHaveProperty('parent');
    expect(img.config.history).toEqual([
      { created: '2015-05-06T07:00:00Z', created_by: '/bin/sh -c #(nop) ADD base' },
      { created: '2015-05-06T07:08:09Z', author: 'someone', created_by: '/bin/sh -c #(nop) ADD app' },
    ]);
  });
});
