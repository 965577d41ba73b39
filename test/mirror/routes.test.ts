import { describe, expect, it } from 'vitest';
import { DistributionError, toHttpError } from '../../src/mirror/errors.js';
import { paginate, parseContentRange, parseRange } from '../../src/mirror/http.js';
import { isValidRepositoryName, matchRoute } from '../../src/mirror/routes.js';
import { TerminalError, VerificationError } from '../../src/engine/errors.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('routes', () => {
  it.each([
    ['/v2/', { kind: 'base' }],
    ['/v2/_catalog', { kind: 'catalog' }],
    ['/v2/team/app/blobs/uploads/', { kind: 'uploadStart', name: 'team/app' }],
    ['/v2/team/app/blobs/uploads/abc', { kind: 'upload', name: 'team/app', uuid: 'abc' }],
    [`/v2/team/app/blobs/${D}`, { kind: 'blob', name: 'team/app', digest: D }],
    [`/v2/team/app/blobs/${encodeURIComponent(D)}`, { kind: 'blob', name: 'team/app', digest: D }],
    ['/v2/a/b/c/manifests/v1', { kind: 'manifest', name: 'a/b/c', reference: 'v1' }],
    ['/v2/a/tags/list', { kind: 'tags', name: 'a' }],
    [`/v2/a/referrers/${D}`, { kind: 'referrers', name: 'a', digest: D }],
    // Names containing endpoint words: the suffix is matched at its last occurrence.
    ['/v2/x/blobs/uploads/blobs/uploads/', { kind: 'uploadStart', name: 'x/blobs/uploads' }],
    ['/v2/x/manifests/blobs/uploads/u', { kind: 'upload', name: 'x/manifests', uuid: 'u' }],
    [`/v2/x/blobs/manifests/${D}`, { kind: 'manifest', name: 'x/blobs', reference: D }],
    ['/v2/x/tags/list/tags/list', { kind: 'tags', name: 'x/tags/list' }],
  ])('%s', (path, route) => {
    expect(matchRoute(path)).toEqual(route);
  });

  it('answers undefined for other paths and NAME_INVALID for bad names', () => {
    expect(matchRoute('/v2/team/app')).toBeUndefined();
    expect(matchRoute('/v1/team/app/tags/list')).toBeUndefined();
    for (const bad of [
      '/v2/Team/tags/list',
      '/v2/a//b/tags/list',
      '/v2/../etc/tags/list',
      '/v2/-a/tags/list',
      '/v2/a_/tags/list',
    ]) {
      expect(() => matchRoute(bad), bad).toThrow(DistributionError);
    }
  });

  it('validates repository names with the distribution grammar', () => {
    for (const ok of ['a', 'a/b', 'a.b/c_d/e__f/g-h/i--j', 'docker.io/library/nginx', '0/1/2'])
      expect(isValidRepositoryName(ok), ok).toBe(true);
    for (const bad of ['', 'A', 'a/', '/a', 'a..b', 'a___b', '_a', 'a:b', `${'a'.repeat(256)}`])
      expect(isValidRepositoryName(bad), bad).toBe(false);
  });
});

describe('http helpers', () => {
  it.each([
    [undefined, 100, { kind: 'full' }],
    ['bytes=0-9', 100, { kind: 'partial', start: 0, end: 9 }],
    ['bytes=90-', 100, { kind: 'partial', start: 90, end: 99 }],
    ['bytes=90-200', 100, { kind: 'partial', start: 90, end: 99 }],
    ['bytes=-10', 100, { kind: 'partial', start: 90, end: 99 }],
    ['bytes=-1000', 100, { kind: 'partial', start: 0, end: 99 }],
    ['bytes=100-', 100, { kind: 'unsatisfiable' }],
    ['bytes=-0', 100, { kind: 'unsatisfiable' }],
    ['bytes=0-0', 0, { kind: 'unsatisfiable' }],
    ['bytes=5-1', 100, { kind: 'full' }],
    ['bytes=0-1,5-6', 100, { kind: 'full' }],
    ['items=0-1', 100, { kind: 'full' }],
  ])('Range %s of %i bytes', (header, size, want) => {
    expect(parseRange(header, size)).toEqual(want);
  });

  it('parses upload Content-Range forms and rejects malformed ones', () => {
    expect(parseContentRange(undefined)).toBeUndefined();
    expect(parseContentRange('0-99')).toEqual({ start: 0, end: 99 });
    expect(parseContentRange('bytes 100-199/*')).toEqual({ start: 100, end: 199 });
    expect(parseContentRange('bytes=5-9')).toEqual({ start: 5, end: 9 });
    for (const bad of ['', '9-5', 'a-b', '5', '-5'])
      expect(() => parseContentRange(bad), bad).toThrow(DistributionError);
  });

  it('paginates after `last`, at most `n`, telling whether more remain', () => {
    const all = ['a', 'b', 'c', 'd', 'e'];
    expect(paginate(all, 2, null)).toEqual({ page: ['a', 'b'], more: true });
    expect(paginate(all, 2, 'b')).toEqual({ page: ['c', 'd'], more: true });
    expect(paginate(all, 2, 'c')).toEqual({ page: ['d', 'e'], more: false });
    expect(paginate(all, undefined, 'd')).toEqual({ page: ['e'], more: false });
    expect(paginate(all, 0, null)).toEqual({ page: [], more: false });
  });
});

describe('error mapping', () => {
  it('maps engine errors to wire codes and hides everything else', () => {
    expect(toHttpError(new VerificationError('DIGEST_MISMATCH', 'x'))).toMatchObject({
      code: 'DIGEST_INVALID',
      status: 400,
    });
    expect(toHttpError(new TerminalError('BLOB_UNKNOWN', 'x'))).toMatchObject({
      code: 'BLOB_UNKNOWN',
      status: 404,
    });
    expect(toHttpError(new TerminalError('TOO_MANY_REQUESTS', 'x'))).toMatchObject({
      code: 'TOOMANYREQUESTS',
      status: 429,
    });
    expect(toHttpError(new TerminalError('UNSUPPORTED_MEDIA_TYPE', 'x'))).toMatchObject({
      code: 'UNSUPPORTED',
      status: 415,
    });
    expect(toHttpError(new TerminalError('STORE_CORRUPT', '/root/secret'))).toMatchObject({
      code: 'UNKNOWN',
      status: 500,
      message: 'internal server error',
    });
    expect(toHttpError(new Error('boom at /x'))).toMatchObject({
      code: 'UNKNOWN',
      status: 500,
      message: 'internal server error',
    });
  });
});
