/**
 * Go's `path/filepath.Match` on Linux, which docker and BuildKit use for COPY/ADD source globs: `*` is any run
 * of non-`/` characters, `?` one non-`/` character, `[...]` a class (`^` negates; `lo-hi` ranges; `\` escapes;
 * unlike `?`, a class may match `/`, as in Go), `\x` the literal `x`. Characters are Unicode code points (Go's
 * runes). A malformed pattern (Go's `ErrBadPattern`) throws `INVALID_ARGUMENT` whatever the name, because Go
 * checks the whole pattern too.
 */
import { TerminalError } from '../../errors.js';

type Token =
  | { readonly t: 'lit'; readonly c: string }
  | { readonly t: 'any' }
  | { readonly t: 'star' }
  | {
      readonly t: 'class';
      readonly negated: boolean;
      readonly ranges: ReadonlyArray<readonly [number, number]>;
    };

const cache = new Map<string, Token[]>();

function bad(pattern: string, why: string): TerminalError {
  return new TerminalError('INVALID_ARGUMENT', `syntax error in pattern ${JSON.stringify(pattern)}: ${why}`);
}

function compile(pattern: string): Token[] {
  const hit = cache.get(pattern);
  if (hit) return hit;
  const cs = Array.from(pattern);
  const out: Token[] = [];
  let i = 0;
  // Go's getEsc: one class character, `\` escaping the next; `-` and `]` must be escaped.
  const classChar = (): number => {
    const c = cs[i];
    if (c === undefined) throw bad(pattern, 'unterminated character class');
    if (c === '-' || c === ']') throw bad(pattern, `unescaped ${JSON.stringify(c)} in a character class`);
    if (c === '\\') {
      i++;
      const e = cs[i];
      if (e === undefined) throw bad(pattern, 'trailing backslash in a character class');
      i++;
      return e.codePointAt(0)!;
    }
    i++;
    return c.codePointAt(0)!;
  };
  while (i < cs.length) {
    const c = cs[i]!;
    if (c === '*') {
      i++;
      if (out[out.length - 1]?.t !== 'star') out.push({ t: 'star' });
    } else if (c === '?') {
      i++;
      out.push({ t: 'any' });
    } else if (c === '\\') {
      const e = cs[i + 1];
      if (e === undefined) throw bad(pattern, 'trailing backslash');
      out.push({ t: 'lit', c: e });
      i += 2;
    } else if (c === '[') {
      i++;
      let negated = false;
      if (cs[i] === '^') {
        negated = true;
        i++;
      }
      const ranges: Array<[number, number]> = [];
      for (;;) {
        if (cs[i] === ']' && ranges.length > 0) {
          i++;
          break;
        }
        const lo = classChar();
        let hi = lo;
        if (cs[i] === '-') {
          i++;
          hi = classChar();
        }
        ranges.push([lo, hi]);
      }
      out.push({ t: 'class', negated, ranges });
    } else {
      out.push({ t: 'lit', c });
      i++;
    }
  }
  if (cache.size > 1000) cache.clear();
  cache.set(pattern, out);
  return out;
}

function matchOne(tok: Token, c: string): boolean {
  switch (tok.t) {
    case 'lit':
      return tok.c === c;
    case 'any':
      return c !== '/';
    case 'class': {
      const cp = c.codePointAt(0)!;
      const inClass = tok.ranges.some(([lo, hi]) => lo <= cp && cp <= hi);
      return inClass !== tok.negated;
    }
    default:
      return false;
  }
}

/**
 * Reports whether `name` matches the shell pattern `pattern` with Go's `filepath.Match` rules (see the module
 * comment). Throws `TerminalError('INVALID_ARGUMENT')` when the pattern is malformed.
 */
export function matchGoPattern(pattern: string, name: string): boolean {
  const toks = compile(pattern);
  const cs = Array.from(name);
  // Iterative matching with one backtrack point per star; a star never crosses `/`, so on reaching a `/` the
  // star cannot stretch further and the backtrack point is dropped.
  let ti = 0;
  let ci = 0;
  let starTi = -1;
  let starCi = -1;
  while (ci < cs.length) {
    const tok = toks[ti];
    if (tok?.t === 'star') {
      starTi = ti++;
      starCi = ci;
      continue;
    }
    if (tok && matchOne(tok, cs[ci]!)) {
      ti++;
      ci++;
      continue;
    }
    if (starTi >= 0 && cs[starCi] !== '/') {
      ti = starTi + 1;
      ci = ++starCi;
      continue;
    }
    return false;
  }
  while (toks[ti]?.t === 'star') ti++;
  return ti === toks.length;
}

/** True when `s` holds a glob meta character (`*`, `?`, `[`, `\`), as Go's `filepath.Glob` decides. */
export function hasGlobMeta(s: string): boolean {
  return /[*?[\\]/.test(s);
}
