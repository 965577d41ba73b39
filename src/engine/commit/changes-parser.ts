/**
 * Dockerfile-style config changes, as `docker commit -c` and `docker import -c` take them: CMD, ENTRYPOINT, ENV,
 * WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL (and ONBUILD). Pure: `applyConfigChanges` returns a new config
 * and never touches its input. Variables (`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}`) are expanded from the
 * config's Env where a Dockerfile would expand them; single quotes and `\$` prevent expansion.
 */
import { posix } from 'node:path';
import { TerminalError } from '../errors.js';
import type { ContainerConfig } from '../oci/types.js';

/** The instructions `-c` accepts. */
export const SUPPORTED_INSTRUCTIONS = [
  'CMD',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'LABEL',
  'ONBUILD',
  'STOPSIGNAL',
  'USER',
  'VOLUME',
  'WORKDIR',
] as const;

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function bad(instr: string, why: string): TerminalError {
  return new TerminalError('INVALID_ARGUMENT', `change ${JSON.stringify(instr)}: ${why}`);
}

/** Parses a JSON array of strings (exec form), or undefined when `s` is not one. */
export function parseJsonArray(s: string): string[] | undefined {
  const t = s.trim();
  if (!t.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(t);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  } catch {
    // not JSON: shell form
  }
  return undefined;
}

function envLookup(env: readonly string[] | undefined, name: string): string | undefined {
  for (let i = (env?.length ?? 0) - 1; i >= 0; i--) {
    const e = env![i]!;
    const eq = e.indexOf('=');
    if ((eq < 0 ? e : e.slice(0, eq)) === name) return eq < 0 ? '' : e.slice(eq + 1);
  }
  return undefined;
}

/**
 * Splits `s` into words the way the Dockerfile parser does for ENV/LABEL/EXPOSE/VOLUME: whitespace separates,
 * double quotes group (with `\` escapes and expansion), single quotes group literally, `\` escapes one character.
 * With `expand`, `$VAR` forms are replaced from `env`. Pure.
 */
export function splitWords(s: string, env: readonly string[] | undefined, expand = true): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let i = 0;
  const variable = (): string => {
    // at s[i] === '$'
    if (s[i + 1] === '{') {
      const end = s.indexOf('}', i + 2);
      if (end < 0) throw new TerminalError('INVALID_ARGUMENT', `missing '}' in ${JSON.stringify(s)}`);
      const body = s.slice(i + 2, end);
      i = end + 1;
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?$/.exec(body);
      if (!m)
        throw new TerminalError('INVALID_ARGUMENT', `bad substitution \${${body}} in ${JSON.stringify(s)}`);
      const value = envLookup(env, m[1]!);
      if (m[2] === '-') return value ? value : (m[3] ?? '');
      if (m[2] === '+') return value ? (m[3] ?? '') : '';
      return value ?? '';
    }
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(i + 1));
    if (!m) {
      i++;
      return '$';
    }
    i += 1 + m[0].length;
    return envLookup(env, m[0]) ?? '';
  };
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
      i++;
      continue;
    }
    inWord = true;
    if (c === '\\' && i + 1 < s.length) {
      cur += s[i + 1];
      i += 2;
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new TerminalError('INVALID_ARGUMENT', `unmatched ' in ${JSON.stringify(s)}`);
      cur += s.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= s.length) throw new TerminalError('INVALID_ARGUMENT', `unmatched " in ${JSON.stringify(s)}`);
        const d = s[i]!;
        if (d === '"') {
          i++;
          break;
        }
        if (d === '\\' && (s[i + 1] === '"' || s[i + 1] === '\\' || s[i + 1] === '$')) {
          cur += s[i + 1];
          i += 2;
        } else if (d === '$' && expand) cur += variable();
        else {
          cur += d;
          i++;
        }
      }
    } else if (c === '$' && expand) cur += variable();
    else {
      cur += c;
      i++;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

/** Parses `k=v k2=v2` pairs, or the legacy `k v with spaces` form (one pair). */
function parsePairs(
  instr: string,
  args: string,
  env: readonly string[] | undefined,
): Array<[string, string]> {
  const words = splitWords(args, env);
  if (words.length === 0) throw bad(instr, 'needs at least one argument');
  if (!words[0]!.includes('=')) {
    // Legacy form: the first word is the key, the rest of the line (expanded) is the value.
    const m = /^\s*(\S+)\s+([\s\S]*)$/.exec(args);
    if (!m) throw bad(instr, 'needs a value');
    return [[m[1]!, splitWords(m[2]!, env).join(' ')]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw bad(instr, `${JSON.stringify(w)} is not key=value`);
    return [w.slice(0, eq), w.slice(eq + 1)] as [string, string];
  });
}

const PORT_RE = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp|sctp))?$/i;

/** State carried across the instructions of one set (as the Dockerfile builder does: CMD set explicitly). */
interface ParseState {
  cmdSet: boolean;
}

