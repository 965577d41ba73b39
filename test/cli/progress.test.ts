/** The CLI's progress renderer and logger, fed the engine's event types (synthetic events: the emitters vary). */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgress, retryLine, type CliEvent } from '../../src/cli/progress.js';
import { createCliLogger } from '../../src/cli/logger.js';
import { rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../support/cli.js';
import { Engine } from '../../src/engine/engine.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import type { Digest } from '../../src/engine/oci/digest.js';
import { makeTarball, tempDir } from '../support/images.js';

/** A stream that keeps what was written. */
function sink(): { stream: PassThrough; text(): string } {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (d: Buffer) => (out += d.toString()));
  return { stream, text: () => out };
}

const ESC = String.fromCharCode(27);
const CONTROL = new RegExp(`(${ESC}\\[\\d+A|${ESC}\\[2K|\\n)`);
const UP = new RegExp(`^${ESC}\\[(\\d+)A$`);

/** What a terminal would show: the last drawing, with cursor moves and line clears applied. */
function screen(raw: string): string[] {
  const lines: string[] = [];
  let row = 0;
  for (const part of raw.split(CONTROL)) {
    const up = UP.exec(part);
    if (up) row -= Number(up[1]);
    else if (part === `${ESC}[2K`) lines[row] = '';
    else if (part === '\n') row++;
    else if (part) lines[row] = (lines[row] ?? '') + part;
  }
  return lines.filter((l) => l !== undefined);
}

const L1 = `sha256:${'a'.repeat(64)}` as Digest;
const L2 = `sha256:${'b'.repeat(64)}` as Digest;

describe('progress on a terminal', () => {
  it('draws one line per applied layer and one for a commit, and prints retries above them', () => {
    const err = sink();
    const p = createProgress('tty', err.stream, sink().stream);
    const events: CliEvent[] = [
      { type: 'layer-apply', layer: L1, index: 0, count: 2, bytes: 1_000, entries: 3, done: false },
      { type: 'layer-apply', layer: L1, index: 0, count: 2, bytes: 2_500_000, entries: 120, done: true },
      { type: 'layer-apply', layer: L2, index: 1, count: 2, bytes: 7_000, entries: 4, done: false },
      {
        type: 'retry',
        what: 'GET blob sha256:cc of localhost:5000/app',
        attempt: 1,
        maxAttempts: 5,
        delayMs: 200,
        code: 'NETWORK',
        reason: 'connection reset',
      },
      { type: 'commit-progress', entries: 10, bytes: 4_096, done: false },
      { type: 'commit-progress', entries: 1_000, bytes: 3_000_000, done: true },
    ];
    for (const e of events) p.listener(e);
    p.finish();
    const shown = screen(err.text());
    expect(shown).toContain(
      'retrying (1/4): connection reset (GET blob sha256:cc of localhost:5000/app; in 0.2s)',
    );
    expect(shown).toContain(`${'a'.repeat(12)}: applied layer 1/2: 2.50MB, 120 entries`);
    expect(shown).toContain(`${'b'.repeat(12)}: applying layer 2/2: 7.00kB, 4 entries`);
    expect(shown).toContain('commit: written layer: 1000 entries, 3.00MB');
    // The retry line stays above the bars: it was printed once, not redrawn.
    expect(err.text().split('retrying (1/4)').length).toBe(2);
  });

  it('draws a bar while a blob transfers and its outcome when done; a finished drawing is not redrawn', () => {
    const err = sink();
    const p = createProgress('tty', err.stream, sink().stream);
    p.listener({ type: 'blob-start', digest: L1, size: 2_000_000, kind: 'layer' });
    p.listener({ type: 'blob-progress', digest: L1, bytes: 1_000_000, size: 2_000_000 });
    p.finish();
    expect(screen(err.text())).toEqual([`${'a'.repeat(12)}: [==============>               ] 1.00MB/2.00MB`]);
    p.listener({ type: 'blob-done', digest: L2, size: 10, outcome: 'exists' });
    p.finish();
    expect(screen(err.text()).at(-1)).toBe(`${'b'.repeat(12)}: already exists 10B`);
  });
});

