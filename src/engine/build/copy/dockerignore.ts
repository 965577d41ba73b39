/**
 * `.dockerignore` with moby's rules (`moby/patternmatcher` and its `ignorefile` reader): lines starting with `#`
 * are comments, blank lines are skipped, patterns are trimmed and cleaned (`./a/` → `a`, `/a` → `a`), `!` marks
 * an exception, `**` spans any number of directories, `*` and `?` stay inside one component, the last pattern
 * that matches a path (or one of its parent directories) decides.
 */
import { TerminalError } from '../../errors.js';
import { goClean } from './paths.js';

const UTF8_BOM = '\ufeff';

interface Compiled {
  readonly exclusion: boolean;
  readonly re: RegExp;
  /** The pattern's leading components without glob characters (for the walk's re-inclusion test). */
  readonly literalDirs: readonly string[];
  /** True when the pattern starts with `**`, so it can match below any directory. */
  readonly anyDepth: boolean;
}

const REGEX_SPECIAL = /[.+^${}()|[\]\\*?]/;

function escapeRe(c: string): string {
  return REGEX_SPECIAL.test(c) ? `\\${c}` : c;
}

/**
 * Turns one cleaned pattern into an anchored regular expression, with patternmatcher's meaning of each token, or
 * says why it is malformed (without quoting it).
 */
