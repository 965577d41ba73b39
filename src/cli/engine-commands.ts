import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { Option, type Command } from 'commander';
import { describeError, StrataError, TerminalError } from '../engine/errors.js';
import type { StrataEnvironment } from '../config/index.js';
import type { TransferOptions, TransferResult } from '../engine/engine.js';
import { familiarName, formatReference, parseReference } from '../engine/oci/reference.js';
import { parsePlatform } from '../engine/oci/platform.js';
import { shortId } from '../engine/image/local.js';
import { withContext, type CliContext } from './context.js';
import { humanAge, humanSize, table, truncate } from './format.js';
import {
  displayRepository,
  filterImages,
  formatImages,
  parseImageFilters,
  selectByArgument,
} from './image-list.js';
import { gcReport } from './gc-report.js';

/** Opens a tarball for import, refusing directories with a clear message. */
async function openTarball(file: string): Promise<Readable> {
  const info = await stat(file).catch((err: unknown) => {
    throw new TerminalError('INVALID_ARGUMENT', `import: cannot read ${file}: ${(err as Error).message}`);
  });
  if (!info.isFile())
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `import: ${file} is not a regular file (give a tarball, e.g. tar -C DIR -c . | strata import - REF)`,
    );
  return createReadStream(file, { highWaterMark: 1 << 20 });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Verbs whose standard output is one JSON document under `--json`: engine events must not interleave with it. */
const DOCUMENT = { dataOnStdout: true } as const;

/** The digest a pull's target ref names before the pull (undefined when the ref is new or not a reference). */
async function refBefore(ctx: CliContext, input: string): Promise<string | undefined> {
  try {
    return (await ctx.engine.store.getRef(formatReference(parseReference(input))))?.digest;
  } catch {
    return undefined;
  }
}

/** Runs a transfer verb with progress output and prints docker-like result lines (or one JSON object). */
async function transfer(
  ctx: CliContext,
  verb: string,
  run: (opts: TransferOptions) => Promise<TransferResult>,
  platforms: TransferOptions['platforms'],
  before?: string,
): Promise<void> {
  const progress = ctx.progress();
  let result: TransferResult;
  try {
    result = await run({
      signal: ctx.signal,
      onEvent: progress.listener,
      ...(platforms ? { platforms } : {}),
    });
  } finally {
    progress.finish(); // also on failure: draw the final state and stop the redraw timer before the error line
  }
  if (ctx.options.json) {
    ctx.print(JSON.stringify({ type: 'result', verb, ...result }));
    return;
  }
  // Up to date only when nothing was fetched and the tag already named this digest (docker's wording).
  const moved = result.blobs.copied > 0 || before !== result.digest;
  ctx.print(`Digest: ${result.digest}`);
  if (verb === 'pull')
    ctx.print(
      `Status: ${moved ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(parseReference(result.reference))}`,
    );
  else
    ctx.print(
      `Status: ${verb === 'push' ? 'Pushed' : 'Copied'} ${result.reference} (${result.blobs.copied} blobs sent, ${result.blobs.exists} already present, ${result.blobs.mounted} mounted; ${humanSize(result.bytesTransferred)})`,
    );
  ctx.print(result.reference);
}

function platformChoice(
  values: string[] | undefined,
  all: boolean | undefined,
): TransferOptions['platforms'] {
  if (all) return 'all';
  return values && values.length ? values.map(parsePlatform) : undefined;
}

