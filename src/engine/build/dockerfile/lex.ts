/**
 * The Dockerfile "shell word" lexer: variable substitution, quote removal and word splitting as BuildKit's
 * `shell.Lex` does it (behaviour read from the Dockerfile reference and BuildKit's lexer tests). It is not a shell:
 * no command substitution, no globbing, no arithmetic — only what Docker applies to instruction arguments.
 */

/** How one lexing pass treats quotes, escapes and unset variables. */
export interface LexOptions {
  /** The escape character in effect (`\` by default, `` ` `` with `# escape=```). */
  readonly escape: '\\' | '`';
  /** Keep quote characters in the output (used to find heredoc markers). */
  readonly rawQuotes?: boolean;
  /** Keep escape characters in the output (used to find heredoc markers). */
  readonly rawEscapes?: boolean;
  /** Treat quotes as ordinary characters (heredoc bodies of COPY/ADD). */
  readonly skipProcessQuotes?: boolean;
  /** Leave references to unset variables as written instead of substituting "". */
  readonly skipUnset?: boolean;
}

/** The outcome of one pass: the whole substituted text, and the same split into words after substitution. */
export interface LexResult {
  readonly result: string;
  readonly words: readonly string[];
}

/** A substitution the lexer refuses (bad `${}` syntax, unterminated quote, `${X:?}` on an unset X). */
export class LexError extends Error {}

/** Deepest `${a:-${b:-…}}` nesting accepted: bounds recursion on hostile input. */
export const MAX_NESTING = 64;

const EOF = '';

/** Unicode white space as Go's `unicode.IsSpace` sees it. */
function isSpace(ch: string): boolean {
  return /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u.test(ch);
}
const isLetter = (ch: string): boolean => /^\p{L}$/u.test(ch);
const isDigit = (ch: string): boolean => /^\p{Nd}$/u.test(ch);
/** POSIX special parameters (`$@`, `$?`, …): a one-character name, never set in a build. */
const isSpecialParam = (ch: string): boolean => '@*#?-$!0'.includes(ch) && ch !== EOF;

/** Accumulates words the way docker splits them: only unquoted, unescaped white space separates words. */
class Words {
  private readonly done: string[] = [];
  private word = '';
  private inWord = false;

