import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';

/** Parses `HOST:PORT` or `PORT` (host defaults to 127.0.0.1). */
export function parseListen(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid ${flag} ${JSON.stringify(value)}: want HOST:PORT or PORT`,
    );
  return { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

/** Parses a positive integer option value; INVALID_ARGUMENT otherwise. */
export function parsePositiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid ${flag} ${JSON.stringify(value)}: want a positive integer`,
    );
  return n;
}

/**
 * Throws NOT_FOUND unless `root` is an existing registry storage (an OCI layout: it has `oci-layout`), so that
 * commands that only read or prune it never create a store in a mistyped directory.
 */
export async function assertRegistryStorage(root: string): Promise<void> {
  const isFile = async (path: string): Promise<boolean | undefined> => {
    try {
      return (await stat(path)).isFile();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
  };
  if ((await isFile(root)) === undefined)
    throw new TerminalError('NOT_FOUND', `registry storage ${root} does not exist`);
  if (!(await isFile(join(root, 'oci-layout'))))
    throw new TerminalError('NOT_FOUND', `${root} is not a registry storage (it has no oci-layout file)`);
}

interface ServeOptions {
  listen: string;
  root: string;
  uploadTimeout: string;
  maxUploadsPerClient: string;
  maxUploadsPerRepo: string;
  maxUploads: string;
  htpasswd?: string;
  maxConnections: string;
}

/** Registers `strata registry serve` and `strata registry gc`. */
export function registerRegistryCommands(program: Command, env: StrataEnvironment): void {
  const registry = program.command('registry').description('the embedded OCI registry');
  registry
    .command('serve')
    .description('serve a Distribution API registry (pull and push) from a local store')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:5000')
    .option('--root <dir>', 'registry storage (an OCI image layout)', env.registryRoot)
    .option('--upload-timeout <seconds>', 'remove upload sessions idle for this long', '600')
    .option('--max-uploads-per-client <n>', 'upload sessions one client address may hold at once', '64')
    .option(
      '--max-uploads-per-repo <n>',
      'upload sessions all clients may hold at once for one repository',
      '256',
    )
    .option('--max-uploads <n>', 'upload sessions all clients may hold at once', '1024')
    .option('--htpasswd <file>', 'require HTTP Basic auth of clients against this htpasswd file (bcrypt)')
    .option(
      '--max-connections <n>',
      'open connections at most; past it the longest-idle one is closed',
      '1000',
    )
    .action(async (opts: ServeOptions) => {
      const { host, port } = parseListen(opts.listen);
      const limits = {
        uploadTimeoutMs: parsePositiveInt('--upload-timeout', opts.uploadTimeout) * 1000,
        maxUploadSessionsPerClient: parsePositiveInt('--max-uploads-per-client', opts.maxUploadsPerClient),
        maxUploadSessionsPerRepository: parsePositiveInt('--max-uploads-per-repo', opts.maxUploadsPerRepo),
        maxUploadSessions: parsePositiveInt('--max-uploads', opts.maxUploads),
        maxConnections: parsePositiveInt('--max-connections', opts.maxConnections),
        ...(opts.htpasswd !== undefined ? { htpasswd: opts.htpasswd } : {}),
      };
      // Loaded here so that the engine verbs do not pay for the server and the logger at startup.
      const [{ pino, destination }, { startRegistryServer }] = await Promise.all([
        import('pino'),
        import('../mirror/registry-server.js'),
      ]);
      // Logs go to stderr: stdout carries only the URL, for scripts to read.
      const logger = pino({ level: env.logLevel }, destination(2));
      const { FsStore } = await import('../engine/store/fs-store.js');
      const store = await FsStore.open(opts.root);
      const server = await startRegistryServer({ store, host, port, logger, ...limits });
      logger.info({ url: server.url, root: opts.root }, 'registry listening');
      process.stdout.write(`${server.url}\n`);
      await untilStopped(server);
    });

  registry
    .command('gc')
    .description("delete the registry storage's blobs that no tag or manifest reaches")
    .option('--root <dir>', 'registry storage (an OCI image layout)', env.registryRoot)
    .option('--dry-run', 'only report what would be deleted')
    .action(async (opts: { root: string; dryRun?: boolean }) => {
      await assertRegistryStorage(opts.root);
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

/** Waits for SIGINT or SIGTERM, then closes `server` (a listener of `serve` verbs runs until told to stop). */
export async function untilStopped(server: { close(): Promise<void> }): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void server.close().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
