import { chmod, mkdir, rename, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashSources } from '../../src/engine/build/copy/hash.js';
import type { CopyRequest } from '../../src/engine/build/copy/types.js';
import { StrataError } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';

type Req = Omit<CopyRequest, 'destRoot' | 'onProgress'>;

async function ctxWith(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-hash-');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return dir;
}

function req(dir: string, more: Partial<Req> = {}): Req {
  return {
    instruction: 'COPY',
    from: { dir, isContext: true, ignorePatterns: ['ignored/**', '*.tmp'] },
    sources: ['.'],
    destination: '/app/',
    workdir: '/',
    ...more,
  };
}

describe('hashSources', () => {
  const files = { 'a.txt': 'alpha', 'sub/b.txt': 'beta', 'ignored/x': 'x', 'c.tmp': 't' };

  it('is equal for equal content with different mtimes', async () => {
    const one = await ctxWith(files);
    const two = await ctxWith(files);
    await utimes(join(two, 'a.txt'), 12345, 12345);
    expect(await hashSources(req(one))).toBe(await hashSources(req(two)));
    expect(await hashSources(req(one))).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('changes with a byte, a mode, a name, the destination, chown or chmod', async () => {
    const dir = await ctxWith(files);
    const base = await hashSources(req(dir));
    const seen = new Set<string>([base]);
    const variants: Array<() => Promise<string>> = [
      async () => hashSources(req(dir, { destination: '/other/' })),
      async () => hashSources(req(dir, { chown: { uid: 1, gid: 1 } })),
      async () => hashSources(req(dir, { chmod: 0o755 })),
      async () => hashSources(req(dir, { instruction: 'ADD' })),
      async () => {
        await writeFile(join(dir, 'a.txt'), 'alphA');
        return hashSources(req(dir));
      },
      async () => {
        await chmod(join(dir, 'a.txt'), 0o600);
        return hashSources(req(dir));
      },
      async () => {
        await rename(join(dir, 'sub/b.txt'), join(dir, 'sub/B.txt'));
        return hashSources(req(dir));
      },
    ];
    for (const v of variants) {
      const d = await v();
      expect(seen.has(d)).toBe(false);
      seen.add(d);
    }
  });

  it('is unchanged when an ignored file changes', async () => {
    const dir = await ctxWith(files);
    const before = await hashSources(req(dir));
    await writeFile(join(dir, 'ignored/x'), 'changed');
    await writeFile(join(dir, 'c.tmp'), 'changed');
    await writeFile(join(dir, 'new.tmp'), 'new');
    expect(await hashSources(req(dir))).toBe(before);
  });

  it('keys URLs on the checksum when given, else on the URL, without fetching', async () => {
    const dir = await ctxWith({});
    const url = (u: string, checksum?: string) =>
      hashSources(
        req(dir, { instruction: 'ADD', sources: [u], ...(checksum ? { checksum: checksum as never } : {}) }),
      );
    const sum = `sha256:${'a'.repeat(64)}`;
    expect(await url('http://127.0.0.1:9/a', sum)).toBe(await url('http://127.0.0.1:9/b', sum));
    expect(await url('http://127.0.0.1:9/a')).not.toBe(await url('http://127.0.0.1:9/b'));
  });

  it('fails like the copy would: a missing source', async () => {
    const dir = await ctxWith(files);
    let err: unknown;
    try {
      await hashSources(req(dir, { sources: ['nope.txt'] }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('BUILD_CONTEXT_INVALID');
  });
});