  /** A character subject to splitting (plain text, substituted values). */
  addChar(ch: string): void {
    if (isSpace(ch)) {
      // An empty word opened by "" stays open across white space, as in BuildKit.
      if (this.inWord && this.word.length > 0) {
        this.done.push(this.word);
        this.word = '';
        this.inWord = false;
      }
      return;
    }
    this.addRaw(ch);
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  /** Text that never splits (quoted, escaped). */
  addRaw(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  finish(): string[] {
    if (this.word.length > 0) this.done.push(this.word);
    this.word = '';
    this.inWord = false;
    return this.done;
  }
}

class Lexer {
  private pos = 0;
  private depth = 0;
  private rawEscapes: boolean;
  private readonly chars: string[];

  constructor(
    source: string,
    private readonly vars: ReadonlyMap<string, string>,
    private readonly opts: LexOptions,
  ) {
    this.chars = Array.from(source);
    this.rawEscapes = opts.rawEscapes ?? false;
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }
  private next(): string {
    const ch = this.chars[this.pos] ?? EOF;
    if (ch !== EOF) this.pos++;
    return ch;
  }

  /** Processes up to `stop` (consumed) or the end when `stop` is EOF. */
  processUntil(stop: string, rawEscapes: boolean): { result: string; words: string[] } {
    if (++this.depth > MAX_NESTING) throw new LexError(`substitutions nested deeper than ${MAX_NESTING}`);
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = '';
      const words = new Words();
      while (this.peek() !== EOF) {
        const ch = this.peek();
        if (stop !== EOF && ch === stop) {
          this.next();
          return { result, words: words.finish() };
        }
        if (ch === '$') {
          const value = this.dollar();
          result += value;
          words.addString(value); // substituted text is split, as an unquoted shell expansion is
          continue;
        }
        if (!this.opts.skipProcessQuotes && (ch === "'" || ch === '"')) {
          const value = ch === "'" ? this.singleQuote() : this.doubleQuote();
          result += value;
          words.addRaw(value);
          continue;
        }
        let c = this.next();
        if (c === this.opts.escape) {
          if (this.rawEscapes) {
            words.addRaw(c);
            result += c;
          }
          c = this.next();
          if (c === EOF) break; // a lone escape at the end is dropped
          words.addRaw(c);
        } else {
          words.addChar(c);
        }
        result += c;
      }
      if (stop !== EOF) throw new LexError(`unexpected end of statement while looking for matching ${stop}`);
      return { result, words: words.finish() };
    } finally {
      this.rawEscapes = saved;
      this.depth--;
    }
  }

  /** `'…'`: everything literal, no escapes. */
  private singleQuote(): string {
    let out = this.opts.rawQuotes ? this.next() : (this.next(), '');
    for (;;) {
      const ch = this.next();
      if (ch === EOF)
        throw new LexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return this.opts.rawQuotes ? out + ch : out;
      out += ch;
    }
  }

  /** `"…"`: `$` substitutes; the escape character escapes only `"`, `$` and itself. */
  private doubleQuote(): string {
    let out = this.opts.rawQuotes ? this.next() : (this.next(), '');
    for (;;) {
      const ch = this.peek();
      if (ch === EOF)
        throw new LexError('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.next();
        return this.opts.rawQuotes ? out + ch : out;
      }
      if (ch === '$') {
        out += this.dollar();
        continue;
      }
      let c = this.next();
      if (c === this.opts.escape) {
        if (this.rawEscapes) out += c;
        const after = this.peek();
        if (after === EOF) continue; // reported as the missing quote on the next turn
        if (after === '"' || after === '$' || after === this.opts.escape) c = this.next();
      }
      out += c;
    }
  }

  private lookup(name: string): { value: string; set: boolean } {
    const value = this.vars.get(name);
    return value === undefined ? { value: '', set: false } : { value, set: true };
  }

  /** `$name`, `${name}` and `${name<modifier>word}`. */
  private dollar(): string {
    this.next(); // '$'
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$'; // a `$` not followed by a name is literal
      const { value, set } = this.lookup(name);
      return !set && this.opts.skipUnset ? `$${name}` : value;
    }
    this.next(); // '{'
    const first = this.peek();
    if (first === EOF) throw new LexError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new LexError('syntax error: bad substitution');
    const name = this.name();
    let op = this.next();
    if (op === '}') {
      const { value, set } = this.lookup(name);
      return !set && this.opts.skipUnset ? `\${${name}}` : value;
    }
    if (op === '/') return this.replace(name);
    let nullIsUnset = false;
    let written = op;
    if (op === ':') {
      nullIsUnset = true;
      op = this.next();
      written += op;
    } else if (op === EOF) {
      throw new LexError("syntax error: missing '}'");
    } else if (!'+-?#%'.includes(op)) {
      throw new LexError(`unsupported modifier (${op}) in substitution`);
    }
    // `#` and `%` take a pattern: escapes stay in it so `\*` can mean a literal star.
    const pattern = op === '#' || op === '%';
    let word: string;
    try {
      word = this.processUntil('}', pattern).result;
    } catch (err) {
      if (err instanceof LexError && this.peek() === EOF && !err.message.startsWith('substitutions nested')) {
        throw new LexError("syntax error: missing '}'");
      }
      throw err;
    }
    const { value, set } = this.lookup(name);
    if (!set && this.opts.skipUnset) return `\${${name}${written}${word}}`;
    const empty = !set || (nullIsUnset && value === '');
    switch (op) {
      case '-':
        return empty ? word : value;
      case '+':
        return empty ? '' : word;
      case '?':
        if (!set) throw new LexError(`${name}: ${word || 'is not allowed to be unset'}`);
        if (nullIsUnset && value === '')
          throw new LexError(`${name}: ${word || 'is not allowed to be empty'}`);
        return value;
      case '#':
      case '%': {
        const greedy = word.startsWith(op);
        return trimPattern(value, greedy ? word.slice(1) : word, op === '#' ? 'prefix' : 'suffix', greedy);
      }
      default:
        throw new LexError(`unsupported modifier (${written}) in substitution`);
    }
  }

