/**
 * The Dockerfile instructions that change only the image config (ENV, LABEL, CMD, …), as pure functions of an
 * expanded instruction and the config in effect. They add `empty_layer` history entries, as docker does.
 */
import { posix } from 'node:path';
import { TerminalError } from '../../errors.js';
import type { ContainerConfig } from '../../oci/types.js';
import type { CommandForm, Instruction } from '../dockerfile/types.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The default shell of the shell form (`SHELL` changes it). */
export const DEFAULT_SHELL: readonly string[] = ['/bin/sh', '-c'];

/** The stage's config while it is built, plus whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD). */
export interface ConfigState {
  readonly config: ContainerConfig;
  readonly cmdSetInStage: boolean;
  /** `MAINTAINER` sets the image's author. */
  readonly author?: string;
}

/** argv of a CMD/ENTRYPOINT/RUN form: the shell form runs through `shell`. */
export function argvOf(command: CommandForm, shell: readonly string[]): string[] {
  return command.form === 'exec' ? [...command.args] : [...shell, command.command];
}

/** The shell in effect in `config` (docker keeps it in the config's `Shell`). */
export function shellOf(config: ContainerConfig): readonly string[] {
  const s = config['Shell'];
  return Array.isArray(s) && s.length > 0 && s.every((x) => typeof x === 'string')
    ? (s as string[])
    : DEFAULT_SHELL;
}

/** Sets `KEY=value` in an env list, replacing an earlier entry of the same key in place. */
export function setEnv(env: readonly string[], key: string, value: string): string[] {
  const out = [...env];
  const i = out.findIndex((e) => e.slice(0, e.indexOf('=') < 0 ? e.length : e.indexOf('=')) === key);
  if (i >= 0) out[i] = `${key}=${value}`;
  else out.push(`${key}=${value}`);
  return out;
}

/** Reads an env list as a map (a later entry of a key wins). */
export function envMap(env: readonly string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of env ?? []) {
    const i = e.indexOf('=');
    if (i < 0) m.set(e, '');
    else m.set(e.slice(0, i), e.slice(i + 1));
  }
  return m;
}

