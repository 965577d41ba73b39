/**
 * Docker's `daemon.json` `registry-mirrors`: pure merge and removal that keep every other key, in its order.
 * Docker consults `registry-mirrors` for Docker Hub (docker.io) pulls only; other registries cannot be mirrored
 * through daemon.json.
 */
import { TerminalError } from '../../engine/errors.js';
import { validateMirrorUrl } from './hosts-toml.js';

const KEY = 'registry-mirrors';

/**
 * Checks a docker mirror URL (http(s), a host, no path, credentials, query or fragment, as dockerd's own check)
 * and answers it as dockerd stores it, with a trailing `/`.
 */
export function normalizeDockerMirror(url: string): string {
  validateMirrorUrl(url);
  const parsed = new URL(url);
  if (parsed.pathname !== '/' && parsed.pathname !== '')
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid docker mirror ${JSON.stringify(url)}: docker mirrors cannot have a path`,
    );
  return `${parsed.protocol}//${parsed.host}/`;
}

/** Parses daemon.json text into an object (absent or blank text is `{}`); anything else is INVALID_ARGUMENT. */
function parseDaemonJson(existing: string | undefined): Record<string, unknown> {
  if (existing === undefined || existing.trim() === '') return {};
  let doc: unknown;
  try {
    doc = JSON.parse(existing.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `daemon.json is not valid JSON (${(err as Error).message}); fix or remove it first, it was left as is`,
      { cause: err },
    );
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new TerminalError('INVALID_ARGUMENT', 'daemon.json must hold a JSON object; it was left as is');
  const mirrors = (doc as Record<string, unknown>)[KEY];
  if (mirrors !== undefined && (!Array.isArray(mirrors) || !mirrors.every((m) => typeof m === 'string')))
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `daemon.json: "${KEY}" must be a list of strings; it was left as is`,
    );
  return doc as Record<string, unknown>;
}

/** The comparison key of a mirror URL: dockerd treats `http://m` and `http://m/` as one. */
function sameMirror(a: string, b: string): boolean {
  return a.replace(/\/+$/, '').toLowerCase() === b.replace(/\/+$/, '').toLowerCase();
}

function render(doc: Record<string, unknown>): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/**
 * Answers `existing` (daemon.json text, or undefined when there is none) with `mirrors` first in
 * `registry-mirrors`, followed by the mirrors it already listed; every other key keeps its value and position
 * (integer-like keys aside, which JSON objects cannot order). Invalid JSON throws INVALID_ARGUMENT.
 */
export function mergeDaemonJson(existing: string | undefined, mirrors: readonly string[]): string {
  const ours = mirrors.map(normalizeDockerMirror);
  const doc = parseDaemonJson(existing);
  const before = (doc[KEY] as string[] | undefined) ?? [];
  const merged = [...ours];
  for (const m of before) if (!merged.some((o) => sameMirror(o, m))) merged.push(m);
  doc[KEY] = merged;
  return render(doc);
}

/**
 * Answers `existing` without `mirrors` in `registry-mirrors`, dropping the key when nothing is left: the undo of
 * {@link mergeDaemonJson} for mirrors the original did not list. Other keys are kept as they are.
 */
export function removeMirrors(existing: string | undefined, mirrors: readonly string[]): string {
  const doc = parseDaemonJson(existing);
  const before = doc[KEY] as string[] | undefined;
  if (before === undefined) return render(doc);
  const left = before.filter((m) => !mirrors.some((o) => sameMirror(o, m)));
  if (left.length > 0) doc[KEY] = left;
  else delete doc[KEY];
  return render(doc);
}

/** The mirrors of `mirrors` (normalized) that `existing` does not list yet: what a merge adds. */
export function mirrorsAdded(existing: string | undefined, mirrors: readonly string[]): string[] {
  const before = (parseDaemonJson(existing)[KEY] as string[] | undefined) ?? [];
  return mirrors.map(normalizeDockerMirror).filter((m) => !before.some((b) => sameMirror(b, m)));
}
