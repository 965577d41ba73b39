/**
 * Registry authentication: `WWW-Authenticate` parsing, Basic auth, and the Bearer token flow of the distribution
 * token spec (realm/service/scope, repeated `scope` parameters, `token`/`access_token`, `expires_in`), with a token
 * cache per (registry, scope set). Secrets never appear in errors or logs.
 */
import { RegistryError } from '../errors.js';
import type { CredentialProvider, Credentials } from './credentials.js';
import { registryErrorFor } from './errors.js';

/** One challenge of a `WWW-Authenticate` header; scheme and parameter names are lowercase. */
export interface AuthChallenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

const TOKEN_CHAR = /[^\s=,"]/;

/**
 * Parses a `WWW-Authenticate` header (RFC 7235: several challenges, each with comma-separated `name=value`
 * parameters, values tokens or quoted strings with backslash escapes and commas inside). Never throws; garbage
 * yields fewer challenges. Several header values may be given as an array.
 */
export function parseWwwAuthenticate(header: string | readonly string[] | undefined): AuthChallenge[] {
  if (header === undefined) return [];
  const s = typeof header === 'string' ? header : header.join(', ');
  const out: { scheme: string; params: Record<string, string> }[] = [];
  let cur: { scheme: string; params: Record<string, string> } | undefined;
  let i = 0;
  const n = s.length;
  const skip = (chars: RegExp): void => {
    while (i < n && chars.test(s[i] as string)) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TOKEN_CHAR.test(s[i] as string)) i++;
    return s.slice(start, i);
  };
  while (i < n) {
    skip(/[\s,]/);
    if (i >= n) break;
    const token = readToken();
    if (token === '') {
      // A stray quote or '=': skip one character and go on.
      i++;
      continue;
    }
    skip(/[ \t]/);
    if (s[i] === '=' && cur) {
      i++;
      // token68 padding (`abc==`): more '=' directly after; treat the whole thing as opaque and skip it.
      if (s[i] === '=') {
        skip(/=/);
        continue;
      }
      skip(/[ \t]/);
      let value: string;
      if (s[i] === '"') {
        i++;
        let v = '';
        while (i < n && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < n) i++;
          v += s[i];
          i++;
        }
        i++; // closing quote
        value = v;
      } else {
        const start = i;
        while (i < n && s[i] !== ',' && !/\s/.test(s[i] as string)) i++;
        value = s.slice(start, i);
      }
      cur.params[token.toLowerCase()] = value;
    } else if (s[i] === '=') {
      // A parameter before any scheme: ignore it.
      i++;
      if (s[i] === '"') {
        i++;
        while (i < n && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
        i++;
      } else {
        while (i < n && s[i] !== ',') i++;
      }
    } else {
      cur = { scheme: token.toLowerCase(), params: {} };
      out.push(cur);
    }
  }
  return out;
}

