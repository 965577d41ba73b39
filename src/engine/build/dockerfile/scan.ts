import type { Heredoc } from './types.js';
import { dockerfileError } from './errors.js';
import { heredocMarkers } from './heredoc.js';

/** Longest physical line accepted, as docker's line scanner (64 KiB buffer). */
export const MAX_LINE_LENGTH = 65_535;
/** Largest Dockerfile accepted, in UTF-16 code units: a bound on hostile input, far above real files. */
export const MAX_DOCKERFILE_LENGTH = 8 * 1024 * 1024;

/** One instruction's text: continuation lines joined, comments inside it dropped, heredoc bodies attached. */
export interface LogicalLine {
  readonly text: string;
  /** 1-based first and last physical line (the last heredoc terminator for heredocs). */
  readonly line: number;
  readonly endLine: number;
  readonly heredocs: readonly Heredoc[];
}

/** The file cut into instruction lines, with its parser directives. */
export interface ScanResult {
  readonly directives: Readonly<Record<string, string>>;
  readonly escape: '\\' | '`';
  readonly lines: readonly LogicalLine[];
  /** Number of physical lines (for errors about the whole file). */
  readonly lineCount: number;
}

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/u;
const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);

const trimNewline = (s: string): string => s.replace(/[\r\n]+$/u, '');
const trimLeft = (s: string): string => s.replace(/^\s+/u, '');
const isComment = (s: string): boolean => trimLeft(trimNewline(s)).startsWith('#');

/** Parser directives are read only from the top of the file, up to the first line that is not one. */
class Directives {
  escape: '\\' | '`' = '\\';
  readonly values: Record<string, string> = {};
  private done = false;
  private continuation = /(?<=[^\\])\\[ \t]*$|^\\[ \t]*$/u;

  /** Looks at one (left-trimmed) line while directives may still appear. */
  see(line: string, lineNo: number): void {
    if (this.done) return;
    const m = DIRECTIVE.exec(line);
    const key = m?.[1]?.toLowerCase();
    if (!m || key === undefined || !KNOWN_DIRECTIVES.has(key)) {
      this.done = true; // unknown `# x=y` is a plain comment and ends the directive block, as in docker
      return;
    }
    if (key in this.values) throw dockerfileError(lineNo, `only one ${key} parser directive can be used`);
    const value = m[2]!;
    if (key === 'escape') {
      if (value !== '\\' && value !== '`') {
        throw dockerfileError(lineNo, `invalid escape token '${value}' does not match \` or \\`);
      }
      this.escape = value;
      const e = value === '`' ? '`' : '\\\\';
      this.continuation = new RegExp(`(?<=[^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`, 'u');
    }
    this.values[key] = value;
  }

  /** Strips a trailing escape (plus blanks) and says whether the instruction continues on the next line. */
  trimContinuation(line: string): { text: string; continues: boolean } {
    if (!this.continuation.test(line)) return { text: line, continues: false };
    return { text: line.replace(this.continuation, ''), continues: true };
  }
}

/** Splits text into physical lines, each keeping its line terminator (heredoc bodies keep them). */
function physicalLines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf('\n', start);
    const end = nl < 0 ? text.length : nl + 1;
    out.push(text.slice(start, end));
    start = end;
  }
  return out;
}

/**
 * Cuts a Dockerfile into logical instruction lines the way docker's parser does: directives at the top, comment
 * and blank lines skipped, continuation lines (ending in the escape character) joined — comment and blank lines in
 * the middle of a continuation are dropped — and heredoc bodies read after lines for which `acceptsHeredocs` is
 * true. Throws DOCKERFILE_INVALID on oversize input, bad directives and unterminated heredocs.
 */
export function scanLines(text: string, acceptsHeredocs: (line: string) => boolean): ScanResult {
  if (text.length > MAX_DOCKERFILE_LENGTH) {
    throw dockerfileError(1, `Dockerfile larger than the ${MAX_DOCKERFILE_LENGTH} characters accepted`);
  }
  const physical = physicalLines(text.startsWith('\ufeff') ? text.slice(1) : text);
  physical.forEach((l, i) => {
    if (l.length > MAX_LINE_LENGTH + 2) {
      throw dockerfileError(i + 1, `dockerfile line greater than max allowed size of ${MAX_LINE_LENGTH}`);
    }
  });
  const d = new Directives();
  const lines: LogicalLine[] = [];
  let i = 0;
  while (i < physical.length) {
    const startLine = i + 1;
    const first = trimLeft(trimNewline(physical[i]!));
    d.see(first, startLine);
    i++;
    const firstText = first.startsWith('#') ? '' : first;
    let { text: joined, continues } = d.trimContinuation(firstText);
    if (!continues && joined === '') continue; // blank line or comment
    while (continues && i < physical.length) {
      const raw = physical[i]!;
      d.see(trimNewline(raw), i + 1);
      i++;
      // Comment lines and blank lines inside a continuation are dropped, as docker does.
      if (isComment(raw) || trimLeft(trimNewline(raw)) === '') continue;
      const next = d.trimContinuation(trimNewline(raw));
      joined += next.text;
      continues = next.continues;
    }
    const heredocs: Heredoc[] = [];
    if (acceptsHeredocs(joined)) {
      for (const marker of heredocMarkers(joined)) {
        let content = '';
        let terminated = false;
        while (i < physical.length) {
          const raw = physical[i]!;
          i++;
          let candidate = trimNewline(raw);
          if (marker.chomp) candidate = candidate.replace(/^\t+/u, '');
          if (candidate === marker.name) {
            terminated = true;
            break;
          }
          content += raw;
        }
        if (!terminated) throw dockerfileError(startLine, `unterminated heredoc ${marker.name}`);
        if (marker.chomp) content = content.replace(/^\t+/gmu, '');
        heredocs.push({ name: marker.name, content, expand: marker.expand, chomp: marker.chomp });
      }
    }
    lines.push({ text: joined, line: startLine, endLine: i, heredocs });
  }
  return { directives: { ...d.values }, escape: d.escape, lines, lineCount: physical.length };
}
