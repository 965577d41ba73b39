/**
 * A Debian bookworm minbase root made with debootstrap, cached per machine as a tar: the Debian tests (the apt
 * build, the Strata image's packaging test) import it as their base, as no image hub is reachable here.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requirePeer } from './peers.js';

const run = promisify(execFile);

/** Where the made roots are kept between runs (`STRATA_TEST_CACHE` names another directory). */
export const TEST_CACHE_DIR = process.env.STRATA_TEST_CACHE || '/var/cache/strata-test';

/** The Debian mirror this machine's apt uses (deb822 `URIs:` or one-line `deb`), else deb.debian.org. */
export async function debianMirror(): Promise<string> {
  const files = ['/etc/apt/sources.list'];
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[]))
    files.push(join('/etc/apt/sources.list.d', f));
  for (const f of files) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const m = /^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)/.exec(line);
      if (m && /\/debian\/?$/.test(m[1]!)) return m[1]!.replace(/\/$/, '');
    }
  }
  return 'http://deb.debian.org/debian';
}

/**
 * The `debootstrap --variant=minbase bookworm` root as a tar, cached under {@link TEST_CACHE_DIR} keyed by what
 * makes it (suite, variant, arch, mirror) — never by date — so a machine pays for debootstrap once (about a
 * minute). Written to a temp name and renamed, so a killed run leaves no half tar behind. Needs root.
 */
export async function debianBaseTar(): Promise<string> {
  const mirror = await debianMirror();
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  const key = createHash('sha256').update(`bookworm minbase ${arch} ${mirror}`).digest('hex').slice(0, 12);
  const tar = join(TEST_CACHE_DIR, `debian-bookworm-minbase-${arch}-${key}.tar`);
  if (existsSync(tar)) return tar;
  const debootstrap = requirePeer('debootstrap');
  await mkdir(TEST_CACHE_DIR, { recursive: true });
  const work = join(TEST_CACHE_DIR, `tmp-${process.pid}-${Date.now()}`);
  try {
    await run(debootstrap, ['--variant=minbase', `--arch=${arch}`, 'bookworm', join(work, 'root'), mirror], {
      timeout: 300_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    await run('tar', [
      '--numeric-owner',
      '--xattrs',
      '--xattrs-include=*',
      '-cf',
      join(work, 'root.tar'),
      '-C',
      join(work, 'root'),
      '.',
    ]);
    await rename(join(work, 'root.tar'), tar);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return tar;
}
