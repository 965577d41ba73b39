import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { hasCode } from '../engine/errors.js';
import { isDigest, parseDigest, type Digest } from '../engine/oci/digest.js';
import { MediaType } from '../engine/oci/media-types.js';
import type { RegistryBackend } from './backend.js';
import { DistributionError } from './errors.js';
import {
  hasBody,
  paginate,
  parseContentRange,
  parsePageSize,
  parseRange,
  readBounded,
  sendEmpty,
  sendJson,
  type Headers,
} from './http.js';
import { isValidRepositoryName, isValidTag, type Route } from './routes.js';
import { rangeHeader, type UploadSession, type UploadSessions } from './upload-sessions.js';

/** What the handlers need: the backend, the upload sessions and the limits. */
export interface HandlerContext {
  readonly backend: RegistryBackend;
  readonly uploads: UploadSessions;
  readonly maxManifestBytes: number;
}

/** One request, already routed and method-checked. */
export interface RequestInfo {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The query parameters (the path is already routed). */
  readonly query: URLSearchParams;
  readonly method: string;
  /** Whom per-client limits count this request against (its remote address). */
  readonly client: string;
  readonly signal: AbortSignal;
}

/** Dispatches a routed request to its handler. Throws for every error response (the server maps them). */
export async function handleRoute(ctx: HandlerContext, route: Route, r: RequestInfo): Promise<void> {
  switch (route.kind) {
    case 'base':
      return sendJson(r.res, 200, {}, { head: r.method === 'HEAD' });
    case 'catalog':
      return listing(r, '/v2/_catalog', 'repositories', {}, await ctx.backend.listRepositories(r.signal));
    case 'tags': {
      const tags = await ctx.backend.listTags(route.name, r.signal);
      if (!tags)
        throw new DistributionError(
          'NAME_UNKNOWN',
          `repository ${route.name} is not known to this registry`,
          { detail: { name: route.name } },
        );
      return listing(r, `/v2/${route.name}/tags/list`, 'tags', { name: route.name }, tags);
    }
    case 'referrers':
      return referrers(ctx, route.name, blobDigest(route.digest), r);
    case 'blob':
      return r.method === 'DELETE'
        ? deleteBlob(ctx, route.name, blobDigest(route.digest), r)
        : getBlob(ctx, route.name, blobDigest(route.digest), r);
    case 'manifest':
      return manifest(ctx, route.name, route.reference, r);
    case 'uploadStart':
      return startUpload(ctx, route.name, r);
    case 'upload':
      return upload(ctx, route.name, route.uuid, r);
  }
}

function blobDigest(value: string): Digest {
  try {
    return parseDigest(value);
  } catch (err) {
    throw new DistributionError('DIGEST_INVALID', (err as Error).message, {
      detail: { digest: value },
      cause: err,
    });
  }
}

// ---- listings ----

function listing(
  r: RequestInfo,
  path: string,
  key: string,
  extra: Record<string, string>,
  items: readonly string[],
): void {
  const n = parsePageSize(r.query.get('n'));
  const { page, more } = paginate(items, n, r.query.get('last'));
  const headers: Headers = {};
  if (more && n !== undefined) {
    const next = new URLSearchParams({ n: String(n), last: page[page.length - 1]! });
    headers.Link = `<${path}?${next.toString()}>; rel="next"`;
  }
  sendJson(r.res, 200, { ...extra, [key]: page }, { headers, head: r.method === 'HEAD' });
}

async function referrers(ctx: HandlerContext, name: string, subject: Digest, r: RequestInfo): Promise<void> {
  const artifactType = r.query.get('artifactType');
  let manifests = await ctx.backend.listReferrers(name, subject, r.signal);
  const headers: Headers = {};
  if (artifactType) {
    manifests = manifests.filter((d) => d.artifactType === artifactType);
    headers['OCI-Filters-Applied'] = 'artifactType';
  }
  sendJson(
    r.res,
    200,
    { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests },
    { headers, contentType: MediaType.OciIndex, head: r.method === 'HEAD' },
  );
}

// ---- blobs ----

