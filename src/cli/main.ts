import { STRATA_VERSION } from './version.js';
import { Command, CommanderError, Option } from 'commander';
import { readEnvironment } from '../config/index.js';
import { parsePlatform, type Platform } from '../engine/oci/platform.js';
import { registerEngineCommands } from './engine-commands.js';
import { registerRegistryCommands } from './registry-commands.js';
import { registerMirrorCommands } from './mirror-commands.js';
import { registerArchiveCommands } from './archive-commands.js';
import { registerContainerCommands } from './container-commands.js';
import { registerCommitCommands } from './commit-commands.js';
import { registerBuildCommands } from './build-commands.js';
import { registerControllerCommand } from './controller-command.js';
import { registerAgentCommand } from './agent-command.js';
import type { GlobalOptions } from './context.js';
import { cliErrorReport } from './errors.js';
import { LOG_LEVELS } from './logger.js';

/** Builds the `strata` command tree; `argv` excludes the node binary and script. */
export function buildProgram(): Command {
  const env = readEnvironment();
  const program = new Command('strata')
    .description(
      'Container images without a daemon: pull, push and copy them, import, tag, inspect and remove them in a ' +
        'local store (an OCI image layout), make containers of them, commit their changes, build Dockerfiles (RUN ' +
        'through runc), save and load archives, serve an embedded OCI registry and a pull-through registry mirror, ' +
        "and point a node's containerd or docker at registry mirrors (mirror config); run the Kubernetes operator " +
        '(controller).',
    )
    .version(STRATA_VERSION)
    .addOption(
      new Option('--store <dir>', 'local image store (an OCI image layout)').default(
        env.storeDir,
        '$STRATA_STORE or ~/.local/share/strata/store',
      ),
    )
    .option('--json', 'machine-readable output (JSON, and JSON-lines progress events)', false)
    .option('-q, --quiet', 'no progress output', false)
    .option(
      '--insecure-registry <host>',
      'skip TLS verification for this registry, falling back to plain HTTP (repeatable; loopback hosts are always plain HTTP)',
      collect,
      [...env.insecureRegistries],
    )
    .addOption(
      new Option(
        '--log-level <level>',
        'engine log lines (pino JSON) on standard error at this level and above',
      )
        .choices(LOG_LEVELS)
        .default('warn'),
    )
    .addOption(
      new Option(
        '--max-uncompressed <size>',
        'cap on what one layer (unpack, create, build steps) or one gzip archive (load) may expand to, e.g. 512m ' +
          '(default: $STRATA_MAX_UNCOMPRESSED, else 64g)',
      ).default(env.maxUncompressed),
    )
    // A usage error is one line plus a hint (set per command below), not the whole help.
    .configureOutput({ outputError: (text, write) => write(`strata: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  registerEngineCommands(program, env);
  registerRegistryCommands(program, env);
  registerMirrorCommands(program, env);
  registerArchiveCommands(program, env);
  registerContainerCommands(program, env);
  registerCommitCommands(program, env);
  registerBuildCommands(program, env);
  registerControllerCommand(program, env);
  registerAgentCommand(program, env);
  for (const cmd of allCommands(program)) cmd.showHelpAfterError(`see '${commandPath(cmd)} --help'`);
  return program;
}

/** A command and every subcommand below it. */
function allCommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(allCommands)];
}

/** `strata registry serve`: the names from the root down to `cmd`. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Collects a repeatable option's values. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Parses repeated `--platform` values. */
export function platformsOption(values: readonly string[] | undefined): Platform[] | undefined {
  return values && values.length > 0 ? values.map(parsePlatform) : undefined;
}

export type { GlobalOptions };

/** Exit status of a command interrupted by Ctrl-C (128 + SIGINT), as shells and docker report it. */
export const EXIT_INTERRUPTED = 130;

/**
 * Runs the CLI with `argv` (as `process.argv`) and resolves with the exit code: 0 on success, 1 on an error
 * (printed as one line naming the reference and the cause), 2 on a usage error, 130 when interrupted. With
 * `--json` the error is also written to stdout as `{"type":"error","code":…,"message":…}`, so machines can branch
 * on the stable code.
 */
export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  let verb: Command = program;
  program.hook('preAction', (_root, action) => void (verb = action));
  try {
    await program.parseAsync([...argv]);
    // A verb that passes on a status of its own (`run`: its command's) sets process.exitCode.
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    // What the user asked for, to name it in a message that would otherwise be a bare Node error.
    const what = [commandPath(verb).replace(/^strata ?/, ''), ...verb.args].join(' ');
    const { code, message } = cliErrorReport(err, what);
    process.stderr.write(`strata: ${message}\n`);
    if (code === 'INVALID_ARGUMENT') process.stderr.write(`see '${commandPath(verb)} --help'\n`);
    if (process.env.STRATA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    if (program.opts<{ json?: boolean }>().json)
      process.stdout.write(`${JSON.stringify({ type: 'error', code, message })}\n`);
    if (code === 'ABORTED') return EXIT_INTERRUPTED;
    return code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
}
