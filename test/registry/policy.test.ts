import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RegistryError, StrataError } from '../../src/engine/errors.js';
import {
  abortableSleep,
  Authenticator,
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  defaultDockerConfigPath,
  DockerConfigCredentials,
  errorCodeFor,
  isNetworkError,
  parseContentRange,
  parseLinkNext,
  parseRetryAfter,
  parseTokenResponse,
  parseUploadRangeEnd,
  parseWwwAuthenticate,
  registryErrorFor,
  registryBaseUrl,
  registryScheme,
  retryDelay,
  retryPolicy,
  StaticCredentials,
  type TokenHttp,
} from '../../src/engine/registry/index.js';

describe('retry policy', () => {
  const policy = retryPolicy({ retries: 5, baseDelayMs: 100, maxDelayMs: 1000 });

  it('bounds full-jitter backoff by base·2^(n-1) and the cap', () => {
    expect(backoffDelay(1, policy, () => 0.999999)).toBeLessThan(100);
    expect(backoffDelay(2, policy, () => 0.999999)).toBeLessThan(200);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(200);
    expect(backoffDelay(10, policy, () => 0.999999)).toBeLessThan(1000);
    expect(backoffDelay(10, policy, () => 0.999999)).toBeGreaterThan(990);
    expect(backoffDelay(4, policy, () => 0)).toBe(0);
    for (let n = 1; n < 40; n++) {
      const d = backoffDelay(n, policy);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(1000);
    }
  });

  it('fills defaults and clamps nonsense', () => {
    expect(retryPolicy()).toEqual(DEFAULT_RETRY_POLICY);
    expect(retryPolicy({ retries: -3, baseDelayMs: Number.NaN })).toMatchObject({
      retries: 0,
      baseDelayMs: DEFAULT_RETRY_POLICY.baseDelayMs,
    });
  });

  it('retries only retryable errors, a bounded number of times, honouring Retry-After (capped)', () => {
    const transient = new StrataError('NETWORK', 'reset', { retryable: true });
    const terminal = new RegistryError('MANIFEST_UNKNOWN', 'gone', { status: 404 });
    const limited = new RegistryError('TOO_MANY_REQUESTS', 'slow', {
      status: 429,
      retryable: true,
      detail: { retryAfterMs: 3000 },
    });
    const tooLong = new RegistryError('TOO_MANY_REQUESTS', 'slow', {
      status: 429,
      retryable: true,
      detail: { retryAfterMs: 3_600_000 },
    });
    expect(retryDelay(transient, 1, policy, () => 0.5)).toBe(50);
    expect(retryDelay(transient, 5, policy)).toBeDefined();
    expect(retryDelay(transient, 6, policy)).toBeUndefined();
    expect(retryDelay(terminal, 1, policy)).toBeUndefined();
    expect(retryDelay(new Error('plain'), 1, policy)).toBeUndefined();
    expect(retryDelay(limited, 1, policy)).toBe(3000);
    expect(retryDelay(tooLong, 1, policy)).toBe(DEFAULT_RETRY_POLICY.maxRetryAfterMs);
  });

  it.each([
    ['120', 120_000],
    ['0', 0],
    [' 5 ', 5000],
    ['Wed, 21 Oct 2015 07:28:30 GMT', 30_000],
    ['Wed, 21 Oct 2015 07:27:00 GMT', 0],
    ['-1', undefined],
    ['1.5', undefined],
    ['soon', undefined],
    ['', undefined],
    [undefined, undefined],
  ])('parses Retry-After %j', (value, want) => {
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    expect(parseRetryAfter(value, now)).toBe(want);
  });

  it('sleeps abortably', async () => {
    const ac = new AbortController();
    const p = abortableSleep(10_000, ac.signal);
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ABORTED' });
    await expect(abortableSleep(1)).resolves.toBeUndefined();
  });

  it('classifies transport errors', () => {
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    expect(isNetworkError(reset)).toBe(true);
    expect(isNetworkError(new Error('socket hang up'))).toBe(true);
    expect(isNetworkError(Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }))).toBe(
      true,
    );
    expect(
      isNetworkError(
        new Error('wrapped', { cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) }),
      ),
    ).toBe(true);
    expect(isNetworkError(new Error('bad json'))).toBe(false);
  });
});

