import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import { parseListen, untilStopped } from './registry-commands.js';

interface ServeFlags {
  listen?: string;
  metricsListen?: string;
  upstream?: string[];
  defaultUpstream?: string;
  hosted?: string[];
  store?: string;
  config?: string;
  tagTtl?: string;
  maxSize?: string;
  htpasswd?: string;
  maxConnections?: string;
  idleTimeout?: string;
  maxHeaderSize?: string;
  tlsCert?: string;
  tlsKey?: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Registers `strata mirror serve` on the `mirror` command group. */
export function registerMirrorServeCommand(mirror: Command, env: StrataEnvironment): void {
  mirror
    .command('serve')
    .description(
      'serve a pull-through cache of upstream registries in the store (--store), with the hosted registry for ' +
        '--hosted prefixes (and for every name when there is no --default-upstream)',
    )
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:5002)')
    .option(
      '--metrics-listen <host:port>',
      'also serve /healthz, /readyz and /metrics (Prometheus) on this address (they are on --listen too)',
    )
    .option(
      '--upstream <name=url>',
      'an upstream registry, e.g. docker.io=https://registry-1.docker.io (repeatable)',
      collect,
    )
    .option('--default-upstream <name>', 'where names without an upstream prefix or ?ns= go')
    .option(
      '--hosted <prefix>',
      'repository prefix served by the hosted registry, pull and push (repeatable)',
      collect,
    )
    .option('--config <file>', 'YAML file with the same settings (flags win)')
    .option('--tag-ttl <duration>', 'revalidate tags upstream after this long (default 5m)')
    .option('--max-size <size>', 'evict the least recently used cached content beyond this size, e.g. 50g')
    .option(
      '--htpasswd <file>',
      'require HTTP Basic auth of clients against this htpasswd file (bcrypt, htpasswd -B)',
    )
    .option(
      '--max-connections <n>',
      'open connections at most; past it the longest-idle one is closed (default 1000)',
    )
    .option('--idle-timeout <duration>', 'close connections idle for this long (default 30s)')
    .option('--max-header-size <size>', 'refuse request headers larger than this with 431 (default 16k)')
    .option(
      '--tls-cert <file>',
      'serve HTTPS with this PEM certificate chain (with --tls-key; re-read on change)',
    )
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .action(async (flags: ServeFlags, cmd: Command) => {
      // `--store` is the program's global option: given on the command line it wins over the config file's `store`.
      const program = mirror.parent ?? mirror;
      if (program.getOptionValueSource('store') === 'cli')
        flags.store = cmd.optsWithGlobals<{ store: string }>().store;
      const [{ mirrorSettings }, { startMirrorServer }, { FsStore }, { pino, destination }] =
        await Promise.all([
          import('../mirror/mirror-config.js'),
          import('../mirror/mirror-server.js'),
          import('../engine/store/fs-store.js'),
          import('pino'),
        ]);
      const settings = await mirrorSettings(
        {
          ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
          ...(flags.metricsListen !== undefined ? { metricsListen: flags.metricsListen } : {}),
          ...(flags.store !== undefined ? { store: flags.store } : {}),
          ...(flags.upstream ? { upstream: flags.upstream } : {}),
          ...(flags.defaultUpstream !== undefined ? { defaultUpstream: flags.defaultUpstream } : {}),
          ...(flags.hosted ? { hosted: flags.hosted } : {}),
          ...(flags.tagTtl !== undefined ? { tagTtl: flags.tagTtl } : {}),
          ...(flags.maxSize !== undefined ? { maxSize: flags.maxSize } : {}),
          ...(flags.htpasswd !== undefined ? { htpasswd: flags.htpasswd } : {}),
          ...(flags.maxConnections !== undefined ? { maxConnections: flags.maxConnections } : {}),
          ...(flags.idleTimeout !== undefined ? { idleTimeout: flags.idleTimeout } : {}),
          ...(flags.maxHeaderSize !== undefined ? { maxHeaderSize: flags.maxHeaderSize } : {}),
          ...(flags.tlsCert !== undefined ? { tlsCert: flags.tlsCert } : {}),
          ...(flags.tlsKey !== undefined ? { tlsKey: flags.tlsKey } : {}),
        },
        flags.config,
      );
      if (settings.upstreams.length === 0)
        throw new TerminalError(
          'INVALID_ARGUMENT',
          'mirror serve needs at least one --upstream NAME=URL (or a --config)',
        );
      const { host, port } = parseListen(settings.listen ?? '127.0.0.1:5002');
      const metricsListen =
        settings.metricsListen !== undefined
          ? parseListen(settings.metricsListen, '--metrics-listen')
          : undefined;
      // Logs go to stderr: stdout carries only the URL, for scripts to read.
      const logger = pino({ level: env.logLevel }, destination(2));
      const store = await FsStore.open(settings.store ?? env.storeDir);
      const server = await startMirrorServer({
        store,
        host,
        port,
        logger,
        upstreams: settings.upstreams,
        hosted: settings.hosted,
        ...(settings.defaultUpstream !== undefined ? { defaultUpstream: settings.defaultUpstream } : {}),
        ...(settings.tagTtlMs !== undefined ? { tagTtlMs: settings.tagTtlMs } : {}),
        ...(settings.maxBytes !== undefined ? { maxBytes: settings.maxBytes } : {}),
        ...(settings.htpasswd !== undefined ? { htpasswd: settings.htpasswd } : {}),
        ...(settings.maxConnections !== undefined ? { maxConnections: settings.maxConnections } : {}),
        ...(settings.idleTimeoutMs !== undefined ? { idleTimeoutMs: settings.idleTimeoutMs } : {}),
        ...(settings.maxHeaderBytes !== undefined ? { maxHeaderBytes: settings.maxHeaderBytes } : {}),
        ...(metricsListen ? { metricsListen } : {}),
        ...(settings.tls ? { tls: settings.tls } : {}),
      });
      logger.info(
        {
          url: server.url,
          ...(server.metricsUrl ? { metricsUrl: server.metricsUrl } : {}),
          root: store.root,
          upstreams: settings.upstreams.map((u) => `${u.name}=${u.url}`),
        },
        'mirror listening',
      );
      process.stdout.write(`${server.url}\n`);
      await untilStopped(server);
    });
}