async function getBlob(ctx: HandlerContext, name: string, digest: Digest, r: RequestInfo): Promise<void> {
  const st = await ctx.backend.statBlob(name, digest, r.signal);
  if (!st)
    throw new DistributionError('BLOB_UNKNOWN', `blob ${digest} is unknown to repository ${name}`, {
      detail: { digest },
    });
  const headers: Headers = {
    'Docker-Content-Digest': digest,
    'Content-Type': 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    ETag: `"${digest}"`,
    'Cache-Control': 'max-age=31536000',
  };
  if (r.method === 'HEAD') {
    r.res.writeHead(200, { ...headers, 'Content-Length': st.size });
    r.res.end();
    return;
  }
  const range = parseRange(r.req.headers.range, st.size);
  if (range.kind === 'unsatisfiable') {
    throw new DistributionError(
      'SIZE_INVALID',
      `range ${r.req.headers.range} is not satisfiable for a blob of ${st.size} bytes`,
      {
        status: 416,
        headers: { 'Content-Range': `bytes */${st.size}` },
        detail: { size: st.size },
      },
    );
  }
  const partial = range.kind === 'partial' ? range : undefined;
  const stream = await ctx.backend.openBlob(name, digest, partial, r.signal);
  if (partial) {
    headers['Content-Range'] = `bytes ${partial.start}-${partial.end}/${st.size}`;
    headers['Content-Length'] = partial.end - partial.start + 1;
  } else {
    headers['Content-Length'] = st.size;
  }
  r.res.writeHead(partial ? 206 : 200, headers);
  await pipeline(stream, r.res);
}

async function deleteBlob(ctx: HandlerContext, name: string, digest: Digest, r: RequestInfo): Promise<void> {
  if (!(await ctx.backend.deleteBlob(name, digest))) {
    throw new DistributionError('BLOB_UNKNOWN', `blob ${digest} is unknown to repository ${name}`, {
      detail: { digest },
    });
  }
  sendEmpty(r.res, 202, { 'Docker-Content-Digest': digest });
}

// ---- manifests ----

/**
 * Validates a manifest reference: a digest (DIGEST_INVALID when malformed) or a tag. An invalid tag cannot name
 * anything, so a lookup (GET, HEAD, DELETE) answers 404 MANIFEST_UNKNOWN, as the conformance suite expects;
 * only a PUT, which would create it, is refused with 400 MANIFEST_INVALID.
 */
function manifestReference(name: string, reference: string, method: string): string {
  if (reference.includes(':')) {
    try {
      return parseDigest(reference);
    } catch (err) {
      throw new DistributionError('DIGEST_INVALID', (err as Error).message, {
        detail: { digest: reference },
        cause: err,
      });
    }
  }
  if (isValidTag(reference)) return reference;
  if (method === 'PUT') {
    throw new DistributionError('MANIFEST_INVALID', `invalid tag ${JSON.stringify(reference)}`, {
      detail: { tag: reference },
    });
  }
  throw manifestUnknown(name, reference);
}

function manifestUnknown(name: string, reference: string): DistributionError {
  return new DistributionError('MANIFEST_UNKNOWN', `manifest ${reference} is unknown to repository ${name}`, {
    detail: { name, reference },
  });
}

async function manifest(
  ctx: HandlerContext,
  name: string,
  rawReference: string,
  r: RequestInfo,
): Promise<void> {
  const reference = manifestReference(name, rawReference, r.method);
  const unknown = (): DistributionError => manifestUnknown(name, reference);
  switch (r.method) {
    case 'PUT': {
      const max = ctx.maxManifestBytes;
      const bytes = await readBounded(
        r.req,
        max,
        () =>
          new DistributionError('MANIFEST_INVALID', `manifest exceeds the ${max}-byte limit`, {
            status: 413,
            detail: { limit: max },
          }),
        r.signal,
      );
      const result = await ctx.backend.putManifest(name, reference, bytes, r.req.headers['content-type']);
      const headers: Headers = {
        Location: `/v2/${name}/manifests/${result.digest}`,
        'Docker-Content-Digest': result.digest,
      };
      if (result.subject) headers['OCI-Subject'] = result.subject;
      return sendEmpty(r.res, 201, headers);
    }
    case 'DELETE':
      if (!(await ctx.backend.deleteManifest(name, reference))) throw unknown();
      return sendEmpty(r.res, 202);
    default: {
      const m = await ctx.backend.getManifest(name, reference, r.signal);
      if (!m) throw unknown();
      r.res.writeHead(200, {
        ...m.headers,
        'Content-Type': m.descriptor.mediaType,
        'Content-Length': m.bytes.length,
        'Docker-Content-Digest': m.descriptor.digest,
        ETag: `"${m.descriptor.digest}"`,
      });
      r.res.end(r.method === 'HEAD' ? undefined : m.bytes);
    }
  }
}

