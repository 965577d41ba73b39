/** Text formatting for the CLI: sizes, ages, tables. Pure functions. */

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];

/** Human size in decimal units, as docker prints (`12.3MB`). */
export function humanSize(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)}${UNITS[u]}`;
}

/** `3 days ago`-style age of an RFC 3339 time, relative to `now`. */
export function humanAge(created: string | undefined, now: number = Date.now()): string {
  if (!created) return 'N/A';
  const t = Date.parse(created);
  if (Number.isNaN(t)) return 'N/A';
  const s = Math.max(0, Math.round((now - t) / 1000));
  const steps: Array<[number, string]> = [
    [60 * 60 * 24 * 365, 'year'],
    [60 * 60 * 24 * 30, 'month'],
    [60 * 60 * 24 * 7, 'week'],
    [60 * 60 * 24, 'day'],
    [60 * 60, 'hour'],
    [60, 'minute'],
  ];
  for (const [len, name] of steps) {
    const n = Math.floor(s / len);
    if (n >= 1) return `${n === 1 ? (name === 'hour' ? 'An' : 'A') : n} ${name}${n === 1 ? '' : 's'} ago`;
  }
  return s < 2 ? 'Less than a second ago' : `${s} seconds ago`;
}

/** Left-aligned columns separated by three spaces, like docker's tables. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** Shortens text to `max` characters with an ellipsis, as docker's `--no-trunc` off does. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** `1 blob`, `3 blobs`: a count with its noun. */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
