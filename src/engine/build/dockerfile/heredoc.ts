import { lex, LexError } from './lex.js';

/** A heredoc marker found on an instruction line, before its body is read. */
export interface HeredocMarker {
  /** The delimiter with quotes removed. */
  readonly name: string;
  /** False when any part of the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): the body is taken literally. */
  readonly expand: boolean;
  /** `<<-`: leading tabs are stripped from the body and the terminator line. */
  readonly chomp: boolean;
}

const MARKER = /^(\d*)<<(-?)([^<]*)$/u;
const NO_VARS: ReadonlyMap<string, string> = new Map();

/**
 * Parses one word as a heredoc marker (`<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`), or returns undefined when the word
 * is no marker. Used on COPY/ADD source words too, where a marker stands for the heredoc of the same position.
 */
export function parseHeredocMarker(word: string): HeredocMarker | undefined {
  const m = MARKER.exec(word);
  if (!m || m[3] === '') return undefined;
  const rest = m[3]!;
  try {
    // Lexed with and without quotes kept: if the counts of quote characters differ, part of it was quoted.
    const plain = lex(rest, NO_VARS, { escape: '\\', skipUnset: true }).words;
    if (plain.length !== 1) return undefined;
    const raw = lex(rest, NO_VARS, { escape: '\\', skipUnset: true, rawQuotes: true }).words;
    if (raw.length !== 1) return undefined;
    const quotes = (s: string): number => s.replace(/[^'"]/gu, '').length;
    return { name: plain[0]!, expand: quotes(plain[0]!) === quotes(raw[0]!), chomp: m[2] === '-' };
  } catch (err) {
    if (err instanceof LexError) return undefined;
    throw err;
  }
}

/** Every heredoc marker on an instruction line, in order (docker reads their bodies in this order). */
export function heredocMarkers(line: string): HeredocMarker[] {
  let words: readonly string[];
  try {
    words = lex(line, NO_VARS, { escape: '\\', rawQuotes: true, rawEscapes: true, skipUnset: true }).words;
  } catch (err) {
    if (err instanceof LexError) return []; // docker ignores a line it cannot lex here
    throw err;
  }
  const out: HeredocMarker[] = [];
  for (const w of words) {
    const marker = parseHeredocMarker(w);
    if (marker) out.push(marker);
  }
  return out;
}
