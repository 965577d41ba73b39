import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOM = fileURLToPath(new URL('../../src/mirror/node-config', import.meta.url));
const ENGINE = fileURLToPath(new URL('../../src/engine', import.meta.url));

describe('mirror/node-config dependency direction', () => {
  it('imports only node:*, smol-toml, the engine and itself (nothing Kubernetes, no CLI, no server)', async () => {
    const offenders: string[] = [];
    const files = (await readdir(ROOM)).filter((f) => f.endsWith('.ts'));
    for (const f of files) {
      const text = await readFile(join(ROOM, f), 'utf8');
      for (const [, spec] of text.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
        const target = spec!.startsWith('.') ? join(ROOM, spec!) : undefined;
        const ok =
          spec!.startsWith('node:') ||
          spec === 'smol-toml' ||
          (target !== undefined && (target.startsWith(`${ROOM}/`) || target.startsWith(`${ENGINE}/`)));
        if (!ok) offenders.push(`${relative(ROOM, join(ROOM, f))} imports ${spec}`);
      }
    }
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(offenders).toEqual([]);
  });
});
