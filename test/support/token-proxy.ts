/**
 * A Bearer-token auth server for tests, in the shape of the distribution token spec: one HTTP server that is both
 * the token realm (`GET /token?service=&scope=&scope=`) and a reverse proxy in front of an upstream registry. The
 * proxy answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` unless the request carries a valid
 * token covering the scope it needs (pull for GET/HEAD, push for the rest, plus pull on `from` for a mount).
 * Bodies are streamed; nothing but `Authorization` is changed. Requests are recorded for assertions.
 */
import { randomBytes } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/** A token realm request as recorded. */
export interface TokenRequestRecord {
  readonly service: string | undefined;
  readonly scopes: readonly string[];
  /** Whether Basic credentials were sent (their value is never recorded). */
  readonly withCredentials: boolean;
  readonly status: number;
  readonly method: string;
}

/** A proxied registry request as recorded. */
export interface ProxyRequestRecord {
  readonly method: string;
  readonly path: string;
  /** 401 when the proxy refused it, else the upstream status. */
  readonly status: number;
  readonly hadToken: boolean;
}

/** Options of {@link startTokenProxy}. */
export interface TokenProxyOptions {
  /** `http://host:port` of the upstream registry (no auth). */
  readonly upstream: string;
  /** Require these Basic credentials at the realm; anonymous tokens are issued when absent. */
  readonly credentials?: { readonly username: string; readonly password: string };
  /** Token lifetime announced in `expires_in` (seconds). Default 300. */
  readonly expiresIn?: number;
  /** The `service` of the challenge. Default `strata-token-proxy`. */
  readonly service?: string;
  /** Which actions to grant for a requested `repository:NAME:ACTIONS` scope. Default: all requested. */
  readonly grant?: (repository: string, actions: readonly string[]) => readonly string[];
  /** Answer with `access_token` only (OAuth2 style) instead of both `token` and `access_token`. */
  readonly accessTokenOnly?: boolean;
}

/** A running token proxy. */
export interface TokenProxy {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly tokenRequests: TokenRequestRecord[];
  readonly requests: ProxyRequestRecord[];
  /** Invalidates every issued token (the next request with one gets a 401). */
  revokeAll(): void;
  stop(): Promise<void>;
}

interface Grant {
  readonly access: ReadonlyMap<string, ReadonlySet<string>>;
  readonly expiresAt: number;
}

/** The repository and actions a registry request needs; undefined for `/v2/` (any valid token will do). */
export function requiredAccess(
  method: string,
  url: URL,
): { repo: string; actions: string[]; from?: string } | undefined {
  const m = /^\/v2\/(.+?)\/(manifests|blobs|tags|referrers)(\/|$)/.exec(url.pathname);
  if (!m) return undefined;
  const repo = m[1] as string;
  const read = method === 'GET' || method === 'HEAD';
  const actions = read ? ['pull'] : ['push'];
  const from = method === 'POST' ? url.searchParams.get('from') : null;
  return from && url.searchParams.get('mount') ? { repo, actions, from } : { repo, actions };
}

/** Starts the token proxy on a free 127.0.0.1 port. */
export async function startTokenProxy(options: TokenProxyOptions): Promise<TokenProxy> {
  const service = options.service ?? 'strata-token-proxy';
  const expiresIn = options.expiresIn ?? 300;
  const tokens = new Map<string, Grant>();
  const tokenRequests: TokenRequestRecord[] = [];
  const requests: ProxyRequestRecord[] = [];
  const upstream = new URL(options.upstream);
  let base = '';

  const handleToken = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    const auth = req.headers.authorization;
    const record = (status: number): void => {
      tokenRequests.push({
        service: url.searchParams.get('service') ?? undefined,
        scopes,
        withCredentials: !!auth,
        status,
        method: req.method ?? '',
      });
    };
    if (options.credentials) {
      const want = `Basic ${Buffer.from(`${options.credentials.username}:${options.credentials.password}`).toString('base64')}`;
      if (auth !== want) {
        record(401);
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
    }
    const access = new Map<string, Set<string>>();
    for (const scope of scopes) {
      const parts = scope.split(':');
      if (parts.length < 3 || parts[0] !== 'repository') continue;
      const actions = (parts[parts.length - 1] as string).split(',');
      const repo = parts.slice(1, -1).join(':');
      const granted = options.grant ? options.grant(repo, actions) : actions;
      const set = access.get(repo) ?? new Set<string>();
      for (const a of granted) set.add(a);
      access.set(repo, set);
    }
    const token = randomBytes(24).toString('base64url');
    tokens.set(token, { access, expiresAt: Date.now() + expiresIn * 1000 });
    record(200);
    res.writeHead(200, { 'content-type': 'application/json' });
    const body = options.accessTokenOnly
      ? { access_token: token, expires_in: expiresIn }
      : { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() };
    res.end(JSON.stringify(body));
  };

  const covers = (grant: Grant | undefined, need: ReturnType<typeof requiredAccess>): boolean => {
    if (!grant || grant.expiresAt < Date.now()) return false;
    if (!need) return true;
    const have = grant.access.get(need.repo);
    if (!need.actions.every((a) => have?.has(a))) return false;
    if (need.from && !grant.access.get(need.from)?.has('pull')) return false;
    return true;
  };

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', base);
    if (url.pathname === '/token') {
      req.resume();
      handleToken(req, res, url);
      return;
    }
    const method = req.method ?? 'GET';
    const need = requiredAccess(method, url);
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    if (!covers(token === undefined ? undefined : tokens.get(token), need)) {
      requests.push({ method, path: url.pathname + url.search, status: 401, hadToken: token !== undefined });
      req.resume();
      const scope = need
        ? [
            `repository:${need.repo}:${method === 'GET' || method === 'HEAD' ? 'pull' : 'pull,push'}`,
            ...(need.from ? [`repository:${need.from}:pull`] : []),
          ].join(' ')
        : undefined;
      const challenge = `Bearer realm="${base}/token",service="${service}"${scope ? `,scope="${scope}"` : ''}`;
      res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    const headers = { ...req.headers };
    delete headers.authorization;
    const up = httpRequest(
      { host: upstream.hostname, port: upstream.port, method, path: req.url, headers },
      (upRes) => {
        requests.push({
          method,
          path: url.pathname + url.search,
          status: upRes.statusCode ?? 0,
          hadToken: true,
        });
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.destroy();
    });
    req.on('error', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
  return {
    url: base,
    host: `127.0.0.1:${port}`,
    tokenRequests,
    requests,
    revokeAll: () => tokens.clear(),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
