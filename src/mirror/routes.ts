import { DistributionError } from './errors.js';

/** One recognised Distribution API endpoint, with its path parameters decoded (not yet validated beyond the name). */
export type Route =
  | { readonly kind: 'base' }
  | { readonly kind: 'catalog' }
  | { readonly kind: 'uploadStart'; readonly name: string }
  | { readonly kind: 'upload'; readonly name: string; readonly uuid: string }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: string }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'tags'; readonly name: string }
  | { readonly kind: 'referrers'; readonly name: string; readonly digest: string };

/** The methods each route kind accepts; anything else answers 405 with `Allow`. */
export const ROUTE_METHODS: Record<Route['kind'], readonly string[]> = {
  base: ['GET', 'HEAD'],
  catalog: ['GET', 'HEAD'],
  uploadStart: ['POST'],
  upload: ['GET', 'PATCH', 'PUT', 'DELETE'],
  blob: ['GET', 'HEAD', 'DELETE'],
  manifest: ['GET', 'HEAD', 'PUT', 'DELETE'],
  tags: ['GET', 'HEAD'],
  referrers: ['GET', 'HEAD'],
};

// The greedy `(.+)` makes each suffix match its last occurrence, so repository names may themselves contain
// components such as `blobs` or `manifests`. Order matters: upload routes before the plain blob route.
const PATTERNS: ReadonlyArray<[RegExp, (m: string[]) => Route]> = [
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploadStart', name: m[1]! })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: 'upload', name: m[1]!, uuid: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: 'blob', name: m[1]!, digest: m[2]! })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: 'manifest', name: m[1]!, reference: m[2]! })],
  [/^\/v2\/(.+)\/tags\/list\/?$/, (m) => ({ kind: 'tags', name: m[1]! })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: 'referrers', name: m[1]!, digest: m[2]! })],
];

/** Maximum length of a repository name (as distribution enforces). */
export const MAX_REPOSITORY_NAME_LENGTH = 255;

// distribution/reference: path-component := alpha-numeric (separator alpha-numeric)*, separators `.`, `_`, `__`, `-+`.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;

/** True when `name` is a valid repository name (components of the distribution grammar separated by `/`). */
export function isValidRepositoryName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_REPOSITORY_NAME_LENGTH) return false;
  return name.split('/').every((c) => COMPONENT.test(c));
}

/** True when `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`). */
export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/** Throws NAME_INVALID unless `name` is a valid repository name. */
export function assertRepositoryName(name: string): void {
  if (!isValidRepositoryName(name)) {
    throw new DistributionError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`, {
      detail: { name },
    });
  }
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * Matches a request path (without query) to a route; undefined when no endpoint has this shape. Repository names
 * are validated here (NAME_INVALID); digests, tags and upload ids are validated by the handlers. `mapName`, when
 * given, replaces the decoded name first (a mirror's routing); it must throw NAME_INVALID itself for names it
 * cannot map, and whatever it returns is still checked against the grammar.
 */
export function matchRoute(pathname: string, mapName?: (name: string) => string): Route | undefined {
  if (pathname === '/v2' || pathname === '/v2/') return { kind: 'base' };
  if (pathname === '/v2/_catalog') return { kind: 'catalog' };
  for (const [re, make] of PATTERNS) {
    const m = re.exec(pathname);
    if (!m) continue;
    const route = make(m.map((s) => decode(s)));
    if (!('name' in route)) return route;
    if (mapName) {
      // Dot segments never reach the mapper: they must not be able to name another repository through it.
      if (route.name.split('/').some((c) => c === '.' || c === '..')) assertRepositoryName(route.name);
      const mapped = { ...route, name: mapName(route.name) };
      assertRepositoryName(mapped.name);
      return mapped;
    }
    assertRepositoryName(route.name);
    return route;
  }
  return undefined;
}