function toRegExp(pattern: string): RegExp | { readonly error: string } {
  const cs = Array.from(pattern);
  let re = '^';
  for (let i = 0; i < cs.length; i++) {
    const c = cs[i]!;
    if (c === '*') {
      if (cs[i + 1] === '*') {
        i++;
        if (cs[i + 1] === '/') i++; // `**/` is `**`
        // `**` at the end matches everything; elsewhere any number of whole directories (even none).
        re += i + 1 >= cs.length ? '.*' : '(.*/)?';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '\\') {
      const e = cs[++i];
      if (e === undefined) return { error: 'the pattern ends with a backslash' };
      re += escapeRe(e);
    } else if (c === '[') {
      let j = i + 1;
      let cls = '[';
      if (cs[j] === '^' || cs[j] === '!') {
        cls += '^';
        j++;
      }
      let closed = false;
      for (; j < cs.length; j++) {
        const d = cs[j]!;
        if (d === ']' && j > i + 1 && cls !== '[' && cls !== '[^') {
          closed = true;
          break;
        }
        if (d === '\\' && j + 1 < cs.length) cls += `\\${cs[++j]!}`;
        else if (d === '-') cls += '-';
        else cls += /[\]\\^[]/.test(d) ? `\\${d}` : d;
      }
      if (!closed) return { error: 'unterminated character class' };
      re += `${cls}]`;
      i = j;
    } else re += escapeRe(c);
  }
  re += '$';
  try {
    return new RegExp(re, 'u');
  } catch {
    // The engine's message would quote the expression, i.e. the pattern.
    return { error: 'invalid pattern syntax' };
  }
}

/** Compiles one pattern as {@link parseDockerignore} returns it, or says why it is malformed (never quoting it). */
function compilePattern(raw: string): Compiled | { readonly error: string } {
  let p = raw;
  const exclusion = p.startsWith('!');
  if (exclusion) {
    p = p.slice(1);
    if (p === '') return { error: 'illegal exclusion pattern: "!"' };
  }
  p = goClean(p);
  const parts = p.split('/');
  const literalDirs: string[] = [];
  for (const part of parts) {
    if (/[*?[\\]/.test(part)) break;
    literalDirs.push(part);
  }
  const re = toRegExp(p);
  if ('error' in re) return re;
  return { exclusion, re, literalDirs, anyDepth: parts[0] === '**' };
}

/**
 * Parses `.dockerignore` text into patterns (exceptions keep their `!`), as moby's `ignorefile.ReadAll` does, and
 * checks each one as moby's `patternmatcher.New` would. A malformed pattern throws `INVALID_ARGUMENT` naming
 * `name` and the line (`.dockerignore line 3: unterminated character class`), never the line's text: the file
 * may not be the build author's to show.
 */
export function parseDockerignore(text: string, name = '.dockerignore'): string[] {
  const out: string[] = [];
  const lines = (text.startsWith(UTF8_BOM) ? text.slice(1) : text).split(/\r?\n/);
  for (const [index, line] of lines.entries()) {
    // Comments are recognised before trimming: only a `#` in the first column starts one.
    if (line.startsWith('#')) continue;
    let pattern = line.trim();
    if (pattern === '') continue;
    const invert = pattern.startsWith('!');
    if (invert) pattern = pattern.slice(1).trim();
    if (pattern.length > 0) {
      pattern = goClean(pattern);
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    const cleaned = invert ? `!${pattern}` : pattern;
    const compiled = compilePattern(cleaned);
    if ('error' in compiled)
      throw new TerminalError('INVALID_ARGUMENT', `${name} line ${index + 1}: ${compiled.error}`, {
        detail: { file: name, line: index + 1 },
      });
    out.push(cleaned);
  }
  return out;
}

/** A compiled `.dockerignore`: whether a path is excluded, and whether an exception may re-include below a dir. */
export interface IgnoreFilter {
  /** True when the context-relative path (slash-separated, no leading `/`) is excluded. */
  excludes(relPath: string): boolean;
  /**
   * True when some `!` exception could match a path below the directory `dirRel`: a walk must then descend into
   * an excluded directory instead of pruning it (moby does the same check).
   */
  mayReinclude(dirRel: string): boolean;
  /** True when there are no patterns at all. */
  readonly empty: boolean;
}

/**
 * Compiles `.dockerignore` patterns (as {@link parseDockerignore} returns them) into an {@link IgnoreFilter}. A
 * malformed one throws `INVALID_ARGUMENT` naming its position in the list, not its text.
 */
export function compileDockerignore(patterns: readonly string[]): IgnoreFilter {
  const compiled = patterns.map((p, i) => {
    const c = compilePattern(p);
    if ('error' in c)
      throw new TerminalError('INVALID_ARGUMENT', `.dockerignore pattern ${i + 1}: ${c.error}`);
    return c;
  });
  const exceptions = compiled.filter((c) => c.exclusion);
  const excludes = (relPath: string): boolean => {
    const file = goClean(relPath);
    const dirs = file.split('/');
    dirs.pop();
    let matched = false;
    for (const p of compiled) {
      // An exclusion can only flip a match, an inclusion only a non-match: skip the rest.
      if (p.exclusion !== matched) continue;
      let hit = p.re.test(file);
      for (let i = 1; !hit && i <= dirs.length; i++) hit = p.re.test(dirs.slice(0, i).join('/'));
      if (hit) matched = !p.exclusion;
    }
    return matched;
  };
  const mayReinclude = (dirRel: string): boolean => {
    const dir = goClean(dirRel).split('/');
    return exceptions.some((e) => {
      if (e.anyDepth) return true;
      // Compare the literal leading components: the exception can reach below `dir` only if they agree.
      const n = Math.min(dir.length, e.literalDirs.length);
      for (let i = 0; i < n; i++) if (dir[i] !== e.literalDirs[i]) return false;
      return true;
    });
  };
  return { excludes, mayReinclude, empty: compiled.length === 0 };
}

/**
 * A matcher over `.dockerignore` patterns with moby's semantics: answers true when `relPath` is excluded.
 * `isDir` is accepted for callers that walk trees; moby's rules do not depend on it (a pattern that matches a
 * directory excludes everything below it unless an exception re-includes it).
 */
export function createIgnoreMatcher(
  patterns: readonly string[],
): (relPath: string, isDir: boolean) => boolean {
  const f = compileDockerignore(patterns);
  return (relPath) => f.excludes(relPath);
}
