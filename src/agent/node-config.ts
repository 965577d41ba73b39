/**
 * The node's runtime mirror configuration, converged from a StrataNode spec with `mirror/node-config` (atomic
 * writes, backups, a manifest per directory, surgical restore). containerd: one `<configPath>/<registry>/hosts.toml`
 * per registry of every mirror entry, hosts in order node-local endpoint → cluster mirror(s) → `server`. docker:
 * `registry-mirrors` in daemon.json when the entry asks and covers docker.io. Every directory the agent ever wrote is
 * recorded in `<store>/strata/agent/node-config.json`, so a directory that drops out of the spec (or all of them, on
 * uninstall or `strata agent restore`) is restored.
 */
import { mkdir, readFile, rmdir } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import type { NodeMirrorEntry, StrataNodeSpec } from '../api/v1alpha1/stratanode.js';
import { TerminalError } from '../engine/errors.js';
import { SafeRoot } from '../engine/union/safe-path.js';
import {
  applyNodeConfig,
  restoreNodeConfig,
  writeFileAtomic,
  type NodeConfigResult,
  type PlannedFile,
} from '../mirror/node-config/apply.js';
import { normalizeDockerMirror } from '../mirror/node-config/daemon-json.js';
import { renderHostsToml, type HostsTomlHost } from '../mirror/node-config/hosts-toml.js';
import { hostsTomlPath, planDaemonJsonFile } from '../mirror/node-config/plan.js';
import { registryRoutes } from './routes.js';

/** The manifest the agent keeps in each directory it writes (apart from `strata mirror config`'s). */
export const AGENT_MANIFEST = '.strata-agent.json';

/** The comment on top of the agent's hosts.toml: on the node, `strata agent restore` is what undoes it. */
const AGENT_WRITER = { by: 'strata agent', restore: 'strata agent restore' };

/** One directory to converge: its files, and the mirror entries that depend on it. */
export interface PlannedRoot {
  /** Host path of the directory (the spec's path under `--host-root`). */
  readonly root: string;
  readonly files: PlannedFile[];
  readonly entries: readonly string[];
}

/** Per mirror entry: configured, or why not. */
export interface MirrorOutcome {
  readonly configured: boolean;
  readonly reason?: string;
  readonly message?: string;
}

/** A node path from the spec under the host root; `..` segments are refused (a spec must not escape it). */
export function underHostRoot(hostRoot: string, nodePath: string): string {
  if (!nodePath.startsWith('/') || nodePath.split('/').some((p) => p === '..' || p === '.'))
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `node path ${JSON.stringify(nodePath)} must be absolute and normalized`,
    );
  return join(hostRoot, nodePath);
}

/**
 * Plans every directory (pure): `local` is the node-local endpoint's URL; `headers` the Authorization header per
 * mirror entry name (from its credentials Secret). An entry that cannot be planned (a path escaping the host root, a
 * value hosts.toml refuses) is left out and given to `onEntryError`, so one bad entry never blocks the others.
 */
export function planNodeConfig(
  spec: StrataNodeSpec | undefined,
  options: {
    hostRoot: string;
    local: string;
    headers: ReadonlyMap<string, string>;
    onEntryError?: (entry: string, err: unknown) => void;
  },
): PlannedRoot[] {
  const mirrors = [...(spec?.mirrors ?? [])].sort((a, b) => (a.name < b.name ? -1 : 1));
  const routes = new Map(registryRoutes(spec).map((r) => [r.registry, r]));
  const hostsOf = (registry: string): HostsTomlHost[] => {
    const hosts: HostsTomlHost[] = [{ url: options.local }];
    for (const m of mirrors) {
      if (!m.registries.some((r) => r.name.toLowerCase() === registry)) continue;
      if (hosts.some((h) => h.url === m.endpoint)) continue;
      const auth = options.headers.get(m.name);
      hosts.push({ url: m.endpoint, ...(auth ? { header: { Authorization: auth } } : {}) });
    }
    return hosts;
  };
  const roots = new Map<string, { files: Map<string, PlannedFile>; entries: Set<string> }>();
  const rootOf = (path: string): { files: Map<string, PlannedFile>; entries: Set<string> } => {
    let r = roots.get(path);
    if (!r) roots.set(path, (r = { files: new Map(), entries: new Set() }));
    return r;
  };
  for (const m of mirrors) {
    // Planned whole before anything is kept: a failing entry adds no file and no directory.
    const planned: { root: string; file: PlannedFile }[] = [];
    try {
      if (m.containerd) {
        const root = underHostRoot(options.hostRoot, m.containerd.configPath);
        for (const reg of m.registries) {
          const registry = reg.name.toLowerCase();
          const server = routes.get(registry)?.server;
          const hosts = hostsOf(registry);
          const content = renderHostsToml({
            registry,
            ...(server ? { server } : {}),
            hosts,
            writer: AGENT_WRITER,
          });
          // A file with credentials is readable by root (containerd) only.
          const secret = hosts.some((h) => h.header);
          const path = hostsTomlPath(registry);
          planned.push({
            root,
            file: { path, render: () => ({ content, ...(secret ? { mode: 0o600 } : {}) }) },
          });
        }
      }
      if (m.docker && m.registries.some((r) => r.name.toLowerCase() === 'docker.io')) {
        const file = underHostRoot(options.hostRoot, m.docker.daemonJsonPath);
        const urls = hostsOf('docker.io').map((h) => normalizeDockerMirror(h.url));
        planned.push({ root: dirname(file), file: planDaemonJsonFile(basename(file), urls) });
      }
    } catch (err) {
      options.onEntryError?.(m.name, err);
      continue;
    }
    for (const p of planned) {
      const root = rootOf(p.root);
      root.entries.add(m.name);
      root.files.set(p.file.path, p.file);
    }
  }
  return [...roots.entries()].map(([root, r]) => ({
    root,
    files: [...r.files.values()],
    entries: [...r.entries],
  }));
}

