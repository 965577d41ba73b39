import { Command, CommanderError, Option } from 'commander';
import { readEnvironment } from '../config/index.js';
import { describeError, StrataError } from '../engine/errors.js';
import { parsePlatform, type Platform } from '../engine/oci/platform.js';
import { registerEngineCommands } from './engine-commands.js';
import { registerRegistryCommands } from './registry-commands.js';
import { registerArchiveCommands } from './archive-commands.js';
import { registerContainerCommands } from './container-commands.js';
import { registerCommitCommands } from './commit-commands.js';
import type { GlobalOptions } from './context.js';

/** Builds the `strata` command tree; `argv` excludes the node binary and script. */
export function buildProgram(): Command {
  const env = readEnvironment();
  const program = new Command('strata')
    .description(
      'Pull, build, commit and push container images; mirror registries; and do it cluster-wide as a Kubernetes operator.',
    )
    .version('0.1.0')
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
    .showHelpAfterError()
    .exitOverride();
  registerEngineCommands(program, env);
  registerRegistryCommands(program, env);
  registerArchiveCommands(program, env);
  registerContainerCommands(program, env);
  registerCommitCommands(program, env);
  return program;
}

/** Collects a repeatable option's values. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
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
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const message = describeError(err);
    process.stderr.write(`strata: ${message}\n`);
    if (process.env.STRATA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    const code =
      err instanceof StrataError
        ? err.code
        : err instanceof Error && err.name === 'AbortError' // Node's own, from a stream or timer aborted by Ctrl-C
          ? 'ABORTED'
          : 'INTERNAL';
    if (program.opts<{ json?: boolean }>().json)
      process.stdout.write(`${JSON.stringify({ type: 'error', code, message })}\n`);
    if (code === 'ABORTED') return EXIT_INTERRUPTED;
    return code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
}