const GO_DURATION = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/;
const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds, as docker stores HEALTHCHECK times. */
export function parseGoDuration(text: string, what: string): number {
  let rest = text.trim();
  if (rest === '0') return 0;
  let total = 0;
  if (rest === '') throw new TerminalError('DOCKERFILE_INVALID', `${what}: empty duration`);
  while (rest.length > 0) {
    const m = GO_DURATION.exec(rest);
    if (!m)
      throw new TerminalError('DOCKERFILE_INVALID', `${what}: invalid duration ${JSON.stringify(text)}`);
    total += Number(m[1]) * UNIT_NS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return Math.round(total);
}

function flagValue(instr: Instruction, name: string): string | undefined {
  return instr.flags.find((f) => f.name === name)?.value;
}

/** Expands `8000-8002/tcp` into its ports, as docker's nat.ParsePortSpecs does. */
function exposedPorts(spec: string, line: number): string[] {
  const [range, proto = 'tcp'] = spec.split('/');
  const m = /^(\d+)(?:-(\d+))?$/.exec(range ?? '');
  const p = proto.toLowerCase();
  if (!m || !['tcp', 'udp', 'sctp'].includes(p))
    throw new TerminalError(
      'DOCKERFILE_INVALID',
      `Dockerfile:${line}: EXPOSE: invalid port ${JSON.stringify(spec)}`,
      {
        detail: { line },
      },
    );
  const lo = Number(m[1]);
  const hi = m[2] ? Number(m[2]) : lo;
  if (lo < 1 || hi > 65535 || hi < lo || hi - lo > 65535)
    throw new TerminalError('DOCKERFILE_INVALID', `Dockerfile:${line}: EXPOSE: invalid port range ${spec}`, {
      detail: { line },
    });
  const out: string[] = [];
  for (let n = lo; n <= hi; n++) out.push(`${n}/${p}`);
  return out;
}

/**
 * Applies a config-only instruction (already expanded) to the state; returns the new state. RUN, COPY, ADD and ARG
 * are not config instructions (INTERNAL if passed).
 */
export function applyConfigInstruction(state: ConfigState, instr: Instruction): ConfigState {
  const cfg: Mutable<ContainerConfig> = { ...state.config };
  let cmdSetInStage = state.cmdSetInStage;
  let author = state.author;
  const shell = shellOf(state.config);
  switch (instr.kind) {
    case 'ENV': {
      let env = [...(cfg.Env ?? [])];
      for (const p of instr.pairs) env = setEnv(env, p.key, p.value);
      cfg.Env = env;
      break;
    }
    case 'LABEL': {
      const labels = { ...(cfg.Labels ?? {}) };
      for (const p of instr.pairs) labels[p.key] = p.value;
      cfg.Labels = labels;
      break;
    }
    case 'EXPOSE': {
      const ports: Record<string, object> = { ...(cfg.ExposedPorts ?? {}) };
      for (const v of instr.values) for (const p of exposedPorts(v, instr.line)) ports[p] = {};
      cfg.ExposedPorts = ports;
      break;
    }
    case 'VOLUME': {
      const vols: Record<string, object> = { ...(cfg.Volumes ?? {}) };
      for (const v of instr.values) {
        if (v.trim() === '')
          throw new TerminalError(
            'DOCKERFILE_INVALID',
            `Dockerfile:${instr.line}: VOLUME specified can not be an empty string`,
            {
              detail: { line: instr.line },
            },
          );
        vols[v] = {};
      }
      cfg.Volumes = vols;
      break;
    }
    case 'WORKDIR':
      cfg.WorkingDir = posix.resolve(cfg.WorkingDir || '/', instr.value);
      break;
    case 'USER':
      cfg.User = instr.value;
      break;
    case 'STOPSIGNAL':
      cfg.StopSignal = instr.value;
      break;
    case 'SHELL':
      cfg['Shell'] = [...instr.shell];
      break;
    case 'CMD':
      cfg.Cmd = argvOf(instr.command, shell);
      cmdSetInStage = true;
      break;
    case 'ENTRYPOINT':
      cfg.Entrypoint = argvOf(instr.command, shell);
      // docker: an ENTRYPOINT resets a CMD inherited from the base image (not one set earlier in this stage).
      if (!cmdSetInStage) cfg.Cmd = null;
      break;
    case 'HEALTHCHECK': {
      if (instr.test.none) {
        cfg['Healthcheck'] = { Test: ['NONE'] };
        break;
      }
      const c = instr.test.command;
      const hc: Record<string, unknown> = {
        Test: c.form === 'exec' ? ['CMD', ...c.args] : ['CMD-SHELL', c.command],
      };
      const durations: Array<[string, string]> = [
        ['interval', 'Interval'],
        ['timeout', 'Timeout'],
        ['start-period', 'StartPeriod'],
        ['start-interval', 'StartInterval'],
      ];
      for (const [flag, field] of durations) {
        const v = flagValue(instr, flag);
        if (v !== undefined)
          hc[field] = parseGoDuration(v, `Dockerfile:${instr.line}: HEALTHCHECK --${flag}`);
      }
      const retries = flagValue(instr, 'retries');
      if (retries !== undefined) {
        if (!/^\d+$/.test(retries))
          throw new TerminalError(
            'DOCKERFILE_INVALID',
            `Dockerfile:${instr.line}: HEALTHCHECK --retries must be a whole number`,
            {
              detail: { line: instr.line },
            },
          );
        hc['Retries'] = Number(retries);
      }
      cfg['Healthcheck'] = hc;
      break;
    }
    case 'ONBUILD':
      cfg['OnBuild'] = [...((cfg['OnBuild'] as string[] | undefined) ?? []), instr.trigger];
      break;
    case 'MAINTAINER':
      author = instr.value;
      break;
    default:
      throw new TerminalError('INTERNAL', `${instr.kind} is not a config-only instruction`);
  }
  return { config: cfg, cmdSetInStage, ...(author !== undefined ? { author } : {}) };
}

/** The kinds that change only the config. */
export function isConfigInstruction(instr: Instruction): boolean {
  return !['RUN', 'COPY', 'ADD', 'ARG'].includes(instr.kind);
}