describe('progress off a terminal and as JSON', () => {
  it('plain mode prints retries and notes as lines, nothing else; quiet mode only notes', () => {
    const plain = sink();
    const quiet = sink();
    const p = createProgress('plain', plain.stream, sink().stream);
    const q = createProgress('quiet', quiet.stream, sink().stream);
    const retry: CliEvent = {
      type: 'retry',
      what: 'HEAD manifest 1',
      attempt: 2,
      maxAttempts: 3,
      delayMs: 1500,
      code: 'TOO_MANY_REQUESTS',
      reason: '429',
    };
    for (const r of [p, q]) {
      r.listener({ type: 'layer-apply', layer: L1, index: 0, count: 1, bytes: 1, entries: 1, done: true });
      r.listener(retry);
      r.listener({ type: 'note', message: 'one platform only' });
    }
    expect(plain.text()).toBe(
      `${retryLine(retry as Extract<CliEvent, { type: 'retry' }>)}\nnote: one platform only\n`,
    );
    expect(plain.text()).toMatch(/^retrying \(2\/2\): 429/);
    expect(quiet.text()).toBe('note: one platform only\n');
  });

  it('json mode writes every event, engine events included, as one JSON line', () => {
    const out = sink();
    const p = createProgress('json', sink().stream, out.stream);
    const events: CliEvent[] = [
      {
        type: 'http-request',
        method: 'GET',
        host: 'h:1',
        path: '/v2/',
        status: 200,
        bytes: 2,
        durationMs: 3,
      },
      { type: 'lock-wait', lock: 'index.json.lock', waitedMs: 12, outcome: 'acquired' },
      { type: 'commit-progress', entries: 1, bytes: 2, done: true },
    ];
    for (const e of events) p.listener(e);
    expect(
      out
        .text()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual(events);
  });

  it("an Engine built with the CLI's listener delivers its observer's events to the renderer", async () => {
    const dir = await tempDir('strata-progress-');
    const out = sink();
    const p = createProgress('json', sink().stream, out.stream);
    const registry = new RegistryClient();
    try {
      const engine = new Engine({ store: await FsStore.open(dir), registry, listeners: [p.listener] });
      engine.observer.emit({ type: 'lease', action: 'create', id: 'l1', owner: 'pull' });
      expect(JSON.parse(out.text())).toEqual({ type: 'lease', action: 'create', id: 'l1', owner: 'pull' });
    } finally {
      await registry.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('--log-level logger', () => {
  it('writes pino JSON lines at the level and above, nothing below', () => {
    const out = sink();
    const log = createCliLogger('warn', out.stream);
    log.info({ a: 1 }, 'hidden');
    log.debug({ a: 2 }, 'hidden');
    log.warn({ host: 'h' }, 'slow registry');
    log.error({ err: new Error('boom') }, 'failed');
    const lines = out
      .text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: number; msg: string; host?: string; err?: { message: string } });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'slow registry'],
      [50, 'failed'],
    ]);
    expect(lines[0]!.host).toBe('h');
    expect(lines[1]!.err!.message).toBe('boom');
  });

  it('silent writes nothing; debug writes everything', () => {
    const silent = sink();
    const debug = sink();
    createCliLogger('silent', silent.stream).error({}, 'x');
    const d = createCliLogger('debug', debug.stream);
    d.debug({}, 'one');
    d.info({}, 'two');
    expect(silent.text()).toBe('');
    expect(debug.text().trim().split('\n')).toHaveLength(2);
  });
});

describe('the CLI wires one observer through store, registry client and engine', () => {
  it("a `--json tag` that waits on another holder's index lock reports the lock-wait event", async () => {
    const dir = await tempDir('strata-lockwait-');
    try {
      const env = { STRATA_STORE: join(dir, 'store') };
      const tar = await makeTarball({ 'a.txt': 'a' });
      expect((await runCli(['import', tar, 'demo/a:1'], env)).code).toBe(0);
      // Another holder (a fresh lock file: alive by its mtime) keeps the index lock for 3 s: longer than the CLI takes
      // to start on a loaded machine, so the tag always finds it held.
      const lock = join(dir, 'store', 'index.json.lock');
      await writeFile(lock, JSON.stringify({ token: 'other', pid: 1, host: 'elsewhere' }));
      const released = new Promise<void>((resolve) =>
        setTimeout(() => void unlink(lock).then(resolve, resolve), 3000),
      );
      const run = await runCli(['--json', 'tag', 'demo/a:1', 'demo/a:2'], env);
      await released;
      expect(run.code).toBe(0);
      const events = run.stdout
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { type?: string; outcome?: string; lock?: string; waitedMs?: number });
      const wait = events.find((e) => e.type === 'lock-wait');
      expect(wait).toMatchObject({ outcome: 'acquired', lock: lock });
      expect(wait!.waitedMs).toBeGreaterThan(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
