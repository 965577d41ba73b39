import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import { familiarName, parseReference } from '../engine/oci/reference.js';
import { parsePlatform } from '../engine/oci/platform.js';
import type { DriverName } from '../engine/union/snapshotter.js';
import { withContext } from './context.js';
import { humanAge, table } from './format.js';

function driverOption(value: string | undefined): DriverName | undefined {
  if (value === undefined) return undefined;
  if (value !== 'overlay' && value !== 'vfs')
    throw new TerminalError('INVALID_ARGUMENT', `--driver ${value}: use overlay or vfs`);
  return value;
}

function shortImage(name: string): string {
  try {
    return familiarName(parseReference(name));
  } catch {
    return name;
  }
}

/** Registers the container verbs: create, mount, umount, rm, ps. */
export function registerContainerCommands(program: Command, env: StrataEnvironment): void {
  program
    .command('create')
    .description('create a container: a writable root over a local image (prints its name)')
    .argument('<ref>', 'local image (reference or image ID)')
    .option('--name <name>', 'container name (default: strata-<8 hex>)')
    .option(
      '--driver <driver>',
      'overlay (kernel overlayfs; needs root) or vfs (copies); default: overlay when it works',
    )
    .option('--platform <os/arch[/variant]>', 'platform of a multi-platform image (default: this host)')
    .action((ref: string, opts: { name?: string; driver?: string; platform?: string }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const driver = driverOption(opts.driver);
        const rec = await ctx.engine.create(ref, {
          signal: ctx.signal,
          ...(opts.name !== undefined ? { name: opts.name } : {}),
          ...(driver ? { driver } : {}),
          ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
        });
        ctx.print(ctx.options.json ? JSON.stringify({ type: 'result', verb: 'create', ...rec }) : rec.name);
      }),
    );

  program
    .command('run')
    .description(
      "run an image's command in a new container through runc, in the foreground (needs root and runc)",
    )
    .argument('<ref>', 'local image (reference or image ID)')
    .argument('[command...]', "replaces the image's CMD (put it after -- when it has options of its own)")
    .option('--rm', 'remove the container when the command exits')
    .option('--name <name>', 'container name (default: strata-<8 hex>)')
    .option(
      '-e, --env <k=v>',
      'set an environment variable (repeatable)',
      (v: string, p: string[]) => [...p, v],
      [],
    )
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('-u, --user <user>', 'user (name, uid, name:group or uid:gid)')
    .option('--network <host|none>', "network: the host's, or loopback only", 'host')
    .option('--driver <driver>', 'overlay or vfs; default: overlay when it works')
    .option('--platform <os/arch[/variant]>', 'platform of a multi-platform image (default: this host)')
    .action(
      (
        ref: string,
        command: string[],
        opts: {
          rm?: boolean;
          name?: string;
          env: string[];
          workdir?: string;
          user?: string;
          network: string;
          driver?: string;
          platform?: string;
        },
        cmd: Command,
      ) =>
        withContext(cmd, env, async (ctx) => {
          if (opts.network !== 'host' && opts.network !== 'none')
            throw new TerminalError(
              'INVALID_ARGUMENT',
              `--network must be host or none, not ${opts.network}`,
            );
          const driver = driverOption(opts.driver);
          const outcome = await ctx.engine.run(ref, {
            args: command,
            env: opts.env,
            network: opts.network,
            signal: ctx.signal,
            onStdout: (c) => process.stdout.write(c),
            onStderr: (c) => process.stderr.write(c),
            ...(opts.rm ? { remove: true } : {}),
            ...(opts.name !== undefined ? { name: opts.name } : {}),
            ...(opts.workdir !== undefined ? { workdir: opts.workdir } : {}),
            ...(opts.user !== undefined ? { user: opts.user } : {}),
            ...(driver ? { driver } : {}),
            ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
          });
          process.exitCode = outcome.exitCode;
        }),
    );

  program
    .command('mount')
    .description("mount a container's root (if not mounted yet) and print its path")
    .argument('<name>', 'container name or ID prefix')
    .action((name: string, _opts: unknown, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const path = await ctx.engine.mount(name);
        ctx.print(ctx.options.json ? JSON.stringify({ type: 'result', verb: 'mount', name, path }) : path);
      }),
    );

  program
    .command('umount')
    .alias('unmount')
    .description("unmount a container's root (its files stay)")
    .argument('<name...>', 'container names or ID prefixes')
    .option('-f, --force', 'detach lazily even when busy')
    .action((names: string[], opts: { force?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        for (const n of names) await ctx.engine.unmount(n, { force: opts.force ?? false });
      }),
    );

  program
    .command('rm')
    .description('remove containers (unmounting them); the shared image layers stay')
    .argument('<name...>', 'container names or ID prefixes')
    .option('-f, --force', 'remove even when the root is busy (lazy unmount)')
    .action((names: string[], opts: { force?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const removed = await ctx.engine.rm(names, { force: opts.force ?? false });
        if (ctx.options.json) return ctx.print(JSON.stringify({ type: 'result', verb: 'rm', removed }));
        for (const n of removed) ctx.print(n);
      }),
    );

  program
    .command('ps')
    .description('list containers')
    .option('--no-trunc', "don't truncate image names")
    .action((opts: { trunc: boolean }, cmd: Command) =>
      withContext(
        cmd,
        env,
        async (ctx) => {
          const rows = await ctx.engine.ps();
          if (ctx.options.json) return ctx.print(JSON.stringify(rows, null, 2));
          ctx.print(
            table(
              ['NAME', 'IMAGE', 'DRIVER', 'CREATED', 'MOUNTED'],
              rows.map((r) => [
                r.name,
                opts.trunc ? shortImage(r.image.name) : r.image.name,
                r.driver,
                humanAge(r.created),
                r.driver === 'vfs' ? '-' : r.mounted ? r.merged : 'no',
              ]),
            ),
          );
        },
        { dataOnStdout: true },
      ),
    );
}