/** Registers the engine verbs: pull, push, copy, tag, images, inspect, history, rmi, gc. */
export function registerEngineCommands(program: Command, env: StrataEnvironment): void {
  program
    .command('pull')
    .description('download an image from a registry into the local store')
    .argument('<ref>', 'image reference, e.g. nginx, localhost:5000/team/app:1, repo@sha256:…')
    .addOption(
      new Option(
        '--platform <os/arch[/variant]>',
        'platform to pull from a multi-platform image (repeatable; default: this host)',
      )
        .argParser(collect)
        .default([])
        .conflicts('allPlatforms'),
    )
    .option('-a, --all-platforms', 'pull every platform of a multi-platform image')
    .action((ref: string, opts: { platform: string[]; allPlatforms?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) =>
        transfer(
          ctx,
          'pull',
          (o) => ctx.engine.pull(ref, o),
          platformChoice(opts.platform, opts.allPlatforms),
          await refBefore(ctx, ref),
        ),
      ),
    );

  program
    .command('push')
    .description('upload a local image to a registry (to its own name, or to DST)')
    .argument('<src>', 'local image (reference or image ID)')
    .argument('[dst]', 'destination reference (default: the source name)')
    .option(
      '--platform <os/arch[/variant]>',
      'push only this platform of a multi-platform image (repeatable)',
      collect,
      [],
    )
    .action((src: string, dst: string | undefined, opts: { platform: string[] }, cmd: Command) =>
      withContext(cmd, env, (ctx) =>
        transfer(ctx, 'push', (o) => ctx.engine.push(src, dst, o), platformChoice(opts.platform, false)),
      ),
    );

  program
    .command('copy')
    .description('copy an image between registries, every platform, digests preserved')
    .argument('<src>', 'source reference')
    .argument('<dst>', 'destination reference')
    .option('--platform <os/arch[/variant]>', 'copy only this platform (repeatable)', collect, [])
    .action((src: string, dst: string, opts: { platform: string[] }, cmd: Command) =>
      withContext(cmd, env, (ctx) =>
        transfer(ctx, 'copy', (o) => ctx.engine.copy(src, dst, o), platformChoice(opts.platform, false)),
      ),
    );

  program
    .command('tag')
    .description('create a tag TARGET that refers to the local image SOURCE')
    .argument('<source>')
    .argument('<target>')
    .action((source: string, target: string, _opts: unknown, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const name = await ctx.engine.tag(source, target);
        if (ctx.options.json) ctx.print(JSON.stringify({ type: 'result', verb: 'tag', reference: name }));
      }),
    );

  program
    .command('import')
    .description(
      'create a one-layer image from a root filesystem tarball (plain or gzip; - for stdin) or directory',
    )
    .argument('<file>', 'tarball path, a directory, or - for standard input')
    .argument('<ref>', 'name of the new image')
    .option('-m, --message <text>', 'commit message recorded in the history')
    .option('--platform <os/arch[/variant]>', 'platform recorded in the config (default: this host)')
    .option(
      '-c, --change <instruction>',
      'apply a Dockerfile instruction (CMD, ENV, …; repeatable)',
      collect,
      [],
    )
    .action(
      (
        file: string,
        ref: string,
        opts: { message?: string; platform?: string; change: string[] },
        cmd: Command,
      ) =>
        withContext(cmd, env, async (ctx) => {
          const options = {
            signal: ctx.signal,
            changes: opts.change,
            ...(opts.message ? { message: opts.message } : {}),
            ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
          };
          const isDir = file !== '-' && (await stat(file).catch(() => undefined))?.isDirectory();
          const result = isDir
            ? await ctx.engine.importDirectory(file, ref, {
                ...options,
                ...(env.sourceDateEpoch !== undefined ? { sourceDateEpoch: env.sourceDateEpoch } : {}),
              })
            : await ctx.engine.import(file === '-' ? process.stdin : await openTarball(file), ref, options);
          ctx.print(
            ctx.options.json ? JSON.stringify({ type: 'result', verb: 'import', ...result }) : result.digest,
          );
        }),
    );

  program
    .command('images')
    .alias('ls')
    .description('list local images (SIZE: uncompressed, as docker shows it)')
    .argument(
      '[repository[:tag]]',
      'only this repository (every tag) or this tag; * and ? match as in a glob',
    )
    .option('-q, --quiet', 'only the image IDs')
    .option(
      '-f, --filter <key=value>',
      'dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE (repeatable)',
      collect,
      [],
    )
    .option(
      '--format <format>',
      "'json', 'table', or a template: '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}'",
    )
    .option('--no-trunc', 'show full digests and IDs')
    .action(
      (
        arg: string | undefined,
        opts: { quiet?: boolean; filter: string[]; format?: string; trunc: boolean },
        cmd: Command,
      ) =>
        withContext(
          cmd,
          env,
          async (ctx) => {
            const filters = parseImageFilters(opts.filter);
            let rows = await ctx.engine.images({ signal: ctx.signal });
            if (arg !== undefined) rows = selectByArgument(rows, arg);
            rows = await filterImages(
              rows,
              filters,
              async (image) => (await ctx.engine.inspect(image)).Created,
            );
            // The global -q/--quiet takes `-q` wherever it is written: here it means what docker's `images -q` does.
            if (opts.quiet || ctx.options.quiet) {
              // Like docker: one line per image, not per tag.
              const ids = [...new Set(rows.map((r) => (opts.trunc ? shortId(r.id) : r.id)))];
              if (ids.length) ctx.print(ids.join('\n'));
              return;
            }
            if (opts.format !== undefined) {
              const text = formatImages(rows, opts.format, opts.trunc);
              if (text) ctx.print(text);
              return;
            }
            if (ctx.options.json) return ctx.print(JSON.stringify(rows, null, 2));
            ctx.print(
              table(
                ['REPOSITORY', 'TAG', 'DIGEST', 'IMAGE ID', 'PLATFORM', 'CREATED', 'SIZE'],
                rows.map((r) => [
                  displayRepository(r.repository),
                  r.tag,
                  opts.trunc ? truncate(r.digest, 19) : r.digest,
                  opts.trunc ? shortId(r.id) : r.id,
                  r.platforms.join(',') || '-',
                  humanAge(r.created),
                  humanSize(r.size),
                ]),
              ),
            );
          },
          DOCUMENT,
        ),
    );

  program
    .command('inspect')
    .description('show low-level information about a local image (JSON, like docker image inspect)')
    .argument('<ref...>')
    .option('--platform <os/arch[/variant]>', 'platform of a multi-platform image')
    .action((refs: string[], opts: { platform?: string }, cmd: Command) =>
      withContext(
        cmd,
        env,
        async (ctx) => {
          const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
          // Like docker: print every image found, then fail naming the ones that were not.
          const docs = [];
          const missing: unknown[] = [];
          for (const r of refs) {
            try {
              docs.push(await ctx.engine.inspect(r, platform));
            } catch (err) {
              missing.push(err);
            }
          }
          ctx.print(JSON.stringify(docs, null, 4));
          if (missing.length === 1) throw missing[0];
          if (missing.length > 1) {
            throw new TerminalError('NOT_FOUND', missing.map((e) => describeError(e)).join('; '));
          }
        },
        DOCUMENT,
      ),
    );

  program
    .command('history')
    .description('show the history of a local image')
    .argument('<ref>')
    .option('--platform <os/arch[/variant]>', 'platform of a multi-platform image')
    .option('--no-trunc', "don't truncate output")
    .action((ref: string, opts: { platform?: string; trunc: boolean }, cmd: Command) =>
      withContext(
        cmd,
        env,
        async (ctx) => {
          const rows = await ctx.engine.history(
            ref,
            opts.platform ? parsePlatform(opts.platform) : undefined,
          );
          if (ctx.options.json) return ctx.print(JSON.stringify(rows, null, 2));
          ctx.print(
            table(
              ['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'],
              rows.map((r) => [
                r.id === '<missing>' || !opts.trunc ? r.id : shortId(r.id),
                humanAge(r.created),
                opts.trunc ? truncate(r.createdBy.replace(/\s+/g, ' '), 45) : r.createdBy,
                humanSize(r.size),
                r.author && r.comment
                  ? `${r.comment} (by ${r.author})`
                  : r.comment || (r.author ? `by ${r.author}` : ''),
              ]),
            ),
          );
        },
        DOCUMENT,
      ),
    );

  program
    .command('rmi')
    .description('remove local images; blobs no other image uses are deleted')
    .argument('<ref...>')
    .option('--no-prune', 'keep the blobs (a later `strata gc` removes them)')
    .option('-f, --force', 'an image ID naming several refs removes them all')
    .action((refs: string[], opts: { prune: boolean; force?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const result = await ctx.engine.rmi(refs, {
          prune: opts.prune,
          force: opts.force ?? false,
          signal: ctx.signal,
        });
        if (ctx.options.json) {
          const failed = result.failed.map((f) => ({
            reference: f.reference,
            code: f.error instanceof StrataError ? f.error.code : 'INTERNAL',
            message: describeError(f.error),
          }));
          ctx.print(JSON.stringify({ type: 'result', verb: 'rmi', ...result, failed }));
        } else {
          for (const name of result.removed) ctx.print(`Untagged: ${name}`);
          for (const d of result.gc?.removed ?? []) ctx.print(`Deleted: ${d}`);
        }
        // Like docker: every reference was tried; each failure is one line, and the exit status is non-zero.
        const [first, ...rest] = result.failed;
        for (const f of rest) process.stderr.write(`strata: ${describeError(f.error)}\n`);
        if (first) throw first.error;
      }),
    );

  program
    .command('gc')
    .description(
      'delete every blob no image refers to, and the unpacked layers no image or container uses; say what stays',
    )
    .option('--dry-run', 'only report what would be deleted')
    .action((opts: { dryRun?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const dryRun = opts.dryRun ?? false;
        const result = await ctx.engine.gc({ dryRun, signal: ctx.signal });
        const report = await gcReport(ctx.engine.store, result, { dryRun, signal: ctx.signal });
        if (ctx.options.json)
          return ctx.print(JSON.stringify({ type: 'result', verb: 'gc', ...result, report }));
        for (const line of report.lines) ctx.print(line);
      }),
    );

  program
    .command('unpack')
    .description('unpack a local image into DIR as one flat root filesystem (like umoci unpack, rootfs only)')
    .argument('<ref>', 'local image (reference or image ID)')
    .argument('<dir>', 'target directory (created if missing; must be empty unless --force)')
    .option('--platform <os/arch[/variant]>', 'platform of a multi-platform image')
    .option('--force', 'unpack into a non-empty directory')
    .action((ref: string, dir: string, opts: { platform?: string; force?: boolean }, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const result = await ctx.engine.unpack(ref, dir, {
          signal: ctx.signal,
          ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
          ...(opts.force ? { force: true } : {}),
        });
        if (ctx.options.json) return ctx.print(JSON.stringify({ type: 'result', verb: 'unpack', ...result }));
        for (const w of result.total.warnings) process.stderr.write(`strata: warning: ${w}\n`);
        const t = result.total;
        ctx.print(
          `Unpacked ${result.layers.length} layers into ${result.dir}: ${t.files} files, ${t.dirs} dirs, ${t.symlinks} symlinks, ${t.hardlinks} hardlinks, ${humanSize(t.bytes)}; ${t.whiteouts} whiteouts, ${t.opaques} opaque dirs${t.devicesSkipped ? `, ${t.devicesSkipped} devices skipped` : ''}`,
        );
      }),
    );
}