/** `repository:NAME:pull` or `repository:NAME:pull,push`. */
export function repositoryScope(repository: string, actions: readonly ('pull' | 'push')[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

/** A minimal HTTP exchange used to reach token realms (the client supplies it, with its agent and retries). */
export type TokenHttp = (
  req: { method: 'GET' | 'POST'; url: URL; headers: Record<string, string>; body?: string },
  signal: AbortSignal | undefined,
) => Promise<{ status: number; body: string }>;

/** Options of an {@link Authenticator}. */
export interface AuthenticatorOptions {
  readonly credentials?: CredentialProvider;
  readonly http: TokenHttp;
  /** Clock in ms (injectable for tests). */
  readonly now?: () => number;
  /** OAuth2 client id sent with identity-token exchanges. */
  readonly clientId?: string;
}

interface CachedToken {
  readonly header: string;
  readonly expiresAt: number;
  readonly refreshAt: number;
}

/** Default token lifetime when the realm does not say (token spec: 60 s). */
export const DEFAULT_TOKEN_LIFETIME_S = 60;

/** The token and lifetime from a token realm response body; throws UNAUTHORIZED when it holds no token. */
export function parseTokenResponse(body: string, registry: string): { token: string; expiresInS: number } {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  const o = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  const token =
    typeof o.token === 'string' && o.token !== ''
      ? o.token
      : typeof o.access_token === 'string' && o.access_token !== ''
        ? o.access_token
        : undefined;
  if (token === undefined) {
    throw new RegistryError('UNAUTHORIZED', `auth ${registry}: token realm answered without a token`);
  }
  const exp =
    typeof o.expires_in === 'number' && Number.isFinite(o.expires_in) && o.expires_in > 0
      ? o.expires_in
      : undefined;
  return { token, expiresInS: exp ?? DEFAULT_TOKEN_LIFETIME_S };
}

function basicHeader(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

function isBasic(c: Credentials | undefined): c is { username: string; password: string } {
  return c !== undefined && 'username' in c;
}

/**
 * Produces `Authorization` headers for registry requests. It learns each registry's challenge from its first 401,
 * then authorizes later requests up front: Basic from the credentials, or a Bearer token from the realm, cached
 * per (registry, service, scope set) until shortly before it expires. One instance per client; no global state.
 */
export class Authenticator {
  private readonly credentials: CredentialProvider | undefined;
  private readonly http: TokenHttp;
  private readonly now: () => number;
  private readonly clientId: string;
  private readonly challenges = new Map<string, AuthChallenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();

  constructor(options: AuthenticatorOptions) {
    this.credentials = options.credentials;
    this.http = options.http;
    this.now = options.now ?? Date.now;
    this.clientId = options.clientId ?? 'strata';
  }

  /** The header to send up front for `scopes` on `registry`, or undefined while no challenge is known. */
  async authorize(
    registry: string,
    scopes: readonly string[],
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const ch = this.challenges.get(registry);
    if (!ch) return undefined;
    return this.headerFor(registry, ch, scopes, undefined, signal);
  }

  /**
   * Handles a 401: remembers the challenge, drops the token that failed (`sent`), and returns a new header to retry
   * with — or undefined when there is nothing new to try (no usable challenge, no credentials for Basic, or the same
   * Basic credentials already failed). Throws when the token realm refuses.
   */
  async onUnauthorized(
    registry: string,
    scopes: readonly string[],
    wwwAuthenticate: string | readonly string[] | undefined,
    sent: string | undefined,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const all = parseWwwAuthenticate(wwwAuthenticate);
    const ch =
      all.find((c) => c.scheme === 'bearer' && c.params.realm) ?? all.find((c) => c.scheme === 'basic');
    if (!ch) return undefined;
    this.challenges.set(registry, ch);
    const header = await this.headerFor(registry, ch, scopes, sent, signal);
    return header === sent ? undefined : header;
  }

  /** Forgets every cached token (e.g. after credentials changed). */
  clear(): void {
    this.tokens.clear();
    this.challenges.clear();
  }

  private async headerFor(
    registry: string,
    ch: AuthChallenge,
    scopes: readonly string[],
    failed: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const creds = await this.credentials?.get(registry);
    if (ch.scheme === 'basic') return isBasic(creds) ? basicHeader(creds) : undefined;
    const sorted = [...new Set(scopes)].sort();
    const service = ch.params.service ?? '';
    const key = `${registry}\n${ch.params.realm ?? ''}\n${service}\n${sorted.join(' ')}`;
    const cached = this.tokens.get(key);
    const now = this.now();
    if (cached && (cached.header === failed || now >= cached.refreshAt)) this.tokens.delete(key);
    else if (cached) return cached.header;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(registry, ch, sorted, creds, signal);
      this.pending.set(key, p);
      const cleanup = (): void => {
        if (this.pending.get(key) === p) this.pending.delete(key);
      };
      p.then(cleanup, cleanup);
    }
    const tok = await p;
    this.tokens.set(key, tok);
    return tok.header;
  }

  private async fetchToken(
    registry: string,
    ch: AuthChallenge,
    scopes: readonly string[],
    creds: Credentials | undefined,
    signal: AbortSignal | undefined,
  ): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(ch.params.realm ?? '');
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      throw new RegistryError(
        'UNAUTHORIZED',
        `auth ${registry}: the registry's token realm is not a valid http(s) URL`,
      );
    }
    const service = ch.params.service;
    const started = this.now();
    let res: { status: number; body: string };
    if (creds && 'identityToken' in creds) {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: creds.identityToken,
        client_id: this.clientId,
      });
      if (service) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await this.http(
        {
          method: 'POST',
          url,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: form.toString(),
        },
        signal,
      );
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (isBasic(creds)) headers.authorization = basicHeader(creds);
      res = await this.http({ method: 'GET', url, headers }, signal);
    }
    if (res.status < 200 || res.status > 299) {
      // The body of a realm error may echo request details; only its OCI code/message are used.
      throw registryErrorFor(
        { op: 'auth', subject: `${registry} (token realm ${url.host})` },
        res.status,
        res.body,
      );
    }
    const { token, expiresInS } = parseTokenResponse(res.body, registry);
    const lifetime = expiresInS * 1000;
    const margin = Math.min(10_000, lifetime / 10);
    return {
      header: `Bearer ${token}`,
      expiresAt: started + lifetime,
      refreshAt: started + lifetime - margin,
    };
  }
}
