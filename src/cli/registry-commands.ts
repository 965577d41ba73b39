import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';

/** Parses `HOST:PORT` or `PORT` (host defaults to 127.0.0.1). */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid --listen ${JSON.stringify(value)}: want HOST:PORT or PORT`,
    );
  return { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

/** Registers `strata registry serve` and `strata registry gc`. */
export function registerRegistryCommands(program: Command, env: StrataEnvironment): void {
  const registry = program.command('registry').description('the embedded OCI registry');
  registry
    .command('serve')
    .description('serve a Distribution API registry (pull and push) from a local store')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:5000')
    .option('--root <dir>', 'registry storage (an OCI image layout)', env.registryRoot)
    .action(async (opts: { listen: string; root: string }) => {
      const { host, port } = parseListen(opts.listen);
      // Loaded here so that the engine verbs do not pay for the server and the logger at startup.
      const [{ pino, destination }, { startRegistryServer }] = await Promise.all([
        import('pino'),
        import('../mirror/registry-server.js'),
      ]);
      // Logs go to stderr: stdout carries only the URL, for scripts to read.
      const logger = pino({ level: env.logLevel }, destination(2));
      const { FsStore } = await import('../engine/store/fs-store.js');
      const store = await FsStore.open(opts.root);
      const server = await startRegistryServer({ store, host, port, logger });
      logger.info({ url: server.url, root: opts.root }, 'registry listening');
      process.stdout.write(`${server.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          void server.close().then(resolve, resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });

  registry
    .command('gc')
    .description("delete the registry storage's blobs that no tag or manifest reaches")
    .option('--root <dir>', 'registry storage (an OCI image layout)', env.registryRoot)
    .option('--dry-run', 'only report what would be deleted')
    .action(async (opts: { root: string; dryRun?: boolean }) => {
      const [{ FsStore }, { collectRegistryGarbage }] = await Promise.all([
        import('../engine/store/fs-store.js'),
        import('../mirror/gc.js'),
      ]);
      const result = await collectRegistryGarbage(await FsStore.open(opts.root), {
        dryRun: opts.dryRun ?? false,
      });
      process.stdout.write(
        `${opts.dryRun ? 'Would delete' : 'Deleted'} ${result.removed.length} blobs, ${result.bytesFreed} bytes (${result.kept} kept)\n`,
      );
    });
}
