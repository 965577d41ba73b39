/** The CLI's registry client: timeouts from STRATA_HTTP_TIMEOUTS and plain network messages, in real processes. */
import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { startSilentServer, type HostileServer } from './hostile-servers.js';

const dirs: string[] = [];
const servers: HostileServer[] = [];

afterAll(async () => {
  for (const s of servers) await s.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function store(): Promise<string> {
  const d = await tempDir('strata-cli-net-');
  dirs.push(d);
  return d;
}

describe('strata pull against broken registries', () => {
  it('gives up on a registry that never answers within the STRATA_HTTP_TIMEOUTS limits, saying so', async () => {
    const silent = await startSilentServer();
    servers.push(silent);
    const started = Date.now();
    const run = await runCli(['--store', await store(), 'pull', `${silent.host}/team/app:1`], {
      STRATA_HTTP_TIMEOUTS: 'headers=200ms',
    });
    expect(run.code).toBe(1);
    // Without a terminal each retry is one plain line (`retrying (n/N): cause`); the last line is the verdict.
    const stderrLines = run.stderr.trim().split('\n');
    expect(stderrLines.slice(0, -1).map((l) => l.slice(0, 'retrying (n/N):'.length))).toEqual(
      [1, 2, 3, 4].map((n) => `retrying (${n}/4):`),
    );
    expect(stderrLines.at(-1)).toMatch(
      new RegExp(
        `^strata: pull ${silent.host}/team/app:1: ${silent.host} sent no response within 200 ms \\(response-headers timeout\\) \\(gave up after 5 attempts\\)$`,
      ),
    );
    expect(silent.connections).toBe(5);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('refuses a malformed STRATA_HTTP_TIMEOUTS as a usage error', async () => {
    const run = await runCli(['--store', await store(), 'pull', '127.0.0.1:1/team/app:1'], {
      STRATA_HTTP_TIMEOUTS: 'headers=soon',
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('STRATA_HTTP_TIMEOUTS: invalid entry "headers=soon"');
  });

  it('prints one plain line for an unknown registry host, without Node error text', async () => {
    const run = await runCli(['--store', await store(), '--json', 'pull', 'nosuchhost.invalid/team/app:1']);
    expect(run.code).toBe(1);
    expect(run.stderr).not.toMatch(/getaddrinfo|ENOTFOUND/);
    expect(run.stderr.trim()).toBe(
      'strata: pull nosuchhost.invalid/team/app:1: cannot resolve nosuchhost.invalid: no such host (check the registry name)',
    );
    const last = JSON.parse(run.stdout.trim().split('\n').pop()!) as { type: string; code: string };
    expect(last).toMatchObject({ type: 'error', code: 'NETWORK' });
  });
});
