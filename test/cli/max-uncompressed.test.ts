/** `--max-uncompressed` / `$STRATA_MAX_UNCOMPRESSED`: parsed strictly, and reaching the engine's layer unpacking. */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseByteSize } from '../../src/config/size.js';
import { readEnvironment } from '../../src/config/index.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { diffIdOf, makeTar, storeImage } from '../union/helpers.js';

const MiB = 1024 * 1024;
let work: string;
let store: string;

beforeAll(async () => {
  work = await tempDir('strata-cli-maxunc-');
  const s = await FsStore.open(join(work, 'store'));
  store = s.root;
  const tar = await makeTar([{ name: 'zeros', content: Buffer.alloc(3 * MiB) }]);
  await storeImage(s, 'ex.com/big:1', [
    { blob: gzipSync(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) },
  ]);
}, 60_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('parseByteSize', () => {
  it('takes bytes and binary units, case-insensitively', () => {
    expect(parseByteSize('65536', 'x')).toBe(65536);
    expect(parseByteSize('512k', 'x')).toBe(512 * 1024);
    expect(parseByteSize('1.5GiB', 'x')).toBe(1.5 * 1024 ** 3);
    expect(parseByteSize('64G', 'x')).toBe(64 * 1024 ** 3);
    expect(parseByteSize(' 2 mb ', 'x')).toBe(2 * MiB);
  });

  it('refuses anything else with INVALID_ARGUMENT naming the source', () => {
    for (const bad of ['', '0', '-1', '1x', 'k', '1e9', '9999999999t', '1,5g'])
      expect(() => parseByteSize(bad, '--max-uncompressed'), bad).toThrow(
        expect.objectContaining({
          code: 'INVALID_ARGUMENT',
          message: expect.stringMatching(/^--max-uncompressed: /),
        }),
      );
  });

  it('readEnvironment keeps $STRATA_MAX_UNCOMPRESSED as given', () => {
    expect(readEnvironment({ STRATA_MAX_UNCOMPRESSED: '2g' }).maxUncompressed).toBe('2g');
    expect(readEnvironment({}).maxUncompressed).toBeUndefined();
  });
});

describe('the cap through the CLI', () => {
  const containers = (): Promise<string[]> =>
    readdir(join(store, 'strata', 'containers')).catch(() => [] as string[]);

  it('$STRATA_MAX_UNCOMPRESSED below the layer: create fails with SIZE_LIMIT and no container is left', async () => {
    const r = await runCli(['--json', 'create', '--driver', 'vfs', '--name', 'capped', 'ex.com/big:1'], {
      STRATA_STORE: store,
      STRATA_MAX_UNCOMPRESSED: '1m',
    });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({
      type: 'error',
      code: 'SIZE_LIMIT',
    });
    expect(await containers()).toEqual([]);
  });

  it('--max-uncompressed overrides the variable', async () => {
    const r = await runCli(
      ['--max-uncompressed', '8m', 'create', '--driver', 'vfs', '--name', 'uncapped', 'ex.com/big:1'],
      { STRATA_STORE: store, STRATA_MAX_UNCOMPRESSED: '1m' },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await containers()).toEqual(['uncapped']);
    const rmr = await runCli(['rm', 'uncapped'], { STRATA_STORE: store });
    expect(rmr.code, rmr.stderr).toBe(0);
  });

  it('a bad size is a usage error naming where it came from', async () => {
    const flag = await runCli(['--max-uncompressed', 'lots', 'images'], { STRATA_STORE: store });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/--max-uncompressed: "lots" is not a size/);
    const env = await runCli(['images'], { STRATA_STORE: store, STRATA_MAX_UNCOMPRESSED: '12 bananas' });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/\$STRATA_MAX_UNCOMPRESSED: "12 bananas" is not a size/);
  });
});
