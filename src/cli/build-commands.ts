import { readFile, stat, writeFile } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { TerminalError } from '../engine/errors.js';
import { parsePlatform } from '../engine/oci/platform.js';
import type { BuildResult } from '../engine/engine.js';
import type { ImageBuild } from '../api/v1alpha1/imagebuild.js';
import type { BuildReport } from '../api/v1alpha1/build-result.js';
import { humanSize } from './format.js';
import { tapWrites } from './log-tail.js';
import { withContext, type CliContext } from './context.js';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `K=V` pairs (a bare `K` takes its value from the environment, as docker's `--build-arg K` does). */
export function parseKeyValues(
  pairs: readonly string[],
  flag: string,
  fromEnv: (k: string) => string | undefined = (k) => process.env[k],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    const key = i < 0 ? p : p.slice(0, i);
    if (key === '')
      throw new TerminalError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(p)}: the name is empty`);
    if (i < 0) {
      const v = fromEnv(key);
      if (v !== undefined) out[key] = v;
    } else out[key] = p.slice(i + 1);
  }
  return out;
}

/** Options of `strata build`. */
interface BuildFlags {
  file?: string;
  tag: string[];
  buildArg: string[];
  target?: string;
  platform?: string;
  label: string[];
  push?: boolean;
  cache: boolean;
  pull?: boolean;
  network: string;
  iidfile?: string;
  metadataFile?: string;
  cacheFrom: string[];
  cacheTo: string[];
  driver?: string;
  spec?: string;
  terminationMessagePath?: string;
  contextMount?: string;
  compression: string;
  compressionLevel?: string;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin) {
    size += (c as Buffer).length;
    if (size > 4 * 1024 * 1024)
      throw new TerminalError('DOCKERFILE_INVALID', 'the Dockerfile on standard input is larger than 4 MiB');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Registers `build` and `builder prune`. */
export function registerBuildCommands(program: Command, env: StrataEnvironment): void {
  program
    .command('build')
    .description('build an image from a Dockerfile (RUN steps through runc), like docker build')
    .argument(
      '[context]',
      "build context directory, or '-' to read a Dockerfile from standard input (no context)",
    )
    .option(
      '--spec <file.yaml|env:VAR>',
      "run an ImageBuild resource's spec locally and print the status it would write " +
        '(env:VAR reads the resource, YAML or JSON, from that environment variable)',
    )
    .option(
      '--termination-message-path <file>',
      "with --spec: write the build's report (compact JSON, at most 4096 bytes) to this file, as a build pod does",
    )
    .option(
      '--context-mount <dir>',
      "with --spec: the directory where the cluster mounted the spec's configMap context",
    )
    .option('-f, --file <path>', "the Dockerfile (default: CONTEXT/Dockerfile; '-' reads standard input)")
    .option('-t, --tag <ref>', 'name the result (repeatable)', collect, [])
    .option('--build-arg <k=v>', 'set a build-time variable (repeatable; K alone takes $K)', collect, [])
    .option('--target <stage>', 'build this stage (default: the last)')
    .option('--platform <os/arch[/variant]>', 'target platform (default: this host)')
    .option('--label <k=v>', 'add a label to the image (repeatable)', collect, [])
    .option('--push', 'push every tag after the build')
    .option('--no-cache', 'run every step, reusing nothing from the build cache')
    .option('--pull', 'resolve base images from their registry even when present locally')
    .option('--network <host|none>', 'network of RUN steps', 'host')
    .option('--iidfile <file>', 'write the image digest to this file')
    .option('--metadata-file <file>', 'write the build result as JSON to this file')
    .option(
      '--cache-from <ref>',
      'use the build cache exported to REF (a repository alone means REPO:buildcache; repeatable; ' +
        'missing or broken: a warning)',
      collect,
      [],
    )
    .option(
      '--cache-to <ref[,mode=min|max][,ignore-error=true]>',
      "export the build cache to REF after the build: the target stage's steps (mode=min, default) or " +
        "every stage's (mode=max)",
      collect,
      [],
    )
    .option('--compression <gzip|zstd>', 'compression of the layers the steps write', 'gzip')
    .option('--compression-level <n>', 'compression level (gzip 0-9, default 6; zstd 1-19, default 3)')
    .option('--driver <overlay|vfs>', 'container driver of the steps (default: overlay when available)')
    .action((context: string | undefined, opts: BuildFlags, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        if (opts.spec !== undefined) {
          if (context !== undefined)
            throw new TerminalError(
              'INVALID_ARGUMENT',
              '--spec takes the context from the spec: give no CONTEXT',
            );
          return buildFromSpec(ctx, opts.spec, env, opts);
        }
        if (opts.terminationMessagePath !== undefined || opts.contextMount !== undefined)
          throw new TerminalError(
            'INVALID_ARGUMENT',
            '--termination-message-path and --context-mount go with --spec',
          );
        if (context === undefined)
          throw new TerminalError(
            'INVALID_ARGUMENT',
            "give a build context directory (or '-'), or --spec FILE",
          );
        if (opts.compression !== 'gzip' && opts.compression !== 'zstd')
          throw new TerminalError(
            'INVALID_ARGUMENT',
            `--compression must be gzip or zstd, not ${opts.compression}`,
          );
        const level = opts.compressionLevel === undefined ? undefined : Number(opts.compressionLevel);
        if (level !== undefined && !Number.isInteger(level))
          throw new TerminalError(
            'INVALID_ARGUMENT',
            `--compression-level ${opts.compressionLevel}: a whole number`,
          );
        if (opts.network !== 'host' && opts.network !== 'none')
          throw new TerminalError('INVALID_ARGUMENT', `--network must be host or none, not ${opts.network}`);
        if (opts.driver !== undefined && opts.driver !== 'overlay' && opts.driver !== 'vfs')
          throw new TerminalError('INVALID_ARGUMENT', `--driver must be overlay or vfs, not ${opts.driver}`);
        if (opts.push && opts.tag.length === 0)
          throw new TerminalError('INVALID_ARGUMENT', '--push needs at least one -t/--tag to push to');
        const stdinContext = context === '-';
        if (stdinContext && opts.file === '-')
          throw new TerminalError('INVALID_ARGUMENT', "the context and the Dockerfile cannot both be '-'");
        let contextDir: string;
        let cleanup = async (): Promise<void> => undefined;
        if (stdinContext) {
          contextDir = await mkdtemp(join(tmpdir(), 'strata-empty-context-'));
          cleanup = () => rm(contextDir, { recursive: true, force: true });
        } else {
          contextDir = resolve(context);
          const st = await stat(contextDir).catch(() => undefined);
          if (!st?.isDirectory())
            throw new TerminalError(
              'BUILD_CONTEXT_INVALID',
              `the build context ${context} is not a directory`,
            );
        }
        try {
          const dockerfilePath =
            opts.file === undefined
              ? join(contextDir, 'Dockerfile')
              : opts.file === '-'
                ? '-'
                : isAbsolute(opts.file)
                  ? opts.file
                  : resolve(opts.file);
          const dockerfile =
            stdinContext || dockerfilePath === '-'
              ? await readStdin()
              : await readFile(dockerfilePath, 'utf8').catch((err: unknown) => {
                  throw new TerminalError(
                    'BUILD_CONTEXT_INVALID',
                    `cannot read the Dockerfile ${dockerfilePath}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(err)}`,
                    { cause: err },
                  );
                });
          const { readDockerignore } = await import('../engine/build/copy/context.js');
          const ignorePatterns = stdinContext
            ? []
            : await readDockerignore(contextDir, dockerfilePath === '-' ? undefined : dockerfilePath);
          const result = await ctx.engine.build({
            contextDir,
            dockerfile,
            ignorePatterns,
            buildArgs: parseKeyValues(opts.buildArg, '--build-arg'),
            labels: parseKeyValues(opts.label, '--label', () => ''),
            tags: opts.tag,
            network: opts.network,
            noCache: !opts.cache,
            compression: opts.compression,
            ...(level !== undefined ? { compressionLevel: level } : {}),
            cacheFrom: opts.cacheFrom,
            cacheTo: opts.cacheTo,
            ...(opts.target ? { target: opts.target } : {}),
            ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
            ...(opts.push ? { push: true } : {}),
            ...(opts.pull ? { pull: true } : {}),
            ...(opts.driver ? { driver: opts.driver as 'overlay' | 'vfs' } : {}),
            ...(env.sourceDateEpoch !== undefined ? { sourceDateEpoch: env.sourceDateEpoch } : {}),
            signal: ctx.signal,
          });
          if (opts.iidfile) await writeFile(opts.iidfile, result.digest);
          if (opts.metadataFile)
            await writeFile(opts.metadataFile, `${JSON.stringify(buildMetadata(result), null, 2)}\n`);
          if (ctx.options.json)
            return ctx.print(JSON.stringify({ type: 'result', verb: 'build', ...result }));
          if (!ctx.options.quiet) process.stderr.write(`${buildSummary(result)}\n`);
          ctx.print(result.digest);
        } finally {
          await cleanup();
        }
      }),
    );

  const builder = program.command('builder').description('manage the build cache');
  builder
    .command('prune')
    .description('forget every build cache entry and remove the blobs only it held')
    .action((_opts: unknown, cmd: Command) =>
      withContext(cmd, env, async (ctx) => {
        const result = await ctx.engine.pruneBuildCache({ signal: ctx.signal });
        if (ctx.options.json)
          return ctx.print(JSON.stringify({ type: 'result', verb: 'builder prune', ...result }));
        const freed = result.gc
          ? `, freed ${humanSize(result.gc.bytesFreed)} in ${result.gc.removed.length} blobs`
          : '';
        ctx.print(`Removed ${result.entries} build cache entries${freed}`);
      }),
    );
}

/** The `--metadata-file` document, with buildx's key names. */
export function buildMetadata(result: BuildResult): Record<string, unknown> {
  return {
    'containerimage.digest': result.digest,
    'containerimage.config.digest': result.config,
    'containerimage.descriptor': { mediaType: result.mediaType, digest: result.digest },
    ...(result.tags.length > 0 ? { 'image.name': result.tags.join(',') } : {}),
    'strata.build': {
      steps: result.steps,
      cacheHits: result.cacheHits,
      cacheImported: result.cacheImported,
      cacheExports: result.cacheExports,
      layers: result.layers,
      size: result.size,
      bases: result.bases,
      durationMs: result.durationMs,
    },
  };
}

/** The closing line of a build on standard error. */
export function buildSummary(result: BuildResult): string {
  const tags = result.tags.length > 0 ? `, tagged ${result.tags.join(', ')}` : '';
  const pushed = result.pushed.length > 0 ? `, pushed ${result.pushed.length}` : '';
  return `Built ${result.digest} in ${(result.durationMs / 1000).toFixed(1)}s: ${result.layers} layers, ${humanSize(result.size)}, ${result.cacheHits}/${result.steps} steps cached${tags}${pushed}`;
}

/** Where `--spec env:VAR` reads from; a file named like that is given as `./env:VAR`. */
const SPEC_ENV_PREFIX = 'env:';

/**
 * `strata build --spec FILE`: the ImageBuild's spec run locally — its context resolved (dir, tarball, git, or a
 * configMap mounted at `--context-mount`), its Dockerfile built, its images tagged (and pushed when asked) — then
 * the status the controller would write is printed as YAML (JSON with `--json`). A failed build prints its Failed
 * status too, then fails. With `--termination-message-path` (a build pod) the report the controller reads is
 * written there as well: the digest, or the failure's reason, message and log tail.
 */
async function buildFromSpec(
  ctx: CliContext,
  file: string,
  env: StrataEnvironment,
  pod: { terminationMessagePath?: string; contextMount?: string },
  fromEnv: (k: string) => string | undefined = (k) => process.env[k],
): Promise<void> {
  const [
    { loadImageBuildFile, parseImageBuild },
    { buildStatus, failureReason, rfc3339 },
    { sourceDateEpoch, clusterContextIssues },
    { resolveBuildContext },
    { encodeBuildReport, BUILD_REPORT_VERSION },
    { stringify },
    { readSpecEnv },
  ] = await Promise.all([
    import('../api/v1alpha1/load.js'),
    import('../controllers/imagebuild/build-status.js'),
    import('../api/v1alpha1/imagebuild.js'),
    import('./build-context/index.js'),
    import('../api/v1alpha1/build-result.js'),
    import('yaml').then((m) => ({
      stringify: m.stringify ?? (m as unknown as { default: typeof m }).default.stringify,
    })),
    import('../api/v1alpha1/spec-env.js'),
  ]);
  const tail = pod.terminationMessagePath ? tapWrites(process.stderr) : undefined;
  const startedAt = new Date();
  const report = async (r: BuildReport): Promise<void> => {
    if (!pod.terminationMessagePath) return;
    // The report is how the controller learns the digest: failing to write it fails the command.
    await writeFile(pod.terminationMessagePath, encodeBuildReport(r));
  };
  try {
    let resource;
    try {
      resource = file.startsWith(SPEC_ENV_PREFIX)
        ? specFromEnv(
            file.slice(SPEC_ENV_PREFIX.length),
            fromEnv,
            parseImageBuild,
            readSpecEnv,
            clusterContextIssues,
          )
        : await loadImageBuildFile(file);
    } catch (err) {
      await report({
        v: BUILD_REPORT_VERSION,
        ok: false,
        reason: failureReason(err),
        message: err instanceof Error ? err.message : String(err),
        startedAt: rfc3339(startedAt),
        finishedAt: rfc3339(new Date()),
      });
      throw err;
    }
    const spec = resource.spec;
    const generation = resource.metadata.generation ?? 1;
    const baseDir = file.startsWith(SPEC_ENV_PREFIX) ? process.cwd() : dirname(resolve(file));
    const work = await mkdtemp(join(tmpdir(), 'strata-spec-'));
    let status;
    let failure: unknown;
    try {
      const resolved = await resolveBuildContext(spec, {
        baseDir,
        workDir: work,
        signal: ctx.signal,
        ...(pod.contextMount ? { configMapMount: pod.contextMount } : {}),
      });
      try {
        const { readDockerignore } = await import('../engine/build/copy/context.js');
        const epoch = sourceDateEpoch(spec.timestamp) ?? env.sourceDateEpoch;
        const result = await ctx.engine.build({
          contextDir: resolved.dir,
          dockerfile: resolved.dockerfile,
          ignorePatterns: await readDockerignore(resolved.dir, resolved.dockerfilePath),
          buildArgs: Object.fromEntries((spec.buildArgs ?? []).map((a) => [a.name, a.value])),
          labels: { ...(spec.labels ?? {}) },
          tags: spec.output.images,
          network: spec.network,
          noCache: spec.cache?.disabled === true,
          // The spec's repository is both where the cache is read from and written to (its buildcache tag).
          ...(spec.cache?.repository && spec.cache.disabled !== true
            ? { cacheFrom: [spec.cache.repository], cacheTo: [spec.cache.repository] }
            : {}),
          ...(spec.output.push ? { push: true } : {}),
          ...(spec.target ? { target: spec.target } : {}),
          ...(spec.platform ? { platform: parsePlatform(spec.platform) } : {}),
          ...(epoch !== undefined ? { sourceDateEpoch: epoch } : {}),
          signal: ctx.signal,
        });
        status = buildStatus(
          {
            digest: result.digest,
            reference: spec.output.images[0]!,
            steps: result.steps,
            cacheHits: result.cacheHits,
          },
          { startedAt, finishedAt: new Date() },
          generation,
        );
      } finally {
        await resolved.cleanup();
      }
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      failure = err;
      status = buildStatus({ error: err }, { startedAt, finishedAt: new Date() }, generation);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    ctx.print(
      ctx.options.json
        ? JSON.stringify({ type: 'result', verb: 'build', status })
        : stringify({ status }).trimEnd(),
    );
    const times = { startedAt: status.startedAt!, finishedAt: status.finishedAt! };
    if (failure !== undefined) {
      const message = failure instanceof Error ? failure.message : String(failure);
      const log = tail?.text().trimEnd() ?? '';
      await report({
        v: BUILD_REPORT_VERSION,
        ok: false,
        reason: failureReason(failure),
        // The log's tail first, the error last: a cut removes the oldest lines.
        message: log && !log.endsWith(message) ? `${log}\n${message}` : log || message,
        ...times,
      });
      throw failure;
    }
    await report({
      v: BUILD_REPORT_VERSION,
      ok: true,
      digest: status.digest!,
      image: status.image!,
      steps: status.steps ?? 0,
      cacheHits: status.cacheHits ?? 0,
      ...times,
    });
  } finally {
    tail?.restore();
  }
}

/**
 * `--spec env:VAR`: the ImageBuild (YAML or JSON) held by an environment variable (or its parts, see spec-env.ts),
 * as a build pod gets it. Such a spec comes from a cluster: a context naming the pod's own disk is refused, so an
 * ImageBuild cannot read the pod's token or credentials into an image.
 */
function specFromEnv(
  name: string,
  fromEnv: (k: string) => string | undefined,
  parse: (text: string, file: string) => ImageBuild,
  readEnv: (name: string, get: (k: string) => string | undefined) => string | undefined,
  clusterIssues: (context: ImageBuild['spec']['context']) => string[],
): ImageBuild {
  let text: string | undefined;
  try {
    text = name ? readEnv(name, fromEnv) : undefined;
  } catch (err) {
    throw new TerminalError('INVALID_ARGUMENT', `--spec env:${name}: ${(err as Error).message}`);
  }
  if (text === undefined)
    throw new TerminalError('INVALID_ARGUMENT', `--spec env:${name}: the environment variable is not set`);
  const resource = parse(text, `$${name}`);
  const issues = clusterIssues(resource.spec.context);
  if (issues.length > 0)
    throw new TerminalError('INVALID_ARGUMENT', `--spec env:${name}: ${issues.join('; ')}`);
  return resource;
}