interface AgentConfigState {
  version: 1;
  /** Host path → whether the agent created the directory itself. */
  roots: Record<string, { created: boolean }>;
}

/** Reads and writes the record of directories the agent wrote. */
export class NodeConfigState {
  readonly path: string;

  constructor(storeRoot: string) {
    this.path = join(storeRoot, 'strata', 'agent', 'node-config.json');
  }

  async read(): Promise<AgentConfigState> {
    try {
      const doc = JSON.parse(await readFile(this.path, 'utf8')) as AgentConfigState;
      if (doc.version === 1 && typeof doc.roots === 'object' && doc.roots) return doc;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
    }
    return { version: 1, roots: {} };
  }

  async write(state: AgentConfigState): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await writeFileAtomic(this.path, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o644 });
  }
}

/** What one convergence did: per entry outcome, and the file actions and warnings for logs and metrics. */
export interface ConvergeResult {
  readonly outcomes: Map<string, MirrorOutcome>;
  readonly results: NodeConfigResult[];
  readonly errors: { root: string; err: unknown }[];
}

/** Restores one directory and forgets it (removing it when the agent made it and it is now empty). */
async function restoreRoot(root: string, created: boolean): Promise<NodeConfigResult | undefined> {
  const result = await restoreNodeConfig({ root, manifestName: AGENT_MANIFEST }).catch((err: unknown) => {
    if ((err as { code?: string }).code === 'NOT_FOUND') return undefined;
    throw err;
  });
  if (created) await rmdir(root).catch(() => undefined);
  return result;
}

/**
 * Makes `dir` (a host path under `hostRoot`) and answers whether its last directory was made. Under a host root other
 * than `/`, a path through a symlink is refused: one planted in the mounted host directories could lead the agent
 * to write outside them. (With `/`, the host's own resolution is the node's.)
 */
async function makeConfigDir(hostRoot: string, dir: string): Promise<boolean> {
  const rel = relative(hostRoot, dir);
  let made = false;
  try {
    await mkdir(hostRoot, { recursive: true });
    const safe = await SafeRoot.open(hostRoot, async (_host, r) => void (made ||= r === rel));
    const walk = await safe.resolve(`${rel}/${AGENT_MANIFEST}`, {
      create: true,
      followSymlinks: resolve(hostRoot) === '/',
    });
    if (walk.status !== 'ok')
      throw new TerminalError(
        'CONFLICT',
        `${dir}: ${walk.status === 'refused' ? walk.reason : 'missing'}; refusing to write there`,
      );
  } catch (err) {
    if (err instanceof TerminalError) throw err;
    throw new TerminalError('INVALID_ARGUMENT', `cannot create ${dir}: ${(err as Error).message}`);
  }
  return made;
}

/** Applies `planned` (directories under `hostRoot`) and restores every recorded directory not in it. */
export async function convergeNodeConfig(
  planned: readonly PlannedRoot[],
  state: NodeConfigState,
  hostRoot: string,
  signal?: AbortSignal,
): Promise<ConvergeResult> {
  const current = await state.read();
  const outcomes = new Map<string, MirrorOutcome>();
  const results: NodeConfigResult[] = [];
  const errors: { root: string; err: unknown }[] = [];
  const wanted = new Set(planned.map((p) => p.root));
  for (const p of planned) {
    try {
      // Checked on every pass: a symlink may be planted after the first.
      const created = await makeConfigDir(hostRoot, p.root);
      if (!current.roots[p.root]) {
        // Recorded before the first write, so a crash right after still gets restored.
        current.roots[p.root] = { created };
        await state.write(current);
      }
      results.push(
        await applyNodeConfig({
          root: p.root,
          manifestName: AGENT_MANIFEST,
          files: p.files,
          ...(signal ? { signal } : {}),
        }),
      );
      for (const e of p.entries) if (!outcomes.has(e)) outcomes.set(e, { configured: true });
    } catch (err) {
      errors.push({ root: p.root, err });
      const code = (err as { code?: string }).code ?? 'INTERNAL';
      for (const e of p.entries)
        outcomes.set(e, {
          configured: false,
          reason: code === 'CONFLICT' ? 'ConfigConflict' : 'ConfigFailed',
          message: `${p.root}: ${(err as Error).message}`.slice(0, 1000),
        });
    }
  }
  for (const [root, { created }] of Object.entries(current.roots)) {
    if (wanted.has(root)) continue;
    try {
      const r = await restoreRoot(root, created);
      if (r) results.push(r);
      delete current.roots[root];
      await state.write(current);
    } catch (err) {
      errors.push({ root, err });
    }
  }
  return { outcomes, results, errors };
}

/** Restores every directory the agent recorded (uninstall), or the given ones. */
export async function restoreAllNodeConfig(
  state: NodeConfigState,
  only?: readonly string[],
): Promise<ConvergeResult> {
  const current = await state.read();
  const results: NodeConfigResult[] = [];
  const errors: { root: string; err: unknown }[] = [];
  const roots = only ?? Object.keys(current.roots);
  for (const root of roots) {
    try {
      const r = await restoreRoot(root, current.roots[root]?.created ?? false);
      if (r) results.push(r);
      delete current.roots[root];
    } catch (err) {
      errors.push({ root, err });
    }
  }
  await state.write(current);
  return { outcomes: new Map(), results, errors };
}

/** The mirror entries of `spec` (for outcomes of entries that plan no file at all). */
export const entryNames = (spec: StrataNodeSpec | undefined): string[] =>
  (spec?.mirrors ?? []).map((m: NodeMirrorEntry) => m.name);
