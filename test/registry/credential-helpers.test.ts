import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import { DockerConfigCredentials, RegistryClient } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { rejectionOf } from './helpers.js';

let dir: string;
let bin: string;
let log: string;
/** The fake helpers first, then the system's tools (`cat`, `sleep`). Global PATH is left alone. */
let helperPath: string;

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** Writes `docker-credential-<name>`: a sh script that logs its stdin to `log` and runs `body` with `$url` set. */
async function helper(name: string, body: string): Promise<void> {
  const file = join(bin, `docker-credential-${name}`);
  await writeFile(
    file,
    `#!/bin/sh\n[ "$1" = get ] || exit 9\nurl=$(cat)\necho "${name} $url" >> '${log}'\n${body}\n`,
  );
  await chmod(file, 0o755);
}

async function config(name: string, json: unknown): Promise<string> {
  const path = join(dir, `${name}.json`);
  await writeFile(path, JSON.stringify(json));
  return path;
}

async function calls(): Promise<string[]> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '');
}

const NOT_FOUND = `echo 'credentials not found in native keychain'; exit 1`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-credhelpers-'));
  bin = join(dir, 'bin');
  log = join(dir, 'calls.log');
  helperPath = [bin, process.env.PATH ?? '/usr/bin:/bin'].join(delimiter);
  await mkdir(bin);
  await helper(
    'perreg',
    `case "$url" in
  localhost:5000) echo '{"ServerURL":"localhost:5000","Username":"u1","Secret":"p1"}' ;;
  *) ${NOT_FOUND} ;;
esac`,
  );
  await helper(
    'store',
    `case "$url" in
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"refresh-tok"}' ;;
  ghcr.io) printf '{"ServerURL":"ghcr.io","Username":"gh","Secret":"gh-pass"}' ;;
  *) ${NOT_FOUND} ;;
esac`,
  );
  await helper(
    'broken',
    `echo '{"Username":"u","Secret":"leaked-secret-1"}'; echo 'leaked-secret-2' >&2; exit 3`,
  );
  await helper('garbage', `echo 'not json leaked-secret-3'`);
  await helper('slow', `exec sleep 5`);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('docker credential helpers', () => {
  const auths = {
    'localhost:5000': { auth: b64('fileuser:filepass') },
    'quay.io': { auth: b64('quayuser:quaypass') },
  };

  it('uses credHelpers per registry, before credsStore and auths', async () => {
    const path = await config('helpers', {
      auths,
      credsStore: 'store',
      credHelpers: { 'localhost:5000': 'perreg' },
    });
    const creds = new DockerConfigCredentials({ path, helperPath });
    expect(await creds.get('localhost:5000')).toEqual({ username: 'u1', password: 'p1' });
    expect(await calls()).toContain('perreg localhost:5000');
  });

  it('uses credsStore for every other registry (docker.io as https://index.docker.io/v1/)', async () => {
    const path = await config('store', {
      auths,
      credsStore: 'store',
      credHelpers: { 'localhost:5000': 'perreg' },
    });
    const creds = new DockerConfigCredentials({ path, helperPath });
    expect(await creds.get('docker.io')).toEqual({ identityToken: 'refresh-tok' });
    expect(await creds.get('index.docker.io')).toEqual({ identityToken: 'refresh-tok' });
    expect(await creds.get('ghcr.io')).toEqual({ username: 'gh', password: 'gh-pass' });
    expect(await creds.get('GHCR.io')).toEqual({ username: 'gh', password: 'gh-pass' });
    const seen = await calls();
    // Cached per registry: one run each, whatever alias was asked.
    expect(seen.filter((l) => l === 'store https://index.docker.io/v1/')).toHaveLength(1);
    expect(seen.filter((l) => l === 'store ghcr.io')).toHaveLength(1);
  });

  it('treats "credentials not found" as anonymous, without falling back to auths (as docker does)', async () => {
    const path = await config('notfound', { auths, credsStore: 'store' });
    const creds = new DockerConfigCredentials({ path, helperPath });
    expect(await creds.get('quay.io')).toBeUndefined();
    expect(await creds.get('unknown.example')).toBeUndefined();
  });

  it('uses auths for registries without a helper when no credsStore is set', async () => {
    const path = await config('noStore', { auths, credHelpers: { 'ghcr.io': 'store' } });
    const creds = new DockerConfigCredentials({ path, helperPath });
    expect(await creds.get('quay.io')).toEqual({ username: 'quayuser', password: 'quaypass' });
    expect(await creds.get('ghcr.io')).toEqual({ username: 'gh', password: 'gh-pass' });
  });

  it('fails clearly, naming the helper and never echoing its output', async () => {
    const path = await config('broken', {
      credHelpers: { 'broken.example': 'broken', 'garbage.example': 'garbage', 'slow.example': 'slow' },
    });
    const creds = new DockerConfigCredentials({ path, helperPath, helperTimeoutMs: 300 });
    for (const [registry, reason] of [
      ['broken.example', /docker-credential-broken.*exit status 3/],
      ['garbage.example', /docker-credential-garbage.*not a JSON/],
      ['slow.example', /docker-credential-slow.*no answer within 300 ms/],
    ] as const) {
      const err = await rejectionOf(creds.get(registry));
      expect(err).toBeInstanceOf(StrataError);
      expect((err as StrataError).code).toBe('INVALID_ARGUMENT');
      expect((err as StrataError).retryable).toBe(false);
      expect(err.message).toMatch(reason);
      expect(err.message).toContain(registry);
      expect(err.message).not.toMatch(/leaked-secret/);
      expect(JSON.stringify((err as StrataError).detail)).not.toMatch(/leaked-secret/);
    }
  });

  it('names a missing helper binary', async () => {
    const path = await config('missing', { credsStore: 'nosuch' });
    const creds = new DockerConfigCredentials({ path, helperPath });
    const err = await rejectionOf(creds.get('docker.io'));
    expect((err as StrataError).code).toBe('INVALID_ARGUMENT');
    expect(err.message).toContain('docker-credential-nosuch not found on PATH');
    const bad = await config('badname', { credsStore: '../../bin/sh' });
    const err2 = await rejectionOf(new DockerConfigCredentials({ path: bad, helperPath }).get('x.io'));
    expect(err2.message).toContain('invalid helper name');
  });
});

describe('docker credential helpers end to end', () => {
  const USER = 'helper-user';
  const PASS = 'helper-Pa55';
  let registry: DockerRegistry;
  let client: RegistryClient | undefined;

  beforeAll(async () => {
    registry = await startDockerRegistry({ auth: { username: USER, password: PASS } });
  });

  afterAll(async () => {
    await client?.close();
    await registry?.stop();
  });

  it('pings a Basic-auth registry with credentials from credsStore', async () => {
    await helper(
      'e2e',
      `[ "$url" = '${registry.host}' ] || { ${NOT_FOUND}; }
echo '{"ServerURL":"${registry.host}","Username":"${USER}","Secret":"${PASS}"}'`,
    );
    const path = await config('e2e', { auths: {}, credsStore: 'e2e' });
    client = new RegistryClient({ credentials: new DockerConfigCredentials({ path, helperPath }) });
    await client.ping(registry.host);
    expect(await calls()).toContain(`e2e ${registry.host}`);
  });
});
