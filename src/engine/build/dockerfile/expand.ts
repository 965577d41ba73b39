import { TerminalError } from '../../errors.js';
import type { FromInstruction, Instruction, InstructionFlag } from './types.js';
import { dockerfileError } from './errors.js';
import { parseHeredocMarker } from './heredoc.js';
import { lex, LexError } from './lex.js';

type Escape = '\\' | '`';

function run<T>(word: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof LexError) {
      throw new TerminalError('DOCKERFILE_INVALID', `failed to process "${word}": ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}

/**
 * Substitutes variables in one word as docker does for instruction arguments: `$V`, `${V}`, `${V:-w}`, `${V-w}`,
 * `${V:+w}`, `${V+w}`, `${V:?msg}`/`${V?msg}` (error when unset/empty), `${V#p}`/`${V##p}`/`${V%p}`/`${V%%p}`,
 * `${V/p/r}`/`${V//p/r}`; quotes removed (nothing expands inside `'…'`); the escape character escapes the next
 * character. Unknown variables become "". Throws DOCKERFILE_INVALID on bad syntax (`${V:x}`, unterminated quote).
 */
export function expandWord(word: string, vars: ReadonlyMap<string, string>, escape: Escape = '\\'): string {
  return run(word, () => lex(word, vars, { escape }).result);
}

/**
 * Like {@link expandWord}, then splits the result into words on unquoted white space — including white space that
 * came from a substituted value, as docker does for EXPOSE. Quoted empty strings vanish, as in docker.
 */
export function expandWords(
  word: string,
  vars: ReadonlyMap<string, string>,
  escape: Escape = '\\',
): string[] {
  return run(word, () => [...lex(word, vars, { escape }).words]);
}

/**
 * Substitutes variables in a COPY/ADD heredoc body whose delimiter was unquoted, as BuildKit does: `$` references
 * and `\` escapes are processed, quotes are ordinary characters.
 */
export function expandHeredoc(content: string, vars: ReadonlyMap<string, string>): string {
  return run(content, () => lex(content, vars, { escape: '\\', skipProcessQuotes: true }).result);
}

/** Words that are safe to print bare in a rendered instruction; anything else is quoted so the text is unambiguous. */
const BARE = /^[^\s"'\\$]+$/u;
const quote = (s: string): string => {
  if (BARE.test(s)) return s;
  return s.includes("'") ? JSON.stringify(s) : `'${s}'`; // single quotes: a `$` in a value reads back literally
};
const renderFlags = (flags: readonly InstructionFlag[]): string =>
  flags.map((f) => ` --${f.name}${f.value === undefined ? '' : `=${quote(f.value)}`}`).join('');

/** COPY/ADD/RUN flags whose values docker substitutes (`--link` and other booleans have none). */
const EXPANDED_FLAGS: Readonly<Record<string, ReadonlySet<string>>> = {
  FROM: new Set(['platform']),
  COPY: new Set(['from', 'chown', 'chmod', 'exclude']),
  ADD: new Set(['chown', 'chmod', 'checksum', 'exclude']),
  RUN: new Set(['mount']),
};

/**
 * Returns a copy of `instr` with variables from `vars` substituted in exactly the fields docker substitutes:
 * FROM image and `--platform`; ARG names and defaults; ENV and LABEL keys and values; COPY/ADD sources (not heredoc
 * markers), destination and `--from/--chown/--chmod/--checksum/--exclude`; WORKDIR, USER, STOPSIGNAL; EXPOSE (split
 * into words after substitution); VOLUME; RUN `--mount`. RUN/CMD/ENTRYPOINT commands, SHELL, HEALTHCHECK, ONBUILD
 * and MAINTAINER are left as written (the shell or a later build expands them). For instructions that are
 * substituted, `original` becomes the instruction re-rendered from the substituted fields (what history and cache
 * keys show); otherwise it is unchanged. Errors are DOCKERFILE_INVALID naming the instruction's line.
 */
export function expandInstruction<T extends Instruction | FromInstruction>(
  instr: T,
  vars: ReadonlyMap<string, string>,
  escape: Escape,
): T {
  try {
    // Each case returns a value of the same kind as `instr`; the cast only restores the generic parameter.
    return expandUnchecked(instr, vars, escape) as T;
  } catch (err) {
    if (err instanceof TerminalError && err.code === 'DOCKERFILE_INVALID' && err.detail?.line === undefined) {
      throw dockerfileError(instr.line, `${instr.kind}: ${err.message}`, err);
    }
    throw err;
  }
}

function expandUnchecked(
  instr: Instruction | FromInstruction,
  vars: ReadonlyMap<string, string>,
  escape: Escape,
): Instruction | FromInstruction {
  const w = (s: string): string => expandWord(s, vars, escape);
  const expandable = EXPANDED_FLAGS[instr.kind];
  const flags = instr.flags.map((f) =>
    expandable?.has(f.name) && f.value !== undefined ? { name: f.name, value: w(f.value) } : f,
  );
  const head = `${instr.kind}${renderFlags(flags)}`;
  const i = instr;
  switch (i.kind) {
    case 'FROM': {
      const image = w(i.image);
      if (image === '') throw dockerfileError(i.line, `base name (${i.image}) should not be blank`);
      const as = i.stageName === undefined ? '' : ` AS ${i.stageName}`;
      return { ...i, flags, image, original: `${head} ${quote(image)}${as}` };
    }
    case 'ARG': {
      const args = i.args.map((a) =>
        a.default === undefined ? { name: w(a.name) } : { name: w(a.name), default: w(a.default) },
      );
      const text = args.map((a) => (a.default === undefined ? a.name : `${a.name}=${quote(a.default)}`));
      return { ...i, args, original: `${head} ${text.join(' ')}` };
    }
    case 'ENV':
    case 'LABEL': {
      const pairs = i.pairs.map((p) => ({ key: w(p.key), value: w(p.value) }));
      const text = pairs.map((p) => `${quote(p.key)}=${quote(p.value)}`);
      return { ...i, pairs, original: `${head} ${text.join(' ')}` };
    }
    case 'COPY':
    case 'ADD': {
      // A heredoc marker names a heredoc body, not a path: docker leaves it alone.
      const sources = i.sources.map((s) => (parseHeredocMarker(s) ? s : w(s)));
      const destination = w(i.destination);
      const all = [...sources, destination];
      const args = all.every((s) => BARE.test(s) || parseHeredocMarker(s))
        ? all.join(' ')
        : JSON.stringify(all);
      return { ...i, flags, sources, destination, original: `${head} ${args}` };
    }
    case 'WORKDIR':
    case 'USER':
    case 'STOPSIGNAL': {
      const value = w(i.value);
      return { ...i, value, original: `${head} ${value}` };
    }
    case 'EXPOSE': {
      const values = i.values.flatMap((v) => expandWords(v, vars, escape));
      return { ...i, values, original: `${head} ${values.join(' ')}` };
    }
    case 'VOLUME': {
      const values = i.values.map(w);
      const args = values.every((v) => BARE.test(v)) ? values.join(' ') : JSON.stringify(values);
      return { ...i, values, original: `${head} ${args}` };
    }
    case 'RUN':
      // The command is the shell's to expand; only --mount is substituted, and history shows RUN as written.
      return { ...i, flags };
    default:
      return { ...i };
  }
}
