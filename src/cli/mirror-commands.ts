import { access, constants } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import type { NodeConfigResult } from '../mirror/node-config/apply.js';
import { globalOptions } from './context.js';
import { registerMirrorServeCommand } from './mirror-serve-command.js';

interface ConfigOptions {
  containerd?: string;
  docker?: string;
  mirror?: string[];
  registry?: string[];
  overridePath?: boolean;
  skipVerify?: boolean;
  ca?: string[];
  dialTimeout?: string;
  restore?: boolean;
  dryRun?: boolean;
}

/** Manifest of the docker side, next to daemon.json (the containerd side has `.strata-mirror.json` in DIR). */
export const DOCKER_MANIFEST = '.strata-mirror-docker.json';

/** Collects a repeatable option (no default, so help shows none). */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Creates `strata mirror` with `serve` (the pull-through cache) and `config` (a node's runtime pointed at it). */
export function registerMirrorCommands(program: Command, env: StrataEnvironment): Command {
  const mirror = program
    .command('mirror')
    .description(
      'the registry mirror: a pull-through cache of upstream registries, and node mirror configuration',
    );
  registerMirrorServeCommand(mirror, env);
  registerMirrorConfigCommand(mirror, env);
  return mirror;
}

/**
 * Registers `strata mirror config`: writes containerd `hosts.toml` files (`--containerd DIR`) and/or merges
 * docker's `registry-mirrors` (`--docker FILE`), with backups; `--restore` undoes it.
 */
export function registerMirrorConfigCommand(mirror: Command, _env: StrataEnvironment): void {
  mirror
    .command('config')
    .description(
      "point this node's container runtime at mirrors: containerd hosts.toml files under DIR (one per --registry), " +
        "and/or docker's daemon.json registry-mirrors (Docker Hub only); existing files are backed up once and " +
        '--restore puts them back',
    )
    .option('--containerd <dir>', "containerd's registry config_path (e.g. /etc/containerd/certs.d)")
    .option(
      '--docker <file>',
      "docker's daemon.json (e.g. /etc/docker/daemon.json); docker mirrors Docker Hub only",
    )
    .option('--mirror <url>', 'mirror URL, tried in the order given (repeatable)', collect)
    .option(
      '--registry <host>',
      'registry to mirror through containerd (repeatable; default docker.io)',
      collect,
      [],
    )
    .option('--override-path', "the mirror URL's path is its API root (no /v2 appended)")
    .option('--skip-verify', "skip TLS verification of the mirrors' certificates")
    .option('--ca <file>', 'CA certificate file for the mirrors (repeatable)', collect)
    .addOption(new Option('--dial-timeout <duration>', 'connect timeout before falling back, e.g. 5s'))
    .option('--restore', 'put back what strata replaced, remove what it created')
    .option('--dry-run', 'print what would be written, change nothing')
    .action(async (given: ConfigOptions, cmd: Command) => {
      const opts = {
        ...given,
        mirror: given.mirror ?? [],
        registry: given.registry ?? [],
        ca: given.ca ?? [],
      };
      const json = globalOptions(cmd).json;
      if (!opts.containerd && !opts.docker)
        throw new TerminalError('INVALID_ARGUMENT', 'give --containerd DIR, --docker FILE, or both');
      if (!opts.restore && opts.mirror.length === 0)
        throw new TerminalError('INVALID_ARGUMENT', 'give at least one --mirror URL (or --restore)');
      // Loaded here so that other verbs do not pay for the TOML library at startup.
      const nc = await import('../mirror/node-config/index.js');
      const dryRun = opts.dryRun ?? false;
      const results: { target: string; result: NodeConfigResult }[] = [];

      // Plan both sides before writing either, so that a bad value changes nothing.
      const containerdFiles =
        opts.containerd && !opts.restore
          ? nc.planHostsTomlFiles(
              opts.registry.length > 0 ? opts.registry : ['docker.io'],
              opts.mirror.map((url) => ({
                url,
                ...(opts.overridePath ? { overridePath: true } : {}),
                ...(opts.skipVerify ? { skipVerify: true } : {}),
                ...(opts.ca.length > 0
                  ? { ca: opts.ca.length === 1 ? resolve(opts.ca[0]!) : opts.ca.map((c) => resolve(c)) }
                  : {}),
                ...(opts.dialTimeout !== undefined ? { dialTimeout: opts.dialTimeout } : {}),
              })),
            )
          : [];
      for (const ca of opts.ca)
        await access(ca, constants.R_OK).catch((err: unknown) => {
          throw new TerminalError('NOT_FOUND', `--ca ${ca}: cannot read it`, { cause: err });
        });
      const dockerFile = opts.docker ? resolve(opts.docker) : undefined;
      const dockerMirrors = opts.docker && !opts.restore ? opts.mirror.map(nc.normalizeDockerMirror) : [];

      const dockerFiles = dockerFile ? [nc.planDaemonJsonFile(basename(dockerFile), dockerMirrors)] : [];
      // daemon.json is rendered from its current text: a dry run first refuses an invalid one before containerd's
      // files are touched.
      if (dockerFile && !opts.restore && opts.containerd && !dryRun)
        await nc.applyNodeConfig({
          root: dirname(dockerFile),
          manifestName: DOCKER_MANIFEST,
          files: dockerFiles,
          dryRun: true,
        });

      if (opts.containerd) {
        const root = opts.containerd;
        const result = opts.restore
          ? await nc.restoreNodeConfig({ root, dryRun })
          : await nc.applyNodeConfig({ root, files: containerdFiles, dryRun });
        results.push({ target: 'containerd', result });
      }
      if (dockerFile) {
        const root = dirname(dockerFile);
        const result = opts.restore
          ? await nc.restoreNodeConfig({ root, manifestName: DOCKER_MANIFEST, dryRun })
          : await nc.applyNodeConfig({
              root,
              manifestName: DOCKER_MANIFEST,
              files: dockerFiles,
              dryRun,
            });
        results.push({ target: 'docker', result });
      }

      if (json) {
        process.stdout.write(
          `${JSON.stringify({ type: 'result', verb: 'mirror config', dryRun, restore: opts.restore ?? false, results })}\n`,
        );
      } else {
        for (const { result } of results) {
          for (const a of result.actions) {
            process.stdout.write(
              `${dryRun ? 'would ' : ''}${a.action} ${a.path}${a.backup ? ` (backup ${a.backup})` : ''}\n`,
            );
            if (dryRun && a.content !== undefined)
              process.stdout.write(`${a.content.replace(/^/gm, '  ')}\n`);
          }
        }
      }
      for (const { result } of results)
        for (const w of result.warnings) process.stderr.write(`strata: warning: ${w}\n`);
    });
}
