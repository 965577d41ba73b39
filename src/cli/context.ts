import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import type { Engine } from '../engine/engine.js';
import type { RegistryApi } from '../engine/registry/types.js';
import { AbortedError, classifySystemError } from '../engine/errors.js';
import { parseByteSize } from '../config/size.js';
import { createProgress, type Progress, type ProgressMode } from './progress.js';
import { createCliLogger, type LogLevel } from './logger.js';

/** The signals that abort a verb (and let it clean up) instead of killing the process. */
const ABORT_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** The global flags every verb sees. */
export interface GlobalOptions {
  readonly store: string;
  readonly json: boolean;
  readonly quiet: boolean;
  readonly insecureRegistry: string[];
  readonly logLevel: LogLevel;
  /** `--max-uncompressed` (default `$STRATA_MAX_UNCOMPRESSED`), unparsed. */
  readonly maxUncompressed?: string;
}

/** Everything a verb needs, built from the global flags; `close` releases connections. */
export interface CliContext {
  readonly engine: Engine;
  readonly options: GlobalOptions;
  readonly signal: AbortSignal;
  /** The verb's progress renderer; engine events (layer apply, commit, retries) reach it too. */
  progress(): Progress;
  /** Writes a result line to standard output, after drawing the final progress state. */
  print(text: string): void;
  close(): Promise<void>;
}

/** The global options of the root command, seen from any subcommand. */
export function globalOptions(cmd: Command): GlobalOptions {
  return rootOf(cmd).opts<GlobalOptions>();
}

function rootOf(cmd: Command): Command {
  let root = cmd;
  while (root.parent) root = root.parent;
  return root;
}

/** How a verb uses standard output. */
export interface ContextOptions {
  /** Standard output carries data (an archive, or one JSON document): `--json` events go to standard error instead. */
  readonly dataOnStdout?: boolean;
}

/**
 * Opens the store and a registry client for a verb; Ctrl-C aborts the verb's signal. Engine events go to the
 * verb's progress renderer, engine logs to pino on standard error at `--log-level`.
 */
export async function openContext(
  cmd: Command,
  env: StrataEnvironment,
  contextOptions: ContextOptions = {},
): Promise<CliContext> {
  const options = globalOptions(cmd);
  // Parsed before anything opens: a bad size fails the verb at once, naming where it came from.
  const maxUncompressedBytes =
    options.maxUncompressed !== undefined
      ? parseByteSize(
          options.maxUncompressed,
          rootOf(cmd).getOptionValueSource('maxUncompressed') === 'default'
            ? '$STRATA_MAX_UNCOMPRESSED'
            : '--max-uncompressed',
        )
      : undefined;
  // Loaded on first use: `--help` and `--version` stay as fast as Node itself allows (docs/adr/0005-bundled-cli.md).
  const [{ Engine }, { FsStore }, { createObserver }] = await Promise.all([
    import('../engine/engine.js'),
    import('../engine/store/fs-store.js'),
    import('../engine/observe.js'),
  ]);
  const mode: ProgressMode = options.json
    ? 'json'
    : options.quiet
      ? 'quiet'
      : process.stderr.isTTY
        ? 'tty'
        : 'plain';
  const progress = createProgress(
    mode,
    process.stderr,
    contextOptions.dataOnStdout ? process.stderr : process.stdout,
  );
  // One observer for store, registry client and engine: lock waits, leases, HTTP exchanges and retries all reach
  // the progress renderer and the log.
  const observer = createObserver({
    logger: createCliLogger(options.logLevel),
    listeners: [progress.listener],
  });
  const store = await FsStore.open(options.store, { observer }).catch((err: unknown) => {
    throw classifySystemError(err, `cannot open the store ${options.store} (--store or $STRATA_STORE)`);
  });
  // The registry client (and node:http with it) loads only when a verb talks to a registry.
  const registry = lazyRegistry(async () => {
    const [{ RegistryClient }, { DockerConfigCredentials }, { parseHttpTimeouts }] = await Promise.all([
      import('../engine/registry/client.js'),
      import('../engine/registry/credentials.js'),
      import('../engine/registry/timeouts.js'),
    ]);
    return new RegistryClient({
      credentials: new DockerConfigCredentials({ path: env.dockerConfigPath }),
      insecureRegistries: options.insecureRegistry,
      certsDirs: env.certsDirs,
      ...(env.httpTimeouts ? { timeouts: parseHttpTimeouts(env.httpTimeouts) } : {}),
      observer,
    });
  });
  const controller = new AbortController();
  // The reason is what an aborted call rethrows: an AbortedError, so the CLI's exit status does not depend on which
  // layer noticed the abort first.
  // Ctrl-C, `kill`, `timeout`, a closed terminal or a pod's deletion all abort the verb the same way, so it can
  // clean up (kill a RUN step's processes, unmount, remove step containers). A repeated signal while that runs is
  // ignored rather than killing the process halfway through its cleanup.
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    controller.abort(new AbortedError(signal === 'SIGINT' ? 'interrupted' : `interrupted (${signal})`));
  };
  for (const s of ABORT_SIGNALS) process.on(s, onSignal);
  const engine = new Engine({
    store,
    registry: registry.api,
    observer,
    ...(maxUncompressedBytes !== undefined ? { maxUncompressedBytes } : {}),
  });
  return {
    engine,
    options,
    signal: controller.signal,
    progress: () => progress,
    print: (text) => {
      progress.finish(); // the final state of the bars first, then the result
      process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    },
    close: async () => {
      progress.finish();
      // An aborted verb is on its way out with 130: keep swallowing repeated signals until the process exits, or a
      // second Ctrl-C arriving just after the cleanup would still kill it by signal.
      if (!controller.signal.aborted) for (const s of ABORT_SIGNALS) process.off(s, onSignal);
      await registry.close();
    },
  };
}

/** A {@link RegistryApi} that creates the real client on its first call; `close` releases it if it was made. */
function lazyRegistry(make: () => Promise<RegistryApi & { close(): Promise<void> }>): {
  api: RegistryApi;
  close(): Promise<void>;
} {
  let client: Promise<RegistryApi & { close(): Promise<void> }> | undefined;
  const api = new Proxy({} as RegistryApi, {
    get:
      (_target, method) =>
      async (...args: unknown[]) => {
        const real = await (client ??= make());
        return Reflect.apply(Reflect.get(real, method) as (...a: unknown[]) => unknown, real, args);
      },
  });
  return { api, close: async () => void (client && (await (await client).close())) };
}

/** Runs a verb with a context and always closes it (drawing the final progress, also on failure). */
export async function withContext(
  cmd: Command,
  env: StrataEnvironment,
  fn: (ctx: CliContext) => Promise<void>,
  contextOptions: ContextOptions = {},
): Promise<void> {
  const ctx = await openContext(cmd, env, contextOptions);
  try {
    await fn(ctx);
  } finally {
    await ctx.close();
  }
}
