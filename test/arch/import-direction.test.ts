import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

function imports(text: string): string[] {
  return [...text.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)].map((m) => m[1]!);
}

describe('dependency direction', () => {
  it('the engine imports nothing from Kubernetes, controllers, the CLI, the mirror or config', async () => {
    const offenders: string[] = [];
    let files = 0;
    for await (const file of tsFiles(join(SRC, 'engine'))) {
      files++;
      for (const spec of imports(await readFile(file, 'utf8'))) {
        const leavesEngine = spec.startsWith('.') && !join(file, '..', spec).startsWith(join(SRC, 'engine'));
        if (leavesEngine || spec.startsWith('@kubernetes/') || spec === 'pino' || spec === 'prom-client') {
          offenders.push(`${relative(SRC, file)} imports ${spec}`);
        }
      }
    }
    expect(files).toBeGreaterThan(10);
    expect(offenders).toEqual([]);
  });

  it('the engine never imports the API types (src/api), and src/api imports nothing but node:*, yaml and itself', async () => {
    const offenders: string[] = [];
    let files = 0;
    for await (const file of tsFiles(join(SRC, 'engine'))) {
      for (const spec of imports(await readFile(file, 'utf8'))) {
        if (spec.startsWith('.') && join(file, '..', spec).startsWith(join(SRC, 'api')))
          offenders.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    for await (const file of tsFiles(join(SRC, 'api'))) {
      files++;
      for (const spec of imports(await readFile(file, 'utf8'))) {
        const local = spec.startsWith('.') && join(file, '..', spec).startsWith(join(SRC, 'api'));
        if (!local && !spec.startsWith('node:') && spec !== 'yaml')
          offenders.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(files).toBeGreaterThan(3);
    expect(offenders).toEqual([]);
  });

  it('kube/ knows none of our kinds: it imports only node:*, client-node, pino, prom-client, itself and ops/', async () => {
    const offenders: string[] = [];
    let files = 0;
    const allowed = new Set(['@kubernetes/client-node', 'pino', 'prom-client']);
    for await (const file of tsFiles(join(SRC, 'kube'))) {
      files++;
      for (const spec of imports(await readFile(file, 'utf8'))) {
        const target = spec.startsWith('.') ? join(file, '..', spec) : undefined;
        const ok = target
          ? target.startsWith(join(SRC, 'kube')) || target.startsWith(join(SRC, 'ops'))
          : spec.startsWith('node:') || allowed.has(spec);
        if (!ok) offenders.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(files).toBeGreaterThan(10);
    expect(offenders).toEqual([]);
  });

  it('ops/ imports only node:*; controllers/ never import the CLI or the mirror', async () => {
    const offenders: string[] = [];
    for await (const file of tsFiles(join(SRC, 'ops'))) {
      for (const spec of imports(await readFile(file, 'utf8')))
        if (!spec.startsWith('node:')) offenders.push(`${relative(SRC, file)} imports ${spec}`);
    }
    for await (const file of tsFiles(join(SRC, 'controllers'))) {
      for (const spec of imports(await readFile(file, 'utf8'))) {
        const target = spec.startsWith('.') ? join(file, '..', spec) : '';
        if (target.startsWith(join(SRC, 'cli')) || target.startsWith(join(SRC, 'mirror')))
          offenders.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
