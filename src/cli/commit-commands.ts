import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import { recordUncompressedSize } from '../engine/image/layer-sizes.js';
import { withContext } from './context.js';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function parseLevel(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new TerminalError('INVALID_ARGUMENT', `invalid compression level ${value}`);
  return n;
}

/** Registers `commit` and `export`. */
export function registerCommitCommands(program: Command, env: StrataEnvironment): void {
  program
    .command('commit')
    .description("create a new image from a container's changes (prints the new image ID)")
    .argument('<container>', 'container name or ID')
    .argument('<ref>', 'name of the new image')
    .option('-m, --message <text>', 'commit message recorded in the history')
    .option('-a, --author <name>', 'author (e.g. "Jane Doe <jane@example.com>")')
    .option(
      '-c, --change <instruction>',
      'apply a Dockerfile instruction (CMD, ENV, …; repeatable)',
      collect,
      [],
    )
    .option('--compression <gzip|zstd>', 'layer compression', 'gzip')
    .option('--compression-level <n>', 'compression level (gzip 0-9, zstd 1-19)', parseLevel)
    .action(
      (
        container: string,
        ref: string,
        opts: {
          message?: string;
          author?: string;
          change: string[];
          compression: string;
          compressionLevel?: number;
        },
        cmd: Command,
      ) =>
        withContext(cmd, env, async (ctx) => {
          if (opts.compression !== 'gzip' && opts.compression !== 'zstd')
            throw new TerminalError(
              'INVALID_ARGUMENT',
              `--compression must be gzip or zstd, not ${opts.compression}`,
            );
          const result = await ctx.engine.commit(container, ref, {
            signal: ctx.signal,
            changes: opts.change,
            compression: opts.compression,
            ...(opts.compressionLevel !== undefined ? { level: opts.compressionLevel } : {}),
            ...(opts.message ? { message: opts.message } : {}),
            ...(opts.author ? { author: opts.author } : {}),
            ...(env.sourceDateEpoch !== undefined ? { sourceDateEpoch: env.sourceDateEpoch } : {}),
          });
          // docker images and history show uncompressed sizes: the writer just counted this layer's.
          if (result.layer)
            await recordUncompressedSize(
              ctx.engine.store.root,
              result.layer.digest,
              result.layer.uncompressedSize,
            );
          ctx.print(
            ctx.options.json
              ? JSON.stringify({
                  type: 'result',
                  verb: 'commit',
                  ...result,
                  layer: result.layer && { ...result.layer },
                })
              : result.config, // the image ID, as docker commit prints it
          );
        }),
    );

  program
    .command('export')
    .description("write a container's filesystem as a tar archive (to stdout unless -o)")
    .argument('<container>', 'container name or ID')
    .option('-o, --output <file>', 'write to this file instead of standard output')
    .action((container: string, opts: { output?: string }, cmd: Command) =>
      withContext(
        cmd,
        env,
        async (ctx) => {
          if (!opts.output && process.stdout.isTTY)
            throw new TerminalError(
              'INVALID_ARGUMENT',
              'export: refusing to write a tar to a terminal; use -o FILE',
            );
          const tmp = opts.output ? `${opts.output}.tmp-${process.pid}` : undefined;
          const out: Writable = tmp ? createWriteStream(tmp) : process.stdout;
          try {
            const result = await ctx.engine.export(container, out, {
              signal: ctx.signal,
              ...(env.sourceDateEpoch !== undefined ? { sourceDateEpoch: env.sourceDateEpoch } : {}),
            });
            if (tmp && opts.output) await rename(tmp, opts.output);
            if (ctx.options.json && opts.output)
              ctx.print(JSON.stringify({ type: 'result', verb: 'export', output: opts.output, ...result }));
          } catch (err) {
            if (tmp) await rm(tmp, { force: true });
            throw err;
          }
        },
        { dataOnStdout: !opts.output },
      ),
    );
}
