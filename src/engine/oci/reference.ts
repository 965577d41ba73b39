import { TerminalError } from '../errors.js';
import { parseDigest, type Digest } from './digest.js';

/** The registry that unqualified names refer to, as docker names it. */
export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's Distribution API actually lives. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const DEFAULT_TAG = 'latest';
const MAX_NAME_LENGTH = 255;

// Grammar of distribution/reference (regexp.go), written out so errors can say which part is wrong.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DOMAIN_NAME =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*$/;
const IPV6 = /^\[[a-fA-F0-9:]+\]$/;

/** A fully qualified image reference: registry, repository, and a tag and/or a digest. Immutable. */
export interface ImageReference {
  /** Registry host as users write it (`docker.io`, `localhost:5000`). */
  readonly registry: string;
  /** Repository path inside the registry (`library/nginx`). */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

function bad(input: string, why: string): TerminalError {
  return new TerminalError('INVALID_REFERENCE', `invalid reference ${JSON.stringify(input)}: ${why}`);
}

function validDomain(domain: string): boolean {
  const colon = domain.lastIndexOf(':');
  let host = domain;
  if (colon > domain.lastIndexOf(']')) {
    const port = domain.slice(colon + 1);
    if (!/^\d+$/.test(port)) return false;
    host = domain.slice(0, colon);
  }
  return DOMAIN_NAME.test(host) || IPV6.test(host);
}

/**
 * Parses a reference exactly as docker does: `nginx` → `docker.io/library/nginx:latest`; a first component with
 * a dot, a colon or `localhost` is a registry host; `name@sha256:…` and `name:tag@sha256:…` are accepted.
 * With `defaultTag: false`, a reference without tag or digest keeps neither.
 */
export function parseReference(input: string, opts: { defaultTag?: boolean } = {}): ImageReference {
  if (input === '') throw bad(input, 'empty');
  if (input !== input.trim()) throw bad(input, 'contains whitespace');
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch (err) {
      throw bad(input, (err as Error).message);
    }
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `invalid tag ${JSON.stringify(tag)}`);
  }
  if (rest === '') throw bad(input, 'missing repository name');
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (/[.:]/.test(first) || first === 'localhost' || first.toLowerCase() !== first) {
      registry = first;
      path = rest.slice(slash + 1);
      if (!validDomain(registry)) throw bad(input, `invalid registry host ${JSON.stringify(registry)}`);
    }
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !path.includes('/')) path = `library/${path}`;
  if (path.toLowerCase() !== path) throw bad(input, 'repository name must be lowercase');
  for (const c of path.split('/')) {
    if (!COMPONENT.test(c)) throw bad(input, `invalid repository path component ${JSON.stringify(c)}`);
  }
  if (registry.length + 1 + path.length > MAX_NAME_LENGTH)
    throw bad(input, `repository name longer than ${MAX_NAME_LENGTH} characters`);
  if (tag === undefined && digest === undefined && opts.defaultTag !== false) tag = DEFAULT_TAG;
  const ref: ImageReference = { registry, repository: path };
  return { ...ref, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `registry/repository`, the canonical repository name (`docker.io/library/nginx`). */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The canonical string form: `docker.io/library/nginx:latest`, `host/repo@sha256:…`, or both. */
export function formatReference(ref: ImageReference): string {
  return `${repositoryName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The short form docker prints (`nginx:latest`, `user/app:1`), dropping `docker.io/` and `library/`. */
export function familiarName(ref: ImageReference): string {
  let name = repositoryName(ref);
  if (ref.registry === DOCKER_HUB)
    name = ref.repository.startsWith('library/') ? ref.repository.slice(8) : ref.repository;
  return `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** What to ask the registry for: the digest when there is one (it pins the content), else the tag. */
export function manifestIdentifier(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

/** A copy of `ref` with another tag and no digest. */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG.test(tag)) throw bad(tag, 'invalid tag');
  return { registry: ref.registry, repository: ref.repository, tag };
}

/** A copy of `ref` pinned to a digest, keeping its tag for display. */
export function withDigest(ref: ImageReference, digest: Digest): ImageReference {
  return { ...ref, digest };
}

/** The host to contact for a registry's Distribution API (`docker.io` → `registry-1.docker.io`). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}
