/**
 * Review regressions for hostile layers: global PAX headers cannot pile up past the header cap, overlayfs-private
 * xattrs from a layer are never set, and setuid/setgid survive the chown of device nodes and FIFOs.
 */
import { execFileSync } from 'node:child_process';
import { lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/engine/errors.js';
import { applyLayer } from '../../src/engine/union/apply.js';
import { makeTar, readableOf, tempDir } from './helpers.js';

const LAYER = 'sha256:review00000000000000000000000000000000000000000000000000000000000';
/** These cases need root (trusted.* xattrs, device nodes): without it they fail, never skip. */
function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error('this test must run as root (trusted.* xattrs and device nodes)');
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

/** One tar entry (header + padded data, no end blocks) whose typeflag is forced to `flag`. */
async function rawEntry(name: string, content: string, flag: string): Promise<Buffer> {
  const tar = await makeTar([{ name, content }]);
  const size = Buffer.byteLength(content);
  const entry = Buffer.from(tar.subarray(0, 512 + Math.ceil(size / 512) * 512));
  entry.write(flag, 156, 'latin1');
  entry.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += entry[i]!;
  entry.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return entry;
}

describe('review hardening of layer apply', () => {
  it('caps global PAX headers across entries, not only per entry', async () => {
    const root = await tempDir('strata-review-');
    const parts: Buffer[] = [];
    // 8 global headers of ~200 KiB each, each followed by a plain entry: every one is under the 1 MiB cap.
    for (let i = 0; i < 8; i++) {
      parts.push(await rawEntry(`g${i}`, paxRecord(`SCHILY.xattr.user.k${i}`, 'x'.repeat(200 * 1024)), 'g'));
      parts.push(await rawEntry(`f${i}`, 'x', '0'));
    }
    parts.push(Buffer.alloc(1024));
    const err = await applyLayer(readableOf(Buffer.concat(parts)), root, {
      format: 'vfs',
      layerName: LAYER,
      preserveOwnership: false,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).code).toBe('LAYER_INVALID');
    expect((err as TerminalError).message).toMatch(/exceeds the limit/);
  });

  it('never sets overlayfs-private xattrs that come from a layer', async () => {
    requireRoot();
    const root = await tempDir('strata-review-');
    const stats = await applyLayer(
      readableOf(
        await makeTar([
          { name: 'a', type: 'directory', mode: 0o755 },
          {
            name: 'b',
            type: 'directory',
            mode: 0o755,
            pax: {
              'SCHILY.xattr.trusted.overlay.redirect': '/a',
              'SCHILY.xattr.trusted.overlay.opaque': 'y',
              'SCHILY.xattr.user.overlay.metacopy': '',
              'SCHILY.xattr.user.keep': 'yes',
            },
          },
        ]),
      ),
      root,
      { format: 'overlay', layerName: LAYER, preserveOwnership: true },
    );
    const dump = execFileSync('getfattr', ['-h', '-d', '-m', '-', join(root, 'b')], { encoding: 'utf8' });
    expect(dump).not.toMatch(/overlay/);
    expect(dump).toMatch(/user\.keep="yes"/);
    // Each skipped once, and the kept one set once (a new directory used to queue its xattrs twice).
    expect(stats.xattrsSkipped).toBe(3);
    expect(stats.xattrs).toBe(1);
  });

  it('keeps setuid/setgid on FIFOs and devices after chown (chown clears them)', async () => {
    requireRoot();
    const root = await tempDir('strata-review-');
    await mkdir(join(root, 'x'));
    await applyLayer(
      readableOf(
        await makeTar([
          { name: 'fifo', type: 'fifo', mode: 0o6755, uid: 1000, gid: 1000 },
          {
            name: 'null',
            type: 'character-device',
            devmajor: 1,
            devminor: 3,
            mode: 0o4666,
            uid: 1000,
            gid: 5,
          },
        ]),
      ),
      root,
      { format: 'vfs', layerName: LAYER, preserveOwnership: true, allowDevices: true },
    );
    const fifo = await lstat(join(root, 'fifo'));
    expect(fifo.isFIFO()).toBe(true);
    expect(fifo.mode & 0o7777).toBe(0o6755);
    expect(fifo.uid).toBe(1000);
    const dev = await lstat(join(root, 'null'));
    expect(dev.mode & 0o7777).toBe(0o4666);
    expect(dev.gid).toBe(5);
  });
});
