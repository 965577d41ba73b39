/**
 * Loads an ImageBuild from a YAML file (the same file a GitOps repository applies), validates its spec against
 * the CRD's own schema, and applies the schema's defaults.
 */
import { open } from 'node:fs/promises';
import { isAbsolute, posix } from 'node:path';
import { isMap, LineCounter, parseAllDocuments, type Document } from 'yaml';
import { formatPath, validate, type FieldPath, type Issue } from '../validate.js';
import {
  API_VERSION,
  DNS_SUBDOMAIN_PATTERN,
  GROUP,
  imageBuildSpecField,
  KIND,
  sourceDateEpoch,
  type ImageBuild,
  type ImageBuildSpec,
  type ObjectMeta,
} from './imagebuild.js';

/** Largest ImageBuild file read: Kubernetes stores objects up to about 1.5 MiB. */
export const MAX_FILE_BYTES = 2 * 1024 * 1024;

/** One problem in an ImageBuild file: its field path, what is wrong, and the line (1-based) when known. */
export interface SpecIssue {
  readonly path: string;
  readonly message: string;
  readonly line?: number;
}

/**
 * An ImageBuild file that cannot be used: unreadable YAML, no (or several) ImageBuild documents, or a spec the
 * schema refuses. `code` is the engine's `INVALID_ARGUMENT`, so the CLI edge reports it like other bad input.
 */
export class ImageBuildFileError extends Error {
  /** Stable code; matches the engine's StrataErrorCode for bad input. */
  readonly code = 'INVALID_ARGUMENT' as const;
  constructor(
    readonly file: string,
    readonly issues: readonly SpecIssue[],
    options?: { cause?: unknown },
  ) {
    super(
      `${file}: ${issues.map((i) => `${i.path ? `${i.path}: ` : ''}${i.message}${i.line ? ` (line ${i.line})` : ''}`).join('; ')}`,
      options,
    );
    this.name = 'ImageBuildFileError';
  }
}

/** Options of {@link loadImageBuildFile} and {@link parseImageBuild}. */
export interface LoadOptions {
  /** Picks the ImageBuild with this `metadata.name` when the file holds several. */
  readonly name?: string;
}