function applyOne(cfg: Mutable<ContainerConfig>, instr: string, state: ParseState): void {
  const m = /^\s*([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(instr);
  if (!m) throw bad(instr, 'empty or malformed instruction');
  const keyword = m[1]!.toUpperCase();
  const args = (m[2] ?? '').trim();
  const env = cfg.Env;
  const execOrShell = (): string[] => {
    const json = parseJsonArray(args);
    if (json) return json;
    if (args === '') throw bad(instr, `${keyword} needs a command`);
    return ['/bin/sh', '-c', args];
  };
  switch (keyword) {
    case 'CMD':
      cfg.Cmd = execOrShell();
      state.cmdSet = true;
      return;
    case 'ENTRYPOINT':
      cfg.Entrypoint = parseJsonArray(args) ?? (args === '' ? [] : ['/bin/sh', '-c', args]);
      // Docker: setting ENTRYPOINT resets an inherited CMD unless CMD was set in the same set of changes.
      if (!state.cmdSet) cfg.Cmd = null;
      return;
    case 'ENV': {
      const next = [...(cfg.Env ?? [])];
      for (const [k, v] of parsePairs(instr, args, env)) {
        const i = next.findIndex((e) => e === k || e.startsWith(`${k}=`));
        if (i >= 0) next[i] = `${k}=${v}`;
        else next.push(`${k}=${v}`);
        cfg.Env = next;
      }
      cfg.Env = next;
      return;
    }
    case 'LABEL': {
      const labels = { ...(cfg.Labels ?? {}) };
      for (const [k, v] of parsePairs(instr, args, env)) labels[k] = v;
      cfg.Labels = labels;
      return;
    }
    case 'EXPOSE': {
      const ports = { ...(cfg.ExposedPorts ?? {}) };
      const words = splitWords(args, env);
      if (words.length === 0) throw bad(instr, 'EXPOSE needs a port');
      for (const w of words) {
        const p = PORT_RE.exec(w);
        if (!p) throw bad(instr, `invalid port ${JSON.stringify(w)} (want PORT[-END][/tcp|udp|sctp])`);
        const start = Number(p[1]);
        const end = p[2] !== undefined ? Number(p[2]) : start;
        const proto = (p[3] ?? 'tcp').toLowerCase();
        if (start < 1 || end > 65535 || end < start)
          throw bad(instr, `invalid port range ${JSON.stringify(w)}`);
        for (let port = start; port <= end; port++) ports[`${port}/${proto}`] = {};
      }
      cfg.ExposedPorts = ports;
      return;
    }
    case 'VOLUME': {
      const vols = { ...(cfg.Volumes ?? {}) };
      const list = parseJsonArray(args) ?? splitWords(args, env);
      if (list.length === 0) throw bad(instr, 'VOLUME needs a path');
      for (const v of list) {
        if (v.trim() === '') throw bad(instr, 'VOLUME paths must not be empty');
        vols[v] = {};
      }
      cfg.Volumes = vols;
      return;
    }
    case 'WORKDIR': {
      const [dir] = [splitWords(args, env).join(' ')];
      if (!dir) throw bad(instr, 'WORKDIR needs a path');
      cfg.WorkingDir = posix.isAbsolute(dir) ? posix.normalize(dir) : posix.join(cfg.WorkingDir || '/', dir);
      return;
    }
    case 'USER': {
      const user = splitWords(args, env).join(' ');
      if (!user) throw bad(instr, 'USER needs a user');
      cfg.User = user;
      return;
    }
    case 'STOPSIGNAL': {
      const sig = splitWords(args, env).join(' ');
      if (!/^(?:SIG)?[A-Z0-9+-]+$/i.test(sig) || sig === '')
        throw bad(instr, `invalid signal ${JSON.stringify(sig)} (want e.g. SIGTERM or 15)`);
      cfg.StopSignal = sig;
      return;
    }
    case 'ONBUILD': {
      if (args === '') throw bad(instr, 'ONBUILD needs an instruction');
      const inner = /^([A-Za-z]+)/.exec(args)?.[1]?.toUpperCase();
      if (inner === 'ONBUILD' || inner === 'FROM' || inner === 'MAINTAINER')
        throw bad(instr, `${inner} is not allowed as an ONBUILD trigger`);
      cfg.OnBuild = [...((cfg.OnBuild as string[] | undefined) ?? []), args];
      return;
    }
    default:
      throw bad(
        instr,
        `unknown or unsupported instruction ${keyword} (supported: ${SUPPORTED_INSTRUCTIONS.join(', ')})`,
      );
  }
}

/**
 * Applies `-c` instructions in order to a container config and returns the new config (the input is not changed).
 * Throws INVALID_ARGUMENT naming the instruction on anything unknown or malformed.
 */
export function applyConfigChanges(
  config: ContainerConfig | undefined,
  instructions: readonly string[],
): ContainerConfig {
  const cfg: Mutable<ContainerConfig> = { ...(config ?? {}) };
  const state: ParseState = { cmdSet: false };
  for (const instr of instructions) applyOne(cfg, instr, state);
  return cfg;
}