describe('WWW-Authenticate parsing', () => {
  it.each([
    [
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
      [
        {
          scheme: 'bearer',
          params: {
            realm: 'https://auth.docker.io/token',
            service: 'registry.docker.io',
            scope: 'repository:library/nginx:pull',
          },
        },
      ],
    ],
    [
      'Bearer realm="https://r/token",scope="repository:a/b:pull,push repository:c:pull"',
      [
        {
          scheme: 'bearer',
          params: { realm: 'https://r/token', scope: 'repository:a/b:pull,push repository:c:pull' },
        },
      ],
    ],
    ['Basic realm="Registry Realm"', [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]],
    [
      'bearer REALM=https://r/t , Service = svc',
      [{ scheme: 'bearer', params: { realm: 'https://r/t', service: 'svc' } }],
    ],
    [
      'Basic realm="a, b", Bearer realm="https://x/token",service="s"',
      [
        { scheme: 'basic', params: { realm: 'a, b' } },
        { scheme: 'bearer', params: { realm: 'https://x/token', service: 's' } },
      ],
    ],
    [
      'Bearer realm="quo\\"ted",error="invalid_token"',
      [{ scheme: 'bearer', params: { realm: 'quo"ted', error: 'invalid_token' } }],
    ],
    [
      'Negotiate abc==, Basic realm="r"',
      [
        { scheme: 'negotiate', params: {} },
        { scheme: 'basic', params: { realm: 'r' } },
      ],
    ],
    ['', []],
  ])('%s', (header, want) => {
    expect(parseWwwAuthenticate(header)).toEqual(want);
  });

  it('never throws on garbage and yields no usable challenge from it', () => {
    for (const g of ['=garbage,"', '"unterminated', ',,,', 'Bearer realm="x', '==']) {
      expect(parseWwwAuthenticate(g).filter((c) => c.params.realm && c.params.realm !== 'x')).toEqual([]);
    }
  });

  it('joins several header values', () => {
    expect(
      parseWwwAuthenticate(['Basic realm="a"', 'Bearer realm="https://b"']).map((c) => c.scheme),
    ).toEqual(['basic', 'bearer']);
  });
});

