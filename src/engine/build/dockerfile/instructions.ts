import type {
  CommandForm,
  FromInstruction,
  Heredoc,
  Instruction,
  InstructionFlag,
  OnbuildInstruction,
} from './types.js';
import { dockerfileError } from './errors.js';
import { parseFlags, parseGoDuration } from './flags.js';
import { extractFlagWords, parseJsonArray, parseWords, splitFirst, splitWhitespace } from './words.js';

/** Every instruction keyword docker knows. */
export const KEYWORDS = new Set([
  'FROM',
  'ARG',
  'ENV',
  'LABEL',
  'RUN',
  'CMD',
  'ENTRYPOINT',
  'COPY',
  'ADD',
  'WORKDIR',
  'USER',
  'STOPSIGNAL',
  'EXPOSE',
  'VOLUME',
  'SHELL',
  'HEALTHCHECK',
  'ONBUILD',
  'MAINTAINER',
]);

/** Instructions whose shell form may carry heredocs. */
const HEREDOC_KEYWORDS = new Set(['RUN', 'COPY', 'ADD']);

/** The text of one instruction and where it is. */
export interface InstructionSource {
  readonly text: string;
  readonly line: number;
  readonly endLine: number;
  readonly heredocs: readonly Heredoc[];
  /** The escape character in effect (from `# escape=`). */
  readonly escape: '\\' | '`';
}

/** Splits `KEYWORD [--flags] args` into the upper-cased keyword, the flag words and the argument text. */
export function splitInstruction(text: string): { keyword: string; flagWords: string[]; args: string } {
  const [word, rest] = splitFirst(text.trim());
  const { flags, rest: args } = extractFlagWords(rest);
  return { keyword: word.toUpperCase(), flagWords: flags, args };
}

/**
 * Whether docker reads heredoc bodies after this instruction line: RUN/COPY/ADD (also as an ONBUILD trigger) in
 * shell form.
 */
export function acceptsHeredocs(text: string): boolean {
  let { keyword, args } = splitInstruction(text);
  if (keyword === 'ONBUILD') ({ keyword, args } = splitInstruction(args));
  return HEREDOC_KEYWORDS.has(keyword) && !parseJsonArray(args).ok;
}

/**
 * Parses one logical instruction line into its typed form. Throws DOCKERFILE_INVALID naming the line for an
 * unknown instruction, a bad flag, missing or surplus arguments, or a malformed form.
 */
export function parseInstruction(src: InstructionSource): FromInstruction | Instruction {
  const fail = (msg: string): never => {
    throw dockerfileError(src.line, msg);
  };
  const { keyword, flagWords, args } = splitInstruction(src.text);
  if (!KEYWORDS.has(keyword)) fail(`unknown instruction: ${keyword}`);
  const flags = parseFlags(keyword, flagWords);
  if (typeof flags === 'string') return fail(`${keyword}: ${flags}`);
  const base = { line: src.line, endLine: src.endLine, original: src.text.trim(), flags };
  if (args === '' && !(keyword === 'COPY' || keyword === 'ADD')) {
    fail(`${keyword} requires at least one argument`);
  }

  switch (keyword) {
    case 'FROM':
      return parseFrom(base, args, fail);
    case 'ARG': {
      const list = parseWords(args, src.escape).map((word) => {
        const eq = word.indexOf('=');
        if (eq === 0) fail('ARG names can not be blank');
        return eq < 0 ? { name: word } : { name: word.slice(0, eq), default: word.slice(eq + 1) };
      });
      return { ...base, kind: 'ARG', args: list };
    }
    case 'ENV':
    case 'LABEL':
      return { ...base, kind: keyword, pairs: parseKeyValues(keyword, args, src.escape, fail) };
    case 'RUN':
      return { ...base, kind: 'RUN', command: commandForm(keyword, args, fail), heredocs: src.heredocs };
    case 'CMD':
    case 'ENTRYPOINT':
      return { ...base, kind: keyword, command: commandForm(keyword, args, fail) };
    case 'COPY':
    case 'ADD': {
      const list = listForm(keyword, args, fail);
      if (list.length < 2) {
        fail(
          `${keyword} requires at least two arguments, but only ${list.length === 0 ? 'none was' : 'one was'} provided. Destination could not be determined.`,
        );
      }
      return {
        ...base,
        kind: keyword,
        sources: list.slice(0, -1),
        destination: list[list.length - 1]!,
        heredocs: src.heredocs,
      };
    }
    case 'WORKDIR':
    case 'USER':
    case 'STOPSIGNAL':
      return { ...base, kind: keyword, value: args };
    case 'MAINTAINER':
      return { ...base, kind: 'MAINTAINER', value: args };
    case 'EXPOSE':
      return { ...base, kind: 'EXPOSE', values: splitWhitespace(args) };
    case 'VOLUME': {
      const values = listForm(keyword, args, fail).map((v) => v.trim());
      if (values.length === 0) fail('VOLUME requires at least one argument');
      if (values.some((v) => v === '')) fail('VOLUME specified can not be an empty string');
      return { ...base, kind: 'VOLUME', values };
    }
    case 'SHELL': {
      const json = parseJsonArray(args);
      if (!json.ok) return fail('SHELL requires the arguments to be in JSON form');
      if (json.values.length === 0) fail('SHELL requires at least one argument');
      return { ...base, kind: 'SHELL', shell: json.values };
    }
    case 'HEALTHCHECK':
      return parseHealthcheck(base, args, fail);
    case 'ONBUILD':
      return parseOnbuild(base, args, src, fail);
    default:
      return fail(`unknown instruction: ${keyword}`);
  }
}

