/**
 * `strata images` as docker users know it: the `REPO[:TAG]` argument, `--filter` (dangling, reference, before,
 * since) and `--format` (Go-template-like `{{.Field}}`, `table …`, or `json`). Pure functions over image rows.
 */
import { TerminalError } from '../engine/errors.js';
import type { ImageSummary } from '../engine/image/local.js';
import { shortId } from '../engine/image/local.js';
import { familiarName, parseReference } from '../engine/oci/reference.js';
import { humanAge, humanSize, table } from './format.js';

/** The short name docker prints for a repository; a ref name other tools wrote that is no reference stays as is. */
export function displayRepository(repository: string): string {
  try {
    return familiarName(parseReference(repository, { defaultTag: false }));
  } catch {
    return repository;
  }
}

/** A glob as Go's `path.Match` reads it (`*` and `?` stop at `/`), anchored. */
function globRegExp(pattern: string): RegExp {
  let re = '';
  for (const ch of pattern) {
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** True when `pattern` (a glob) matches the image's repository, or its `repository:tag`, short or full. */
function matchesReference(row: ImageSummary, pattern: string): boolean {
  const re = globRegExp(pattern);
  const short = displayRepository(row.repository);
  const names = [short, row.repository, `${short}:${row.tag}`, `${row.repository}:${row.tag}`];
  return names.some((n) => re.test(n));
}

/** Parsed `--filter KEY=VALUE` flags: values of one key are ORed, different keys ANDed, as docker does. */
export type ImageFilters = ReadonlyMap<'dangling' | 'reference' | 'before' | 'since', readonly string[]>;

const FILTER_KEYS = ['dangling', 'reference', 'before', 'since'] as const;

/** Parses `--filter` values; an unknown key or a malformed value is INVALID_ARGUMENT. */
export function parseImageFilters(values: readonly string[]): ImageFilters {
  const out = new Map<(typeof FILTER_KEYS)[number], string[]>();
  for (const v of values) {
    const eq = v.indexOf('=');
    const key = v.slice(0, eq) as (typeof FILTER_KEYS)[number];
    const value = v.slice(eq + 1);
    if (eq <= 0 || !FILTER_KEYS.includes(key))
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `--filter ${v}: use ${FILTER_KEYS.map((k) => `${k}=…`).join(', ')}`,
      );
    if (key === 'dangling' && value !== 'true' && value !== 'false')
      throw new TerminalError('INVALID_ARGUMENT', `--filter ${v}: dangling is true or false`);
    out.set(key, [...(out.get(key) ?? []), value]);
  }
  return out;
}

/**
 * Keeps the rows that pass every filter. `createdOf` resolves the IMAGE of `before=`/`since=` to its creation
 * time (it throws NOT_FOUND for an unknown image, as docker fails).
 */
export async function filterImages(
  rows: readonly ImageSummary[],
  filters: ImageFilters,
  createdOf: (image: string) => Promise<string | undefined>,
): Promise<ImageSummary[]> {
  const time = (created: string | undefined): number => (created ? Date.parse(created) : NaN);
  let out = [...rows];
  const dangling = filters.get('dangling');
  if (dangling) out = out.filter((r) => dangling.includes(String(r.tag === '<none>')));
  const refs = filters.get('reference');
  if (refs) out = out.filter((r) => refs.some((p) => matchesReference(r, p)));
  for (const [key, keep] of [
    ['before', (t: number, mark: number) => t < mark],
    ['since', (t: number, mark: number) => t > mark],
  ] as const) {
    for (const image of filters.get(key) ?? []) {
      const mark = time(await createdOf(image));
      out = out.filter((r) => keep(time(r.created), mark));
    }
  }
  return out;
}

/**
 * The rows that the `images REPO[:TAG]` argument names: a repository (every tag) or one tag, written as docker
 * accepts it (`nginx`, `localhost:5000/app:1`); with `*` or `?`, a glob as in `--filter reference=`.
 */
export function selectByArgument(rows: readonly ImageSummary[], arg: string): ImageSummary[] {
  if (/[*?[]/.test(arg)) return rows.filter((r) => matchesReference(r, arg));
  const ref = parseReference(arg, { defaultTag: false });
  const repository = `${ref.registry}/${ref.repository}`;
  return rows.filter((r) => r.repository === repository && (ref.tag === undefined || r.tag === ref.tag));
}

/** The fields `--format` offers, with docker's table headers. */
const FIELDS = {
  Repository: 'REPOSITORY',
  Tag: 'TAG',
  ID: 'IMAGE ID',
  Digest: 'DIGEST',
  CreatedSince: 'CREATED',
  CreatedAt: 'CREATED AT',
  Size: 'SIZE',
  Platform: 'PLATFORM',
} as const;
type Field = keyof typeof FIELDS;

/** The `--format` fields of one row; `trunc` shortens IDs as docker does without `--no-trunc`. */
export function imageFields(row: ImageSummary, trunc: boolean, now = Date.now()): Record<Field, string> {
  return {
    Repository: displayRepository(row.repository),
    Tag: row.tag,
    ID: trunc ? shortId(row.id) : row.id,
    Digest: row.digest,
    CreatedSince: humanAge(row.created, now),
    CreatedAt: row.created ?? '',
    Size: humanSize(row.size),
    Platform: row.platforms.join(',') || '-',
  };
}

const PLACEHOLDER = /\{\{\s*(?:\.(\w+)|json\s+\.)\s*\}\}/g;

/**
 * Renders rows with a docker `--format`: `json` (one JSON object per line), `table TEMPLATE` (with a header
 * row), or a template of `{{.Field}}` and `{{json .}}` placeholders; `\t` and `\n` are escapes, as in docker.
 * An unknown field is INVALID_ARGUMENT naming the fields there are.
 */
export function formatImages(rows: readonly ImageSummary[], format: string, trunc: boolean): string {
  const records = rows.map((r) => imageFields(r, trunc));
  if (format.trim() === 'json') return records.map((r) => JSON.stringify(r)).join('\n');
  const isTable = /^table(\s|$)/.test(format);
  const template = (isTable ? format.replace(/^table\s*/, '') : format)
    .replace(/\\t/g, '\t')
    .replace(/\\n/g, '\n');
  const used: Field[] = [];
  for (const m of template.matchAll(PLACEHOLDER)) {
    const f = m[1];
    if (f === undefined) continue;
    if (!(f in FIELDS))
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `--format: unknown field .${f} (fields: ${Object.keys(FIELDS)
          .map((k) => `.${k}`)
          .join(' ')})`,
      );
    used.push(f as Field);
  }
  const render = (r: Record<Field, string>): string =>
    template.replace(PLACEHOLDER, (_m, f: string | undefined) => (f ? r[f as Field] : JSON.stringify(r)));
  if (!isTable) return records.map(render).join('\n');
  // `table` without placeholders is docker's default table.
  const fields: Field[] = used.length > 0 ? used : ['Repository', 'Tag', 'ID', 'CreatedSince', 'Size'];
  return table(
    fields.map((f) => FIELDS[f]),
    records.map((r) => fields.map((f) => r[f])),
  );
}