describe('token responses and the authenticator', () => {
  it('accepts token and/or access_token, defaulting expires_in to 60 s', () => {
    expect(parseTokenResponse('{"token":"t","expires_in":300}', 'r')).toEqual({
      token: 't',
      expiresInS: 300,
    });
    expect(parseTokenResponse('{"access_token":"a"}', 'r')).toEqual({ token: 'a', expiresInS: 60 });
    expect(parseTokenResponse('{"token":"t","access_token":"a","expires_in":-1}', 'r')).toEqual({
      token: 't',
      expiresInS: 60,
    });
    expect(() => parseTokenResponse('{}', 'r')).toThrow(RegistryError);
    expect(() => parseTokenResponse('not json', 'r')).toThrow(/without a token/);
  });

  it('repeats scope params, sends Basic creds to the realm, caches per scope set, refetches a refused token', async () => {
    const seen: { url: URL; auth?: string }[] = [];
    let n = 0;
    const http: TokenHttp = async (req) => {
      seen.push({ url: req.url, ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
      return { status: 200, body: JSON.stringify({ token: `tok${++n}` }) };
    };
    const auth = new Authenticator({
      http,
      credentials: new StaticCredentials({ 'reg.example': { username: 'u', password: 'p' } }),
    });
    const challenge = 'Bearer realm="https://auth.example/token",service="reg"';
    const scopes = ['repository:b:pull', 'repository:a:pull,push'];
    expect(await auth.authorize('reg.example', scopes)).toBeUndefined();
    const h1 = await auth.onUnauthorized('reg.example', scopes, challenge, undefined);
    expect(h1).toBe('Bearer tok1');
    expect(seen[0]!.url.searchParams.getAll('scope')).toEqual([
      'repository:a:pull,push',
      'repository:b:pull',
    ]);
    expect(seen[0]!.url.searchParams.get('service')).toBe('reg');
    expect(seen[0]!.auth).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`);
    expect(await auth.authorize('reg.example', [...scopes].reverse())).toBe('Bearer tok1');
    expect(await auth.authorize('reg.example', ['repository:a:pull'])).toBe('Bearer tok2');
    expect(await auth.onUnauthorized('reg.example', scopes, challenge, 'Bearer tok1')).toBe('Bearer tok3');
    expect(seen).toHaveLength(3);
  });

  it('gives up on Basic when the same credentials were refused', async () => {
    const http: TokenHttp = async () => ({ status: 500, body: '' });
    const auth = new Authenticator({
      http,
      credentials: new StaticCredentials({ r: { username: 'u', password: 'p' } }),
    });
    const h = await auth.onUnauthorized('r', [], 'Basic realm="x"', undefined);
    expect(h).toMatch(/^Basic /);
    expect(await auth.onUnauthorized('r', [], 'Basic realm="x"', h)).toBeUndefined();
    const anon = new Authenticator({ http });
    expect(await anon.onUnauthorized('r', [], 'Basic realm="x"', undefined)).toBeUndefined();
  });
});

describe('wire helpers', () => {
  it.each([
    ['</v2/a/tags/list?last=b&n=2>; rel="next"', '/v2/a/tags/list?last=b&n=2'],
    ['<https://r/v2/a/tags/list?n=2&last=c>;rel=next', 'https://r/v2/a/tags/list?n=2&last=c'],
    ['</x>; rel="prev", </y>; rel="next"', '/y'],
    ['</x>; rel="prev"', undefined],
    [undefined, undefined],
  ])('Link %j', (header, want) => {
    expect(parseLinkNext(header)).toBe(want);
  });

  it.each([
    ['localhost:5000', [], 'http'],
    ['localhost', [], 'http'],
    ['127.0.0.1:5000', [], 'http'],
    ['127.12.0.3', [], 'http'],
    ['[::1]:5000', [], 'http'],
    ['registry-1.docker.io', [], 'https'],
    ['myreg.local:5000', ['myreg.local:5000'], 'http'],
    ['myreg.local:5000', ['myreg.local'], 'http'],
    ['myreg.local:5000', ['http://myreg.local:5000/'], 'http'],
    ['myreg.local:5000', ['other:5000'], 'https'],
    ['128.0.0.1', [], 'https'],
  ] as const)('scheme of %s with %j is %s', (host, insecure, want) => {
    expect(registryScheme(host, insecure)).toBe(want);
  });

  it('maps docker.io to its API host and picks the scheme', () => {
    expect(registryBaseUrl('docker.io')).toBe('https://registry-1.docker.io');
    expect(registryBaseUrl('localhost:5000')).toBe('http://localhost:5000');
    expect(registryBaseUrl('ghcr.io')).toBe('https://ghcr.io');
    expect(registryBaseUrl('reg.lan:5000', ['reg.lan:5000'])).toBe('http://reg.lan:5000');
  });

  it('parses upload Range and Content-Range', () => {
    expect(parseUploadRangeEnd('0-65535')).toBe(65535);
    expect(parseUploadRangeEnd('bytes=0-9')).toBe(9);
    expect(parseUploadRangeEnd('junk')).toBeUndefined();
    expect(parseContentRange('bytes 100-199/200')).toEqual({ start: 100, end: 199, total: 200 });
    expect(parseContentRange('bytes 100-199/*')).toEqual({ start: 100, end: 199 });
    expect(parseContentRange('bytes 5-1/9')).toBeUndefined();
  });
});

describe('registry errors', () => {
  it('maps statuses and OCI codes, naming operation and subject', () => {
    const ctx = {
      op: 'pull',
      subject: 'docker.io/library/nginx:latest',
      notFound: 'MANIFEST_UNKNOWN' as const,
    };
    const e = registryErrorFor(
      ctx,
      404,
      '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"latest"}}]}',
    );
    expect(e.message).toBe(
      'pull docker.io/library/nginx:latest: manifest unknown (MANIFEST_UNKNOWN, HTTP 404)',
    );
    expect(e).toMatchObject({
      code: 'MANIFEST_UNKNOWN',
      status: 404,
      ociCode: 'MANIFEST_UNKNOWN',
      retryable: false,
    });
    expect(registryErrorFor(ctx, 404, '')).toMatchObject({
      code: 'MANIFEST_UNKNOWN',
      message: 'pull docker.io/library/nginx:latest: not found (HTTP 404)',
    });
    expect(registryErrorFor(ctx, 404, '{"errors":[{"code":"NAME_UNKNOWN"}]}').code).toBe('NAME_UNKNOWN');
    expect(registryErrorFor(ctx, 429, '{"errors":[{"code":"TOOMANYREQUESTS","message":"x"}]}')).toMatchObject(
      { code: 'TOO_MANY_REQUESTS', retryable: true },
    );
    expect(registryErrorFor(ctx, 503, '<html>')).toMatchObject({ code: 'REGISTRY_ERROR', retryable: true });
    expect(registryErrorFor(ctx, 403, '')).toMatchObject({ code: 'DENIED', retryable: false });
    expect(
      registryErrorFor(ctx, 400, '{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}'),
    ).toMatchObject({ code: 'REGISTRY_ERROR', ociCode: 'DIGEST_INVALID' });
    expect(errorCodeFor(401, 'DENIED')).toBe('UNAUTHORIZED');
    expect(errorCodeFor(404, undefined)).toBe('REGISTRY_ERROR');
  });
});

describe('credentials', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('computes the default docker config path from a passed environment', () => {
    expect(defaultDockerConfigPath({ DOCKER_CONFIG: '/etc/dc' }, '/home/u')).toBe('/etc/dc/config.json');
    expect(defaultDockerConfigPath({}, '/home/u')).toBe('/home/u/.docker/config.json');
  });

  it('reads auths keyed by host or URL, base64 auth, username/password and identitytoken', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'strata-creds-'));
    dirs.push(dir);
    const path = join(dir, 'config.json');
    await writeFile(
      path,
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hub:pass').toString('base64') },
          'localhost:5000': { username: 'lu', password: 'lp' },
          'https://ghcr.io': {
            auth: Buffer.from('<token>:').toString('base64'),
            identitytoken: 'refresh-me',
          },
          'empty.example': {},
        },
      }),
    );
    const creds = new DockerConfigCredentials({ path });
    expect(await creds.get('docker.io')).toEqual({ username: 'hubuser', password: 'hub:pass' });
    expect(await creds.get('localhost:5000')).toEqual({ username: 'lu', password: 'lp' });
    expect(await creds.get('ghcr.io')).toEqual({ identityToken: 'refresh-me' });
    expect(await creds.get('empty.example')).toBeUndefined();
    expect(await creds.get('quay.io')).toBeUndefined();
    expect(
      await new DockerConfigCredentials({ path: join(dir, 'missing.json') }).get('docker.io'),
    ).toBeUndefined();
    await writeFile(join(dir, 'bad.json'), '{"auths": {"x": {"auth": "c2VjcmV0"}');
    const err = await new DockerConfigCredentials({ path: join(dir, 'bad.json') })
      .get('x')
      .catch((e: Error) => e);
    expect((err as StrataError).code).toBe('INVALID_ARGUMENT');
    expect((err as Error).message).not.toContain('c2VjcmV0');
  });

  it('normalizes static credential keys', async () => {
    const creds = new StaticCredentials({ 'https://index.docker.io/v1/': { username: 'a', password: 'b' } });
    expect(await creds.get('docker.io')).toEqual({ username: 'a', password: 'b' });
  });
});