/** Reads, validates and defaults the ImageBuild in a YAML file (see {@link parseImageBuild}). */
export async function loadImageBuildFile(path: string, options: LoadOptions = {}): Promise<ImageBuild> {
  const fh = await open(path, 'r');
  let text: string;
  try {
    const size = (await fh.stat()).size;
    if (size > MAX_FILE_BYTES)
      throw new ImageBuildFileError(path, [
        { path: '', message: `the file is ${size} bytes; at most ${MAX_FILE_BYTES} are read` },
      ]);
    text = await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
  return parseImageBuild(text, path, options);
}

/**
 * Parses YAML text holding one or more documents, picks the ImageBuild (error if none, or several without
 * `options.name`), checks apiVersion, kind and metadata.name, validates the spec (unknown fields, types,
 * required fields, enums, patterns, exactly-one-of groups) and returns it with defaults applied. `status` is
 * dropped, as the apiserver drops it on create. `file` names the source in errors.
 */
export function parseImageBuild(text: string, file: string, options: LoadOptions = {}): ImageBuild {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (!Array.isArray(docs)) return fail(file, [{ path: '', message: 'the file holds no YAML document' }]);
  const parseIssues: SpecIssue[] = [];
  for (const d of docs)
    for (const e of d.errors)
      parseIssues.push({
        path: '',
        message: `invalid YAML: ${e.message.split('\n')[0]}`,
        line: lines.linePos(e.pos[0]).line,
      });
  if (parseIssues.length) return fail(file, parseIssues);

  const candidates = docs.filter((d) => {
    const js = d.toJS() as unknown;
    return (
      isRecord(js) &&
      js.kind === KIND &&
      typeof js.apiVersion === 'string' &&
      js.apiVersion.startsWith(`${GROUP}/`)
    );
  });
  let chosen: Document.Parsed;
  if (candidates.length === 0) {
    const kinds = docs
      .map((d) => d.toJS() as unknown)
      .filter(isRecord)
      .map((js) => `${String(js.apiVersion)} ${String(js.kind)}`);
    return fail(file, [
      {
        path: '',
        message: `no ${API_VERSION} ${KIND} document${kinds.length ? ` (found ${kinds.join(', ')})` : ''}`,
      },
    ]);
  } else if (candidates.length === 1 && options.name === undefined) {
    chosen = candidates[0]!;
  } else {
    const named = candidates.filter((d) => nameOf(d) === options.name);
    if (named.length !== 1) {
      const names = candidates.map((d) => nameOf(d) ?? '(unnamed)').join(', ');
      return fail(file, [
        {
          path: '',
          message:
            options.name === undefined
              ? `the file holds ${candidates.length} ImageBuild documents (${names}); name the one to build`
              : `no single ImageBuild named ${JSON.stringify(options.name)} (found ${names})`,
        },
      ]);
    }
    chosen = named[0]!;
  }

  const obj = chosen.toJS() as Record<string, unknown>;
  const issues: Issue[] = [];
  if (obj.apiVersion !== API_VERSION)
    issues.push({
      path: ['apiVersion'],
      message: `must be ${API_VERSION} (got ${JSON.stringify(obj.apiVersion)})`,
    });
  const meta = obj.metadata;
  if (!isRecord(meta))
    issues.push({ path: ['metadata'], message: meta === undefined ? 'required' : 'must be an object' });
  else if (typeof meta.name !== 'string')
    issues.push({
      path: ['metadata', 'name'],
      message: meta.name === undefined ? 'required' : 'must be a string',
    });
  else if (!new RegExp(DNS_SUBDOMAIN_PATTERN).test(meta.name) || meta.name.length > 253)
    issues.push({
      path: ['metadata', 'name'],
      message: `${JSON.stringify(meta.name)} is not a valid object name`,
    });
  for (const k of Object.keys(obj))
    if (!['apiVersion', 'kind', 'metadata', 'spec', 'status'].includes(k))
      issues.push({ path: [k], message: 'unknown field' });

  let spec: unknown;
  if (obj.spec === undefined) issues.push({ path: ['spec'], message: 'required' });
  else {
    const r = validate(imageBuildSpecField.schema, obj.spec, ['spec']);
    issues.push(...r.issues);
    spec = r.value;
    if (r.issues.length === 0) issues.push(...semanticIssues(spec as ImageBuildSpec));
  }
  if (issues.length)
    return fail(
      file,
      issues.map((i) => located(i, chosen, lines)),
    );
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: meta as unknown as ObjectMeta,
    spec: spec as ImageBuildSpec,
  };
}

/** A relative path that stays inside its root lexically (symlinks are checked when the context is resolved). */
function insideLexically(p: string): boolean {
  if (isAbsolute(p) || p.startsWith('/')) return false;
  const n = posix.normalize(p);
  return n !== '..' && !n.startsWith('../');
}

/** Rules the schema cannot say: paths inside their roots, a timestamp that names a real instant. */
function semanticIssues(spec: ImageBuildSpec): Issue[] {
  const issues: Issue[] = [];
  if (spec.dockerfile.path !== undefined && !insideLexically(spec.dockerfile.path))
    issues.push({
      path: ['spec', 'dockerfile', 'path'],
      message: 'must be a relative path inside the context',
    });
  const sub = spec.context.git?.subPath;
  if (sub !== undefined && !insideLexically(sub))
    issues.push({
      path: ['spec', 'context', 'git', 'subPath'],
      message: 'must be a relative path inside the repository',
    });
  try {
    sourceDateEpoch(spec.timestamp);
  } catch (err) {
    issues.push({ path: ['spec', 'timestamp'], message: (err as Error).message });
  }
  return issues;
}

function located(issue: Issue, doc: Document.Parsed, lines: LineCounter): SpecIssue {
  // The deepest node that exists on the path: the field itself, or the object that misses it.
  let line: number | undefined;
  for (let n = issue.path.length; n >= 0 && line === undefined; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(issue.path.slice(0, n) as FieldPath, true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (range) line = lines.linePos(range[0]).line;
  }
  return { path: formatPath(issue.path), message: issue.message, ...(line !== undefined ? { line } : {}) };
}

function nameOf(d: Document.Parsed): string | undefined {
  const n = isMap(d.contents) ? d.getIn(['metadata', 'name']) : undefined;
  return typeof n === 'string' ? n : undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(file: string, issues: SpecIssue[]): never {
  throw new ImageBuildFileError(file, issues);
}
