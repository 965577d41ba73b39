import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import type { ArchiveFormat, SaveResult } from '../engine/archive/save.js';
import { familiarName, parseReference } from '../engine/oci/reference.js';
import { parsePlatform } from '../engine/oci/platform.js';
import { withContext, type CliContext } from './context.js';

/** Opens an archive to load, refusing directories and unreadable paths with a clear message. */
async function openArchive(file: string): Promise<Readable> {
  const info = await stat(file).catch((err: unknown) => {
    throw new TerminalError('INVALID_ARGUMENT', `load: cannot read ${file}: ${(err as Error).message}`);
  });
  if (!info.isFile()) throw new TerminalError('INVALID_ARGUMENT', `load: ${file} is not a regular file`);
  return createReadStream(file, { highWaterMark: 1 << 20 });
}

/**
 * Saves into `file` through a temp file beside it, renamed into place only when the archive is complete: a
 * failed or interrupted save never leaves a truncated archive under the requested name.
 */
async function saveToFile(file: string, write: (out: Writable) => Promise<SaveResult>): Promise<SaveResult> {
  const tmp = join(dirname(file), `.${basename(file)}.strata-${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx').catch((err: unknown) => {
    throw new TerminalError('INVALID_ARGUMENT', `save: cannot write ${file}: ${(err as Error).message}`);
  });
  const out = fh.createWriteStream();
  try {
    const result = await write(out);
    await rename(tmp, file);
    return result;
  } catch (err) {
    out.destroy();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

function printNotes(notes: readonly string[]): void {
  for (const n of notes) process.stderr.write(`note: ${n}\n`);
}

/** Registers `save` and `load`. */
export function registerArchiveCommands(program: Command, env: StrataEnvironment): void {
  program
    .command('save')
    .description(
      'write local images to a tar archive (docker-archive as docker 25 writes it, or an OCI layout)',
    )
    .argument('<ref...>', 'local images (references or image IDs)')
    .option(
      '-o, --output <file>',
      'write to FILE (- for standard output, the default when it is not a terminal)',
    )
    .option('--format <format>', 'docker (docker-archive, read by docker load and skopeo) or oci', 'docker')
    .option(
      '--platform <os/arch[/variant]>',
      'docker format: platform of a multi-platform image (default: this host)',
    )
    .option(
      '--keep-media-types',
      'oci format: write Docker-typed manifests and lists as stored (digests kept) instead of converting them to OCI types',
    )
    .action(
      (
        refs: string[],
        opts: { output?: string; format: string; platform?: string; keepMediaTypes?: boolean },
        cmd: Command,
      ) =>
        withContext(
          cmd,
          env,
          async (ctx) => {
            if (opts.format !== 'docker' && opts.format !== 'oci')
              throw new TerminalError(
                'INVALID_ARGUMENT',
                `save: --format must be docker or oci, not ${opts.format}`,
              );
            if (opts.keepMediaTypes && opts.format !== 'oci')
              throw new TerminalError(
                'INVALID_ARGUMENT',
                'save: --keep-media-types applies to --format oci only',
              );
            const toStdout = opts.output === undefined || opts.output === '-';
            if (toStdout && process.stdout.isTTY)
              throw new TerminalError(
                'INVALID_ARGUMENT',
                'save: refusing to write an archive to a terminal; give -o FILE or redirect standard output',
              );
            // With the archive on standard output, JSON progress lines go to standard error (dataOnStdout below).
            const progress = ctx.progress();
            const write = (out: Writable): Promise<SaveResult> =>
              ctx.engine.save(refs, out, {
                format: opts.format as ArchiveFormat,
                signal: ctx.signal,
                onEvent: progress.listener,
                ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
                ...(opts.keepMediaTypes ? { keepMediaTypes: true } : {}),
              });
            const result = toStdout ? await write(process.stdout) : await saveToFile(opts.output!, write);
            progress.finish();
            const notes = result.images.flatMap((i) =>
              i.missingPlatforms?.length
                ? [`${i.name}: not in the archive (not present locally): ${i.missingPlatforms.join(', ')}`]
                : [],
            );
            printNotes(notes);
            if (ctx.options.json) {
              const line = `${JSON.stringify({ type: 'result', verb: 'save', ...result })}\n`;
              // Standard output carries the archive itself: the result goes to standard error then.
              if (toStdout) process.stderr.write(line);
              else ctx.print(line);
            }
          },
          { dataOnStdout: opts.output === undefined || opts.output === '-' },
        ),
    );

  program
    .command('load')
    .description('load images from a tar archive (docker-archive, OCI layout, or legacy docker; gzip too)')
    .option('-i, --input <file>', 'read from FILE instead of standard input (- for standard input)')
    .option(
      '--name <repo[:tag]>',
      'name for an image the archive leaves unnamed, or repository for bare OCI tags',
    )
    .action((opts: { input?: string; name?: string }, cmd: Command) =>
      withContext(cmd, env, async (ctx: CliContext) => {
        const fromStdin = opts.input === undefined || opts.input === '-';
        if (fromStdin && process.stdin.isTTY)
          throw new TerminalError(
            'INVALID_ARGUMENT',
            'load: standard input is a terminal; give -i FILE or pipe an archive in',
          );
        const input = fromStdin ? process.stdin : await openArchive(opts.input!);
        const progress = ctx.progress();
        const result = await ctx.engine.load(input, {
          signal: ctx.signal,
          onEvent: progress.listener,
          ...(opts.name ? { name: opts.name } : {}),
        });
        progress.finish();
        printNotes(result.notes);
        if (ctx.options.json) {
          ctx.print(JSON.stringify({ type: 'result', verb: 'load', ...result }));
          return;
        }
        for (const img of result.images) {
          if (img.reference) ctx.print(`Loaded image: ${familiarName(parseReference(img.reference))}`);
          else ctx.print(`Loaded image ID: ${img.configDigest ?? img.digest}`);
        }
      }),
    );
}