// ---- uploads ----

function uploadHeaders(name: string, session: UploadSession): Headers {
  return {
    Location: `/v2/${name}/blobs/uploads/${session.uuid}`,
    'Docker-Upload-UUID': session.uuid,
    Range: rangeHeader(session.offset),
  };
}

async function startUpload(ctx: HandlerContext, name: string, r: RequestInfo): Promise<void> {
  ctx.backend.assertWritable?.(name);
  const q = r.query;
  const mount = q.get('mount');
  const from = q.get('from');
  if (mount !== null) {
    const digest = blobDigest(mount);
    // An unknown or invalid `from` is not an error: the client just uploads (202), as the spec allows.
    if (from !== null && isValidRepositoryName(from) && (await ctx.backend.mountBlob(name, from, digest))) {
      return sendEmpty(r.res, 201, {
        Location: `/v2/${name}/blobs/${digest}`,
        'Docker-Content-Digest': digest,
      });
    }
  }
  const digestParam = q.get('digest');
  if (digestParam === null && mount === null && hasBody(r.req)) {
    throw new DistributionError('BLOB_UPLOAD_INVALID', 'a blob upload with a body needs ?digest=');
  }
  const digest = digestParam !== null ? blobDigest(digestParam) : undefined;
  const session = await ctx.uploads.create(name, r.client);
  if (digest === undefined) return sendEmpty(r.res, 202, uploadHeaders(name, session));
  // Monolithic upload: the body goes through a session file so it is verified whether or not the blob exists.
  try {
    await ctx.uploads.withLock(session, async () => {
      await ctx.uploads.append(session, r.req);
      await ctx.backend.commitBlob(name, session.path, digest, r.signal);
    });
  } finally {
    await ctx.uploads.remove(session);
  }
  sendEmpty(r.res, 201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest });
}

async function upload(ctx: HandlerContext, name: string, uuid: string, r: RequestInfo): Promise<void> {
  const session = await ctx.uploads.get(name, uuid);
  switch (r.method) {
    case 'GET':
      return sendEmpty(r.res, 204, uploadHeaders(name, session));
    case 'DELETE':
      await ctx.uploads.withLock(session, () => ctx.uploads.remove(session));
      return sendEmpty(r.res, 204);
    case 'PATCH': {
      const range = parseContentRange(r.req.headers['content-range']);
      await ctx.uploads.withLock(session, () => ctx.uploads.append(session, r.req, range));
      return sendEmpty(r.res, 202, uploadHeaders(name, session));
    }
    case 'PUT': {
      const digestParam = r.query.get('digest');
      if (digestParam === null || !isDigest(digestParam)) {
        throw new DistributionError(
          'DIGEST_INVALID',
          `completing an upload needs a valid ?digest=, got ${JSON.stringify(digestParam)}`,
        );
      }
      const digest = digestParam;
      const range = parseContentRange(r.req.headers['content-range']);
      await ctx.uploads.withLock(session, async () => {
        if (hasBody(r.req) || range) await ctx.uploads.append(session, r.req, range);
        try {
          await ctx.backend.commitBlob(name, session.path, digest, r.signal);
        } catch (err) {
          // Content that cannot match is useless: drop the session. Other failures keep it for a retry.
          if (hasCode(err, 'DIGEST_MISMATCH') || hasCode(err, 'SIZE_MISMATCH'))
            await ctx.uploads.remove(session);
          throw err;
        }
        await ctx.uploads.remove(session);
      });
      return sendEmpty(r.res, 201, {
        Location: `/v2/${name}/blobs/${digest}`,
        'Docker-Content-Digest': digest,
      });
    }
  }
}
