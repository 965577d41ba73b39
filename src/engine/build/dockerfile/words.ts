/**
 * Parse-time splitting of an instruction's argument text, before any substitution: docker keeps quotes here and
 * removes them when it expands the words later, so these helpers never unquote (except builder flags, which
 * docker unquotes at parse time).
 */

/** Docker's separator for whitespace-delimited arguments (no newline: lines are already joined). */
const WHITESPACE = /[\t\v\f\r ]+/u;
const isSpace = (ch: string): boolean => /^\s$/u.test(ch);

/** Splits on runs of blanks (FROM, EXPOSE, shell-form COPY/ADD/VOLUME). Empty text gives no words. */
export function splitWhitespace(text: string): string[] {
  if (text === '') return [];
  return text.split(WHITESPACE);
}

/** Splits `text` at its first run of blanks: `[first, rest]` (rest may be ""). */
export function splitFirst(text: string): [string, string] {
  const m = WHITESPACE.exec(text);
  if (!m) return [text, ''];
  return [text.slice(0, m.index), text.slice(m.index + m[0].length)];
}

/**
 * Splits into words on unquoted white space, keeping quotes and escapes in the words (ENV/LABEL `k=v` form, ARG).
 * A quoted empty string (`""`) is a word.
 */
export function parseWords(text: string, escape: string): string[] {
  const words: string[] = [];
  const chars = Array.from(text);
  let word = '';
  let started = false;
  let quote = '';
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (quote === '') {
      if (isSpace(ch)) {
        if (started) words.push(word);
        word = '';
        started = false;
        continue;
      }
      started = true;
      if (ch === "'" || ch === '"') quote = ch;
      else if (ch === escape) {
        if (i + 1 === chars.length) continue; // a trailing escape is dropped
        word += ch;
        i++;
        word += chars[i]!;
        continue;
      }
      word += ch;
    } else {
      if (ch === quote) quote = '';
      else if (ch === escape && quote !== "'") {
        if (i + 1 === chars.length) continue;
        word += ch;
        i++;
        word += chars[i]!;
        continue;
      }
      word += ch;
    }
  }
  if (started) words.push(word);
  return words;
}

/**
 * Takes the leading `--flag[=value]` words off an instruction's arguments, as docker does: quotes are removed and
 * `\` escapes (always backslash) are honoured in flag words; a lone `--` ends the flags. Returns the flag words and
 * the remaining argument text.
 */
export function extractFlagWords(text: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let pos = 0;
  const n = text.length;
  for (;;) {
    while (pos < n && isSpace(text[pos]!)) pos++;
    if (pos >= n || !text.startsWith('--', pos)) return { flags, rest: text.slice(pos) };
    let word = '';
    let quote = '';
    for (; pos < n; pos++) {
      const ch = text[pos]!;
      if (quote === '' && isSpace(ch)) break;
      if (quote === '' && (ch === '"' || ch === "'")) {
        quote = ch;
        continue;
      }
      if (quote !== '' && ch === quote) {
        quote = '';
        continue;
      }
      if (ch === '\\') {
        if (pos + 1 === n) continue;
        pos++;
        word += text[pos]!;
        continue;
      }
      word += ch;
    }
    if (word === '--') {
      while (pos < n && isSpace(text[pos]!)) pos++;
      return { flags, rest: text.slice(pos) };
    }
    flags.push(word);
  }
}

/** The outcome of trying the JSON (exec) form. */
export type JsonArray =
  | { readonly ok: true; readonly values: string[] }
  /** Not JSON: docker falls back to the shell form. */
  | { readonly ok: false; readonly notStrings?: false }
  /** A JSON array holding something else than strings: docker refuses this rather than falling back. */
  | { readonly ok: false; readonly notStrings: true };

/**
 * Reads a JSON array of strings at the start of `text` (after blanks). Like Go's `json.Decoder`, only the first
 * JSON value counts: text after the closing bracket is ignored.
 */
export function parseJsonArray(text: string): JsonArray {
  const t = text.replace(/^\s+/u, '');
  if (!t.startsWith('[')) return { ok: false };
  const end = jsonValueEnd(t);
  if (end < 0) return { ok: false };
  let parsed: unknown;
  try {
    parsed = JSON.parse(t.slice(0, end));
  } catch {
    return { ok: false };
  }
  if (!Array.isArray(parsed)) return { ok: false };
  if (!parsed.every((v): v is string => typeof v === 'string')) return { ok: false, notStrings: true };
  return { ok: true, values: parsed };
}

/** Index just past the bracketed value that starts `t` (string-aware), or -1 if it never closes. */
function jsonValueEnd(t: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < t.length; i++) {
    const ch = t[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === '[' || ch === '{') depth++;
    else if (ch === ']' || ch === '}') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}