  /** `${name/pattern/replacement}` and `${name//pattern/replacement}`. */
  private replace(name: string): string {
    const all = this.peek() === '/';
    if (all) this.next();
    const part = (stop: string, missing: string): string => {
      try {
        return this.processUntil(stop, true).result;
      } catch (err) {
        if (err instanceof LexError && this.peek() === EOF) throw new LexError(missing);
        throw err;
      }
    };
    const pat = part('/', "syntax error: missing '/' in ${}");
    const replacement = part('}', "syntax error: missing '}'");
    const { value, set } = this.lookup(name);
    if (!set && this.opts.skipUnset) return `\${${name}/${all ? '/' : ''}${pat}/${replacement}}`;
    const re = new RegExp(patternToRegex(pat, true), all ? 'gsu' : 'su');
    return value.replace(re, () => replacement);
  }

  /** A variable name: letters, digits and `_`; or a run of digits; or one special parameter. */
  private name(): string {
    let name = '';
    for (;;) {
      const ch = this.peek();
      if (ch === EOF) return name;
      if (name === '' && isDigit(ch)) {
        while (isDigit(this.peek())) name += this.next();
        return name;
      }
      if (name === '' && isSpecialParam(ch)) return this.next();
      if (!isLetter(ch) && !isDigit(ch) && ch !== '_') return name;
      name += this.next();
    }
  }
}

/**
 * Turns a shell pattern (`*`, `?`, `\` escapes; no brackets, as in BuildKit) into regular-expression source.
 * `greedy` picks `.*` over `.*?` for `*`.
 */
export function patternToRegex(pattern: string, greedy: boolean): string {
  let out = '';
  const chars = Array.from(pattern);
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === '*') out += greedy ? '.*' : '.*?';
    else if (ch === '?') out += '.';
    else if (ch === '\\') {
      const nextCh = chars[i + 1];
      if (nextCh === '}' || nextCh === '/') continue; // escaped only to get past the ${} syntax
      if (nextCh !== '*' && nextCh !== '?' && nextCh !== '\\') {
        throw new LexError(
          `invalid pattern (${pattern}) in substitution: invalid escape '\\${nextCh ?? ''}'`,
        );
      }
      out += '\\' + nextCh;
      i++;
    } else out += ch.replace(/[.*+?^${}()|[\]\\/]/gu, '\\$&');
  }
  return out;
}

/** `${v#p}`/`${v##p}` (prefix) and `${v%p}`/`${v%%p}` (suffix): removes the shortest or longest match. */
function trimPattern(value: string, pattern: string, side: 'prefix' | 'suffix', longest: boolean): string {
  const re = new RegExp(`^(?:${patternToRegex(pattern, true)})$`, 'su');
  const n = value.length;
  if (side === 'prefix') {
    for (let k = 0; k <= n; k++) {
      const len = longest ? n - k : k;
      if (re.test(value.slice(0, len))) return value.slice(len);
    }
  } else {
    for (let k = 0; k <= n; k++) {
      const len = longest ? n - k : k;
      if (re.test(value.slice(n - len))) return value.slice(0, n - len);
    }
  }
  return value;
}

/**
 * Lexes `source` once: substitutes variables from `vars`, removes quotes and escapes (unless told to keep them),
 * and splits into words. Throws {@link LexError} with docker's wording on bad syntax.
 */
export function lex(source: string, vars: ReadonlyMap<string, string>, opts: LexOptions): LexResult {
  return new Lexer(source, vars, opts).processUntil(EOF, opts.rawEscapes ?? false);
}
