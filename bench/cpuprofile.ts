/**
 * `node dist/bench/cpuprofile.js FILE|DIR… [--top N]`: summarises V8 `.cpuprofile` files (from `node --cpu-prof`,
 * e.g. through `npm run bench -- --strata-cmd "node --cpu-prof --cpu-prof-dir=DIR bin/strata.js"`): where the
 * time went, by function (self and inclusive) and by script. A developer tool; not part of a bench run.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Time (µs) by key: self (the sampled frame) and inclusive (anywhere on the stack, once per sample). */
export interface Totals {
  totalUs: number;
  self: Map<string, number>;
  inclusive: Map<string, number>;
  byScript: Map<string, number>;
}

function frameKey(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const file = url ? path.basename(url) : '';
  return `${functionName || '(anonymous)'}${file ? ` ${file}:${lineNumber + 1}` : ''}`;
}

function add(m: Map<string, number>, k: string, v: number): void {
  m.set(k, (m.get(k) ?? 0) + v);
}

/** Adds one profile's samples to `t` (each sample weighs the time delta that follows it). */
export function accumulate(p: Profile, t: Totals): void {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i + 1] ?? 0;
    const leaf = byId.get(p.samples[i]!);
    if (!leaf) continue;
    t.totalUs += us;
    add(t.self, frameKey(leaf), us);
    add(
      t.byScript,
      leaf.callFrame.url ? path.basename(leaf.callFrame.url) : `(${leaf.callFrame.functionName})`,
      us,
    );
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id)!);
      if (!seen.has(k)) {
        seen.add(k);
        add(t.inclusive, k, us);
      }
    }
  }
}

async function profileFiles(args: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const a of args) {
    if ((await stat(a)).isDirectory()) {
      for (const f of await readdir(a)) if (f.endsWith('.cpuprofile')) out.push(path.join(a, f));
    } else out.push(a);
  }
  return out;
}

function table(title: string, m: Map<string, number>, total: number, top: number): string {
  const rows = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [
    `## ${title}`,
    '',
    '| ms | % | frame |',
    '|---:|---:|---|',
    ...rows.map(([k, v]) => `| ${(v / 1000).toFixed(1)} | ${((100 * v) / total).toFixed(1)} | \`${k}\` |`),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '25' } },
  });
  const top = Number(values.top);
  const files = await profileFiles(positionals);
  if (files.length === 0) throw new Error('usage: cpuprofile.js FILE|DIR… [--top N] (no .cpuprofile found)');
  const t: Totals = { totalUs: 0, self: new Map(), inclusive: new Map(), byScript: new Map() };
  for (const f of files) accumulate(JSON.parse(await readFile(f, 'utf8')) as Profile, t);
  process.stdout.write(
    [
      `# ${files.length} profile(s), ${(t.totalUs / 1000).toFixed(0)} ms sampled`,
      '',
      table('Self time by function', t.self, t.totalUs, top),
      table('Inclusive time by function', t.inclusive, t.totalUs, top),
      table('Self time by script', t.byScript, t.totalUs, top),
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`cpuprofile: ${(err as Error).message}\n`);
  process.exit(1);
});