type Base = {
  readonly line: number;
  readonly endLine: number;
  readonly original: string;
  readonly flags: readonly InstructionFlag[];
};
type Fail = (msg: string) => never;

const STAGE_NAME = /^[a-z][a-z0-9-_.]*$/u;

function parseFrom(base: Base, args: string, fail: Fail): FromInstruction {
  const words = splitWhitespace(args);
  if (words.length === 3 && words[1]!.toLowerCase() === 'as') {
    const stageName = words[2]!.toLowerCase();
    if (!STAGE_NAME.test(stageName)) {
      fail(`invalid name for build stage: "${words[2]}", name can't start with a number or contain symbols`);
    }
    return { ...base, kind: 'FROM', image: words[0]!, stageName };
  }
  if (words.length === 3)
    fail(`when using 3 arguments, the second argument of FROM must be "AS", not "${words[1]}"`);
  if (words.length !== 1) fail('FROM requires either one or three arguments');
  return { ...base, kind: 'FROM', image: words[0]! };
}

/** ENV/LABEL: `k=v k2="v w"` (quotes kept for expansion to remove), or the legacy `k value with spaces`. */
function parseKeyValues(
  keyword: string,
  args: string,
  escape: string,
  fail: Fail,
): Array<{ readonly key: string; readonly value: string }> {
  const words = parseWords(args, escape);
  if (!(words[0] ?? '').includes('=')) {
    const [key, value] = splitFirst(args);
    if (value === '') fail(`${keyword} must have two arguments`);
    return [{ key, value }];
  }
  return words.map((word) => {
    const eq = word.indexOf('=');
    if (eq < 0) fail(`Syntax error - can't find = in "${word}". Must be of the form: name=value`);
    if (eq === 0) fail(`${keyword} names can not be blank`);
    return { key: word.slice(0, eq), value: word.slice(eq + 1) };
  });
}

/** RUN/CMD/ENTRYPOINT: the JSON form when the text is a JSON array of strings, else the shell form. */
function commandForm(keyword: string, args: string, fail: Fail): CommandForm {
  const json = parseJsonArray(args);
  if (json.ok) return { form: 'exec', args: json.values };
  if (json.notStrings)
    fail(`${keyword}: when using JSON array syntax, arrays must be comprised of strings only`);
  return { form: 'shell', command: args };
}

/** COPY/ADD/VOLUME: a JSON array of strings, or whitespace-separated words. */
function listForm(keyword: string, args: string, fail: Fail): string[] {
  const json = parseJsonArray(args);
  if (json.ok) return json.values;
  if (json.notStrings)
    fail(`${keyword}: when using JSON array syntax, arrays must be comprised of strings only`);
  return splitWhitespace(args);
}

function parseHealthcheck(base: Base, args: string, fail: Fail): Instruction {
  const [typeWord, rest] = splitFirst(args);
  const type = typeWord.toUpperCase();
  if (type === 'NONE') {
    if (rest !== '') fail('HEALTHCHECK NONE takes no arguments');
    return { ...base, kind: 'HEALTHCHECK', test: { none: true } };
  }
  if (type !== 'CMD') fail(`Unknown type "${typeWord}" in HEALTHCHECK (try CMD)`);
  if (rest === '') fail('Missing command after HEALTHCHECK CMD');
  const command = commandForm('HEALTHCHECK', rest, fail);
  if (command.form === 'exec' && command.args.length === 0) fail('Missing command after HEALTHCHECK CMD');
  for (const flag of base.flags) {
    const value = flag.value ?? '';
    if (flag.name === 'retries') {
      if (!/^[-+]?\d+$/u.test(value)) fail(`HEALTHCHECK: invalid --retries value "${value}"`);
      if (Number(value) < 0) fail(`HEALTHCHECK: --retries cannot be negative (${value})`);
      continue;
    }
    const ms = parseGoDuration(value);
    if (ms === undefined) fail(`HEALTHCHECK: invalid duration "${value}" for --${flag.name}`);
    if (ms! < 0) fail(`HEALTHCHECK: --${flag.name} cannot be negative`);
    if (ms! > 0 && ms! < 1) fail(`HEALTHCHECK: --${flag.name} cannot be less than 1ms`);
  }
  return { ...base, kind: 'HEALTHCHECK', test: { none: false, command } };
}

function parseOnbuild(base: Base, args: string, src: InstructionSource, fail: Fail): OnbuildInstruction {
  const [word] = splitFirst(args);
  const trigger = word.toUpperCase();
  if (trigger === 'ONBUILD') fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger === 'FROM' || trigger === 'MAINTAINER') fail(`${trigger} isn't allowed as an ONBUILD trigger`);
  // The trigger must itself be a valid instruction: checked now, as docker does, not when a child build runs it.
  parseInstruction({ ...src, text: args });
  return { ...base, kind: 'ONBUILD', trigger: base.original.replace(/^\s*ONBUILD\s*/iu, '') };
}
