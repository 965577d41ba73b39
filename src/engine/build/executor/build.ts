/**
 * `docker build` on the engine: the stages the target needs, in dependency order, each step expanded with the ARGs
 * and ENV in effect, looked up in the build cache, else run — config-only steps as config changes with
 * `empty_layer` history, RUN/COPY/ADD in a step container whose writable layer becomes the step's layer.
 */
import { StrataError, TerminalError, hasCode, throwIfAborted } from '../../errors.js';
import {
  appendLayer,
  emptyImage,
  renderImage,
  withAnnotations,
  withAuthor,
  withFamily,
  withCreated,
  type ImageValue,
} from '../../image/mutate.js';
import { readImageValue } from '../../image/mutate-store.js';
import type { Digest } from '../../oci/digest.js';
import { formatPlatform, hostPlatform, platformMatches, type Platform } from '../../oci/platform.js';
import type { ContentStore } from '../../store/types.js';
import type { Lease } from '../../store/leases.js';
import type { Observer } from '../../observe.js';
import type { DriverName } from '../../union/snapshotter.js';
import { expandHeredoc, expandInstruction, expandWord } from '../dockerfile/expand.js';
import { parseHeredocMarker } from '../dockerfile/heredoc.js';
import { parseDockerfile } from '../dockerfile/parse.js';
import type { CopyInstruction, Dockerfile, Instruction, RunInstruction, Stage } from '../dockerfile/types.js';
import type { StepRunner } from '../run/types.js';
import { resolveUser } from '../run/user.js';
import { ensureWorkdir } from '../run/workdir.js';
import { CHROOT, SafeRoot } from '../../union/safe-path.js';
import { copyIntoRoot } from '../copy/copy.js';
import { isUrlSource } from '../copy/sources.js';
import { hashSources } from '../copy/hash.js';
import type { CopyRequest, CopySourceRoot } from '../copy/types.js';
import { BuildCache, buildCacheDir, type BuildCacheEntry } from './cache.js';
import { FileDigestCache } from '../copy/digest-cache.js';
import { join } from 'node:path';
import { stepCacheKey } from './cache-key.js';
import { isStepOf } from './registry-cache-format.js';
import type { RemoteStepCache } from './registry-cache-import.js';
import type { UsedCacheEntry } from './registry-cache-export.js';
import { applyConfigInstruction, argvOf, envMap, shellOf, type ConfigState } from './config-step.js';
import { DEFAULT_PATH } from '../run/config.js';
import { resolveStageName, stagesToBuild, targetStage } from './plan.js';
import { runNetwork, type StepNetwork } from './network.js';
import { runInStepContainer, storeImage, type StepHost } from './step-container.js';
import { createContainer, mountContainer, removeContainer } from '../../container/containers.js';
import { randomBytes } from 'node:crypto';
import { chainIds } from '../../union/layer-cache.js';

/** What to build. */
export interface BuildRequest {
  /** The build context directory (COPY sources, `.dockerignore`). */
  readonly contextDir: string;
  /** The Dockerfile's text. */
  readonly dockerfile: string;
  /** `.dockerignore` patterns of the context (see `copy/context.ts` `readDockerignore`). */
  readonly ignorePatterns?: readonly string[];
  readonly buildArgs?: Readonly<Record<string, string>>;
  /** The stage to build (default: the last). */
  readonly target?: string;
  /** Target platform (default: the host's). */
  readonly platform?: Platform;
  /** Labels added to the final image. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Run every step, reusing nothing from the build cache. */
  readonly noCache?: boolean;
  /** Re-resolve base images from their registry even when present locally. */
  readonly pull?: boolean;
  /** RUN steps' network (default host). */
  readonly network?: 'host' | 'none';
  /** Reproducible output: history and config times from this, file mtimes clamped to it (seconds). */
  readonly sourceDateEpoch?: number;
  /** Compression of the layers the steps write (default gzip, as docker), and its level. */
  readonly compression?: 'gzip' | 'zstd';
  readonly compressionLevel?: number;
  readonly signal?: AbortSignal;
}

/** A base image the build resolved (once, by digest). */
export interface ResolvedBase {
  readonly image: ImageValue;
  /** The full reference name it was resolved from. */
  readonly name: string;
  /** The platform manifest's digest. */
  readonly digest: Digest;
}

/** What the executor needs from the engine. */
export interface BuildHost {
  readonly store: ContentStore;
  readonly lease: Lease;
  readonly observer: Observer;
  readonly runner: StepRunner;
  readonly driver: DriverName;
  /** Cap on each layer's uncompressed bytes when step containers unpack it (default 64 GiB; SIZE_LIMIT beyond). */
  readonly maxUncompressedBytes?: number;
  /** Finds (pulling when absent, or always with `pull`) an image for `platform`. */
  resolveImage(
    ref: string,
    options: { pull: boolean; platform: Platform; signal?: AbortSignal },
  ): Promise<ResolvedBase>;
  /** Entries beyond the local cache (`--cache-from`), asked on a local miss. */
  readonly remoteCache?: RemoteStepCache;
}

/** What a build produced: the final image (stored, not yet tagged). */
export interface BuildOutcome {
  readonly image: ImageValue;
  readonly manifest: Digest;
  readonly config: Digest;
  readonly mediaType: string;
  /** Compressed bytes of the layers. */
  readonly size: number;
  readonly layers: number;
  /** Steps run or reused (config-only steps included). */
  readonly steps: number;
  readonly cacheHits: number;
  /** The cache entries the build used or made, in step order (what `--cache-to` exports). */
  readonly cacheEntries: readonly UsedCacheEntry[];
  /** Base images by reference, resolved to digests. */
  readonly bases: ReadonlyArray<{ readonly name: string; readonly digest: Digest }>;
}

/** The state of a stage while it is built. */
interface StageState {
  image: ImageValue;
  cfg: ConfigState;
  /** ARGs declared in this stage with a value, in declaration order. */
  args: Map<string, string>;
}

const PROXY_ARGS = [
  'HTTP_PROXY',
  'http_proxy',
  'HTTPS_PROXY',
  'https_proxy',
  'FTP_PROXY',
  'ftp_proxy',
  'NO_PROXY',
  'no_proxy',
  'ALL_PROXY',
  'all_proxy',
];

/** The predefined platform ARGs (BuildKit's `TARGETPLATFORM` family), global by default. */
export function platformArgs(target: Platform, build: Platform): Map<string, string> {
  const m = new Map<string, string>();
  for (const [prefix, p] of [
    ['TARGET', target],
    ['BUILD', build],
  ] as const) {
    m.set(`${prefix}PLATFORM`, formatPlatform(p));
    m.set(`${prefix}OS`, p.os);
    m.set(`${prefix}ARCH`, p.architecture);
    m.set(`${prefix}VARIANT`, p.variant ?? '');
  }
  return m;
}

function lineError(
  instr: { line: number },
  stage: string,
  msg: string,
  code: 'DOCKERFILE_INVALID' | 'BUILD_STEP_FAILED' | 'BUILD_CONTEXT_INVALID' = 'DOCKERFILE_INVALID',
): TerminalError {
  return new TerminalError(code, `Dockerfile:${instr.line}: ${stage}: ${msg}`, {
    detail: { line: instr.line, stage },
  });
}

/** Builds a Dockerfile; the final image is written to the store (no ref). */
export async function buildImage(host: BuildHost, request: BuildRequest): Promise<BuildOutcome> {
  const file = parseDockerfile(request.dockerfile);
  return new Build(host, request, file).run();
}

class Build {
  private readonly cache: BuildCache;
  private readonly platform: Platform;
  private readonly globals: Map<string, string>;
  private readonly results = new Map<number, ImageValue>();
  private readonly bases = new Map<string, ResolvedBase>();
  private readonly usedArgs = new Set<string>();
  private step = 0;
  private total = 0;
  private cacheHits = 0;
  private readonly noCache: boolean;
  /** Entries used or made, with the index of their stage. */
  private readonly usedEntries: Array<{ key: string; manifest: Digest; stage: number }> = [];
  private readonly stepHost: StepHost;

  constructor(
    private readonly host: BuildHost,
    private readonly request: BuildRequest,
    private readonly file: Dockerfile,
  ) {
    this.cache = new BuildCache(host.store.root);
    this.platform = request.platform ?? hostPlatform();
    this.noCache = request.noCache === true;
    // Global scope: the predefined platform args, then the ARGs before the first FROM (build args override defaults).
    this.globals = platformArgs(this.platform, hostPlatform());
    for (const a of file.globalArgs)
      for (const { name, default: def } of a.args) {
        const given = this.buildArg(name);
        const value = given ?? (def !== undefined ? expandWord(def, this.globals, file.escape) : undefined);
        if (value !== undefined) this.globals.set(name, value);
      }
    this.stepHost = {
      store: host.store,
      lease: host.lease,
      driver: host.driver,
      observer: host.observer,
      ...(host.maxUncompressedBytes !== undefined ? { maxUncompressedBytes: host.maxUncompressedBytes } : {}),
      ...(request.sourceDateEpoch !== undefined ? { sourceDateEpoch: request.sourceDateEpoch } : {}),
      ...(request.compression ? { compression: request.compression } : {}),
      ...(request.compressionLevel !== undefined ? { compressionLevel: request.compressionLevel } : {}),
      ...(request.signal ? { signal: request.signal } : {}),
    };
  }

  private buildArg(name: string): string | undefined {
    const args = this.request.buildArgs ?? {};
    if (Object.prototype.hasOwnProperty.call(args, name)) {
      this.usedArgs.add(name);
      return args[name];
    }
    return undefined;
  }

  /** The store's COPY source digest cache, loaded on first use (in memory only with `noCache`). */
  private digests: Promise<FileDigestCache> | undefined;

  private digestCache(): Promise<FileDigestCache> {
    this.digests ??=
      this.request.noCache === true
        ? Promise.resolve(FileDigestCache.inMemory())
        : FileDigestCache.load(join(buildCacheDir(this.host.store.root), 'file-digests.json'));
    return this.digests;
  }

  async run(): Promise<BuildOutcome> {
    const target = targetStage(this.file, this.request.target);
    const expandGlobal = (w: string): string => expandWord(w, this.globals, this.file.escape);
    const order = stagesToBuild(this.file, target, expandGlobal);
    this.total = order.reduce((n, i) => n + 1 + this.file.stages[i]!.instructions.length, 0);
    for (const index of order) this.results.set(index, await this.buildStage(this.file.stages[index]!));
    let image = this.results.get(target.index)!;
    image = this.finish(image);
    const stored = await storeImage(this.stepHost, image, 'build result');
    const unused = Object.keys(this.request.buildArgs ?? {}).filter(
      (k) => !this.usedArgs.has(k) && !PROXY_ARGS.includes(k),
    );
    if (unused.length > 0)
      this.host.observer.log.warn({ args: unused }, `build args were not consumed: ${unused.join(', ')}`);
    const rendered = renderImage(image);
    return {
      image,
      manifest: stored.manifest.digest,
      config: stored.configDigest,
      mediaType: rendered.manifest.descriptor.mediaType,
      size: image.layers.reduce((n, l) => n + l.size, 0),
      layers: image.layers.length,
      steps: this.step,
      cacheHits: this.cacheHits,
      cacheEntries: this.usedEntries.map((e) => ({
        key: e.key,
        manifest: e.manifest,
        final: e.stage === target.index,
      })),
      bases: [...this.bases.values()].map((b) => ({ name: b.name, digest: b.digest })),
    };
  }

  /** Labels and the image's creation time; not cached (BuildKit applies them at export too). */
  private finish(image: ImageValue): ImageValue {
    let out = image;
    const labels = this.request.labels ?? {};
    if (Object.keys(labels).length > 0) {
      const cfg = out.config.config ?? {};
      out = {
        ...out,
        config: { ...out.config, config: { ...cfg, Labels: { ...(cfg.Labels ?? {}), ...labels } } },
      };
      const { rawConfig: _r, ...rest } = out;
      out = rest;
    }
    // The image is as old as its newest step: a fully cached build gives the very same image, as in docker.
    const last = out.config.history?.at(-1)?.created;
    return withCreated(out, this.request.sourceDateEpoch !== undefined || !last ? this.created() : last);
  }

  private created(): string {
    const epoch = this.request.sourceDateEpoch;
    return epoch !== undefined ? new Date(epoch * 1000).toISOString() : new Date().toISOString();
  }

  private stageName(stage: Stage): string {
    return stage.from.stageName ?? `stage-${stage.index}`;
  }

  private emitStep(
    stage: Stage,
    instruction: string,
    status: 'start' | 'cached' | 'done' | 'error',
    durationMs?: number,
  ): void {
    this.host.observer.emit({
      type: 'build-step',
      stage: this.stageName(stage),
      step: this.step,
      total: this.total,
      instruction,
      status,
      ...(durationMs !== undefined ? { durationMs } : {}),
    });
  }

  private async buildStage(stage: Stage): Promise<ImageValue> {
    throwIfAborted(this.request.signal);
    const name = this.stageName(stage);
    const from = expandInstruction(stage.from, this.globals, this.file.escape);
    this.step++;
    const started = Date.now();
    this.emitStep(stage, `FROM ${from.image}${from.stageName ? ` AS ${from.stageName}` : ''}`, 'start');
    const platformFlag = from.flags.find((f) => f.name === 'platform')?.value;
    if (platformFlag !== undefined && platformFlag !== '' && platformFlag !== formatPlatform(this.platform))
      throw lineError(
        from,
        name,
        `FROM --platform=${platformFlag}: only the build's platform (${formatPlatform(this.platform)}) can be built here`,
      );
    let base: ImageValue;
    const src = resolveStageName(this.file, from.image, stage.index, false);
    if (src.kind === 'stage') base = this.results.get(src.index)!;
    else if (from.image.toLowerCase() === 'scratch') base = emptyImage(this.platform);
    else base = (await this.resolveBase(from.image, from, name)).image;
    this.emitStep(stage, `FROM ${from.image}`, 'done', Date.now() - started);

    const onBuild = (base.config.config?.['OnBuild'] as string[] | undefined) ?? [];
    // A new image does not inherit its base's triggers or manifest annotations.
    const baseCfg = { ...(base.config.config ?? {}) };
    delete baseCfg['OnBuild'];
    // BuildKit makes sure every stage has PATH (appended when the base has none, scratch included; not on Windows):
    // it is then in the image config, not only in RUN's environment.
    if (this.platform.os !== 'windows' && !envMap(baseCfg.Env).has('PATH'))
      baseCfg.Env = [...(baseCfg.Env ?? []), `PATH=${DEFAULT_PATH}`];
    let state: StageState = {
      // zstd layers need OCI media types: a Docker schema2 base moves to the OCI family (blobs unchanged).
      image: withFamily(
        withAnnotations({ ...base, config: { ...base.config, config: baseCfg } }),
        this.request.compression === 'zstd' ? 'oci' : base.family,
      ),
      cfg: { config: baseCfg, cmdSetInStage: false },
      args: new Map(),
    };
    if (base.rawConfig) {
      const { rawConfig: _r, ...rest } = state.image;
      state.image = rest;
    }
    const triggers = onBuild.map((t, i) => parseTrigger(t, stage, i));
    this.total += triggers.length; // the base's ONBUILD triggers are steps of this build too
    for (const instr of [...triggers, ...stage.instructions])
      state = await this.buildStep(stage, state, instr);
    return state.image;
  }

  private async resolveBase(ref: string, at: { line: number }, stage: string): Promise<ResolvedBase> {
    const known = this.bases.get(ref);
    if (known) return known;
    try {
      const resolved = await this.host.resolveImage(ref, {
        pull: this.request.pull === true,
        platform: this.platform,
        ...(this.request.signal ? { signal: this.request.signal } : {}),
      });
      this.bases.set(ref, resolved);
      return resolved;
    } catch (err) {
      if (hasCode(err, 'ABORTED')) throw err;
      const why = err instanceof Error ? err.message : String(err);
      throw new TerminalError(
        (err as { code?: string }).code === 'INVALID_ARGUMENT' ? 'DOCKERFILE_INVALID' : 'BUILD_STEP_FAILED',
        `Dockerfile:${at.line}: ${stage}: cannot use the image ${JSON.stringify(ref)}: ${why}`,
        { cause: err, detail: { line: at.line, stage } },
      );
    }
  }

  /** Variables a step sees: the ARGs in effect, then ENV (ENV wins, as in docker). */
  private vars(state: StageState): Map<string, string> {
    const m = new Map(state.args);
    for (const [k, v] of envMap(state.cfg.config.Env)) m.set(k, v);
    return m;
  }

  private async buildStep(stage: Stage, state: StageState, raw: Instruction): Promise<StageState> {
    throwIfAborted(this.request.signal);
    this.step++;
    const name = this.stageName(stage);
    if (raw.kind === 'ARG') return this.declareArgs(stage, state, raw);
    const instr = expandInstruction(raw, this.vars(state), this.file.escape);
    const started = Date.now();
    const text = historyText(instr, state);
    this.emitStep(stage, text, 'start');
    const parentConfig = renderImage(state.image).config.descriptor.digest;
    let sources: string | undefined;
    let copy: { request: Omit<CopyRequest, 'destRoot'>; release(): Promise<void> } | undefined;
    try {
      // Before the cache: a step the build's network does not allow fails even when an earlier build cached it.
      if (instr.kind === 'RUN') this.stepNetwork(stage, instr);
      if (instr.kind === 'COPY' || instr.kind === 'ADD') {
        try {
          copy = await this.copyRequest(stage, state, instr);
          const digestCache = await this.digestCache();
          sources = await hashSources({ ...copy.request, digestCache });
          // Saved per COPY step, so that a build failing later still spares the next one the reading.
          await digestCache
            .save()
            .catch((err: unknown) =>
              this.host.observer.log.warn({ err }, 'could not save the COPY source digest cache'),
            );
        } catch (err) {
          throw this.stepError(stage, instr, err, 'BUILD_CONTEXT_INVALID');
        }
      }
      const key = stepCacheKey({
        parent: parentConfig,
        instruction: text,
        args: Object.fromEntries(state.args),
        env: state.cfg.config.Env ?? [],
        ...(sources ? { sources } : {}),
      });
      // Every step is looked up, also after a miss: a rebuilt step that gives the same image as before (a
      // reproducible build) lets the steps after it hit again.
      if (!this.noCache) {
        const hit = await this.cacheLookup(key, state.image);
        if (hit) {
          this.cacheHits++;
          this.usedEntries.push({ key, manifest: hit.manifest, stage: stage.index });
          this.emitStep(stage, text, 'cached', Date.now() - started);
          const cfg: ConfigState = {
            config: hit.image.config.config ?? {},
            cmdSetInStage: state.cfg.cmdSetInStage || instr.kind === 'CMD',
            ...(hit.image.config.author !== undefined ? { author: hit.image.config.author } : {}),
          };
          return { ...state, image: hit.image, cfg };
        }
      }
      const next = await this.execute(stage, state, instr, text, copy?.request).catch((err: unknown) => {
        throw this.stepError(stage, instr, err, 'DOCKERFILE_INVALID');
      });
      const stored = await storeImage(this.stepHost, next.image, `${name} step ${this.step}`);
      await this.cache.put(key, { manifest: stored.manifest.digest, config: stored.configDigest });
      this.usedEntries.push({ key, manifest: stored.manifest.digest, stage: stage.index });
      this.emitStep(stage, text, 'done', Date.now() - started);
      return next;
    } catch (err) {
      this.emitStep(stage, text, 'error', Date.now() - started);
      throw err;
    } finally {
      await copy?.release();
    }
  }

  /**
   * A step's failure with its place: `Dockerfile:N: <stage> step i/n: <message>`, the original as `cause` and
   * its code kept — except INVALID_ARGUMENT (the CLI's usage error), which becomes `invalidAs` (the context while
   * sources are resolved, the Dockerfile once the step runs). Aborts, a full disk and errors that already name
   * their line pass through unchanged.
   */
  private stepError(
    stage: Stage,
    instr: Instruction,
    err: unknown,
    invalidAs: 'BUILD_CONTEXT_INVALID' | 'DOCKERFILE_INVALID',
  ): unknown {
    if (hasCode(err, 'ABORTED') || hasCode(err, 'STORAGE_FULL')) return err;
    const message = err instanceof Error ? err.message : String(err);
    if (message.startsWith('Dockerfile:')) return err;
    const strata = err instanceof StrataError ? err : undefined;
    const code = !strata ? 'BUILD_STEP_FAILED' : strata.code === 'INVALID_ARGUMENT' ? invalidAs : strata.code;
    const name = this.stageName(stage);
    const text = `Dockerfile:${instr.line}: ${name} step ${this.step}/${this.total}: ${message}`;
    const options = { cause: err, detail: { ...strata?.detail, line: instr.line, stage: name } };
    return strata?.retryable
      ? new StrataError(code, text, { ...options, retryable: true })
      : new TerminalError(code, text, options);
  }

  /** The image cached under `key`: from the local cache, else imported from a remote cache (then kept locally). */
  private async cacheLookup(
    key: string,
    parent: ImageValue,
  ): Promise<{ image: ImageValue; manifest: Digest } | undefined> {
    const local = await this.cache.get(key);
    const image = local ? await this.loadEntry(local) : undefined;
    if (local && image) return { image, manifest: local.manifest };
    const remote = await this.host.remoteCache?.lookup(key, this.request.signal);
    if (!remote) return undefined;
    const imported = await this.loadEntry(remote);
    // A remote entry is trusted only as far as it is a step of this very parent.
    if (!imported || !isStepOf(parent, imported)) {
      this.host.remoteCache!.reject(key, imported ? 'not a step of this parent image' : 'incomplete');
      return undefined;
    }
    await this.cache.put(key, remote);
    return { image: imported, manifest: remote.manifest };
  }

  /** The image of a cache entry, leased, when every blob of it is still stored; undefined otherwise. */
  private async loadEntry(entry: BuildCacheEntry): Promise<ImageValue | undefined> {
    try {
      await this.host.lease.add({ digests: [entry.manifest] }, this.request.signal);
      const { image } = await readImageValue(this.host.store, entry.manifest, 'build cache');
      // Every layer must still be stored (gc may have run while the entry stayed).
      for (const l of image.layers) if (!(await this.host.store.claim(l.digest, l.size))) return undefined;
      await this.host.lease.add(
        { digests: image.layers.map((l) => l.digest), chainIds: chainIds(image.config.rootfs.diff_ids) },
        this.request.signal,
      );
      return image;
    } catch (err) {
      if (hasCode(err, 'ABORTED')) throw err;
      return undefined; // a broken entry is a miss
    }
  }

  private declareArgs(stage: Stage, state: StageState, instr: Instruction & { kind: 'ARG' }): StageState {
    const args = new Map(state.args);
    const vars = this.vars(state);
    for (const { name, default: def } of instr.args) {
      const value =
        this.buildArg(name) ??
        (def !== undefined ? expandWord(def, vars, this.file.escape) : undefined) ??
        this.globals.get(name);
      if (value !== undefined) {
        args.set(name, value);
        vars.set(name, value);
      }
    }
    this.emitStep(stage, instr.original, 'start');
    this.emitStep(stage, instr.original, 'done', 0);
    return { ...state, args };
  }

  private async execute(
    stage: Stage,
    state: StageState,
    instr: Instruction,
    text: string,
    copy: Omit<CopyRequest, 'destRoot'> | undefined,
  ): Promise<StageState> {
    const created = this.created();
    const history = { created, created_by: text, comment: 'strata build' };
    if (instr.kind === 'RUN' || instr.kind === 'COPY' || instr.kind === 'ADD') {
      const what = `${this.stageName(stage)} step ${this.step} (Dockerfile:${instr.line})`;
      const layer = await runInStepContainer(this.stepHost, state.image, what, async (root) => {
        if (instr.kind === 'RUN') await this.runStep(stage, state, instr, root);
        else await copyIntoRoot({ ...copy!, destRoot: root });
      });
      const image = appendLayer(state.image, { ...(layer ? { layer } : {}), history });
      return { ...state, image };
    }
    const cfg = applyConfigInstruction(state.cfg, instr);
    let image: ImageValue = { ...state.image, config: { ...state.image.config, config: cfg.config } };
    if (cfg.author !== undefined && cfg.author !== state.cfg.author) image = withAuthor(image, cfg.author);
    // WORKDIR makes its directory now, owned by the USER in effect (BuildKit's mkdir file op), so it exists in
    // the image even when no RUN follows; nothing new (it existed) means no layer, an empty_layer entry.
    const wd = cfg.config.WorkingDir;
    const layer =
      instr.kind === 'WORKDIR' && wd && wd !== '/'
        ? await runInStepContainer(
            this.stepHost,
            state.image,
            `${this.stageName(stage)} step ${this.step} (Dockerfile:${instr.line})`,
            async (root) => {
              const user = await resolveUser(root, state.cfg.config.User || undefined).catch(
                (err: unknown) => {
                  throw lineError(instr, this.stageName(stage), errorText(err), 'BUILD_STEP_FAILED');
                },
              );
              await ensureWorkdir(await SafeRoot.open(root, undefined, CHROOT), wd, user).catch(
                (err: unknown) => {
                  throw lineError(instr, this.stageName(stage), errorText(err), 'BUILD_STEP_FAILED');
                },
              );
            },
          )
        : undefined;
    image = appendLayer(image, { ...(layer ? { layer } : {}), history });
    return { ...state, cfg, image };
  }

  /** A RUN's network, bounded by the build's (see `network.ts`); a step asking for more fails, naming its line. */
  private stepNetwork(stage: Stage, instr: RunInstruction): StepNetwork {
    const choice = runNetwork(instr, this.request.network);
    if (!choice.ok) throw lineError(instr, this.stageName(stage), choice.why);
    return choice.network;
  }

  private async runStep(stage: Stage, state: StageState, instr: RunInstruction, root: string): Promise<void> {
    const name = this.stageName(stage);
    if (!platformMatches(hostPlatform(), this.platform))
      throw new TerminalError(
        'RUNTIME_UNAVAILABLE',
        `Dockerfile:${instr.line}: ${name}: RUN cannot execute ${formatPlatform(this.platform)} programs on this ${formatPlatform(hostPlatform())} host (no emulation); build on a ${formatPlatform(this.platform)} node, or use only COPY/ADD and config steps`,
        { detail: { line: instr.line, stage: name } },
      );
    for (const f of instr.flags) {
      if (f.name === 'network') continue;
      throw lineError(instr, name, `RUN --${f.name} is not supported yet (only --network)`);
    }
    const network = this.stepNetwork(stage, instr);
    const config = state.cfg.config;
    const env = [...(config.Env ?? [])];
    if (!envMap(env).has('PATH')) env.unshift(`PATH=${DEFAULT_PATH}`);
    const envKeys = envMap(env);
    for (const [k, v] of state.args) if (!envKeys.has(k)) env.push(`${k}=${v}`);
    // Proxy build args reach RUN without an ARG (and stay out of the image and the cache key).
    for (const p of PROXY_ARGS) {
      const v = this.request.buildArgs?.[p];
      if (v !== undefined && !envKeys.has(p) && !state.args.has(p)) env.push(`${p}=${v}`);
    }
    const user = await resolveUser(root, config.User || undefined).catch((err: unknown) => {
      throw lineError(instr, name, err instanceof Error ? err.message : String(err), 'BUILD_STEP_FAILED');
    });
    const result = await this.host.runner({
      rootfs: root,
      args: runArgv(instr, shellOf(config)),
      env,
      cwd: config.WorkingDir || '/',
      user,
      network,
      onStdout: (chunk) => this.output('stdout', chunk),
      onStderr: (chunk) => this.output('stderr', chunk),
      ...(this.request.signal ? { signal: this.request.signal } : {}),
    });
    if (result.exitCode !== 0 || result.signal) {
      const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
      throw new TerminalError(
        'BUILD_STEP_FAILED',
        `Dockerfile:${instr.line}: ${name} step ${this.step}/${this.total}: ${instr.original} ${how}${result.tail ? `\n${result.tail.trimEnd()}` : ''}`,
        { detail: { line: instr.line, stage: name, exitCode: result.exitCode } },
      );
    }
  }

  private output(stream: 'stdout' | 'stderr', chunk: Buffer): void {
    this.host.observer.emit({ type: 'build-output', step: this.step, stream, text: chunk.toString('utf8') });
  }

  /** The copy request of a COPY/ADD (sources resolved; a `--from` root mounted until `release`). */
  private async copyRequest(
    stage: Stage,
    state: StageState,
    instr: CopyInstruction,
  ): Promise<{ request: Omit<CopyRequest, 'destRoot'>; release(): Promise<void> }> {
    const name = this.stageName(stage);
    const flag = (n: string): string | undefined => instr.flags.find((f) => f.name === n)?.value;
    for (const f of instr.flags)
      if (!['from', 'chown', 'chmod', 'link', 'checksum', 'unpack'].includes(f.name))
        throw lineError(instr, name, `${instr.kind} --${f.name} is not supported`);
    if (instr.kind === 'COPY' && (flag('checksum') !== undefined || flag('unpack') !== undefined))
      throw lineError(instr, name, 'COPY takes neither --checksum nor --unpack (they are ADD flags)');
    const sum = flag('checksum');
    if (sum !== undefined) {
      // As BuildKit: only a download can be checked, and only against a digest this engine computes (sha256).
      if (!/^sha256:[0-9a-f]{64}$/.test(sum))
        throw lineError(instr, name, `ADD --checksum=${sum}: expected sha256:<64 lowercase hex digits>`);
      const local = instr.sources.find((s) => !isUrlSource(s));
      if (local !== undefined)
        throw lineError(
          instr,
          name,
          `ADD --checksum can't be specified for non-HTTP(S) sources: ${JSON.stringify(local)}`,
        );
    }
    let release = async (): Promise<void> => undefined;
    let from: CopySourceRoot = {
      dir: this.request.contextDir,
      ignorePatterns: this.request.ignorePatterns ?? [],
      isContext: true,
    };
    const fromFlag = flag('from');
    if (fromFlag !== undefined) {
      const src = resolveStageName(this.file, fromFlag, stage.index, true);
      const image =
        src.kind === 'stage'
          ? this.results.get(src.index)
          : (await this.resolveBase(src.ref, instr, name)).image;
      if (!image) throw lineError(instr, name, `--from=${fromFlag}: that stage was not built`);
      const mounted = await this.mountRoot(image, `${name} --from=${fromFlag}`);
      from = { dir: mounted.dir, isContext: false };
      release = mounted.release;
    }
    try {
      const chown = flag('chown');
      const chmod = flag('chmod');
      if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod))
        throw lineError(instr, name, `--chmod=${chmod}: an octal mode is expected (e.g. 755)`);
      const checksum = flag('checksum');
      const unpack = flag('unpack');
      const heredocs = new Set(instr.heredocs.map((h) => h.name));
      const request: Omit<CopyRequest, 'destRoot'> = {
        instruction: instr.kind,
        from,
        sources: instr.sources.filter((s) => !heredocs.has(heredocName(s) ?? '')),
        ...(instr.heredocs.length > 0
          ? {
              inline: instr.heredocs.map((h) => ({
                name: h.name,
                content: h.expand ? expandHeredoc(h.content, this.vars(state)) : h.content,
              })),
            }
          : {}),
        destination: instr.destination,
        workdir: state.cfg.config.WorkingDir || '/',
        ...(chown !== undefined ? { chown: await this.resolveChown(chown, state, instr, name) } : {}),
        ...(chmod !== undefined ? { chmod: parseInt(chmod, 8) } : {}),
        ...(checksum !== undefined ? { checksum: checksum as Digest } : {}),
        ...(unpack !== undefined ? { unpack: unpack !== 'false' } : {}),
        ...(this.request.sourceDateEpoch !== undefined
          ? { sourceDateEpoch: this.request.sourceDateEpoch }
          : {}),
        ...(this.request.signal ? { signal: this.request.signal } : {}),
      };
      return { request, release };
    } catch (err) {
      await release();
      throw err;
    }
  }

  /** `--chown=user[:group]` through the stage root's passwd/group; a user alone gives gid = uid, as docker does. */
  private async resolveChown(
    spec: string,
    state: StageState,
    at: { line: number },
    stage: string,
  ): Promise<{ uid: number; gid: number }> {
    const [userPart = '', groupPart] = spec.split(':');
    if (/^\d+$/.test(userPart) && (groupPart === undefined || /^\d+$/.test(groupPart)))
      return { uid: Number(userPart), gid: Number(groupPart ?? userPart) };
    const mounted = await this.mountRoot(state.image, `${stage} --chown`);
    try {
      const u = await resolveUser(mounted.dir, userPart);
      if (groupPart === undefined) return { uid: u.uid, gid: u.uid };
      const g = await resolveUser(mounted.dir, `0:${groupPart}`);
      return { uid: u.uid, gid: g.gid };
    } catch (err) {
      throw lineError(at, stage, `--chown=${spec}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      await mounted.release();
    }
  }

  /** Mounts an image's root read-mostly (a throwaway container) for `--from` and user lookups. */
  private async mountRoot(
    image: ImageValue,
    what: string,
  ): Promise<{ dir: string; release(): Promise<void> }> {
    const local = await storeImage(this.stepHost, image, what);
    await this.host.lease.add({ chainIds: chainIds(image.config.rootfs.diff_ids) }, this.request.signal);
    const record = await createContainer(this.host.store, local, {
      name: `strata-build-${randomBytes(6).toString('hex')}`,
      driver: this.host.driver,
      observer: this.host.observer,
      ...(this.host.maxUncompressedBytes !== undefined
        ? { maxUncompressedBytes: this.host.maxUncompressedBytes }
        : {}),
      ...(this.request.signal ? { signal: this.request.signal } : {}),
    });
    const dir = await mountContainer(this.host.store, record.name).catch(async (err: unknown) => {
      await removeContainer(this.host.store, record.name, { force: true }).catch(() => undefined);
      throw err;
    });
    return {
      dir,
      release: async () => {
        await removeContainer(this.host.store, record.name, { force: true }).catch((err: unknown) =>
          this.host.observer.log.warn(
            { err, container: record.name },
            `${what}: could not remove its container`,
          ),
        );
      },
    };
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `<<EOF` / `<<-"EOF"` as a source word: the heredoc's name. */
function heredocName(word: string): string | undefined {
  return parseHeredocMarker(word)?.name;
}

/** argv of a RUN: a heredoc that is the whole command is the script; else the heredocs go to the shell with it. */
function runArgv(instr: RunInstruction, shell: readonly string[]): string[] {
  const c = instr.command;
  if (c.form === 'exec' || instr.heredocs.length === 0) return argvOf(c, shell);
  const only = heredocName(c.command.trim());
  if (only !== undefined && instr.heredocs.length === 1) return [...shell, instr.heredocs[0]!.content];
  const script = [c.command, ...instr.heredocs.map((h) => `${h.content}${h.name}`)].join('\n');
  return [...shell, script];
}

/** The history `created_by` of a step (BuildKit's form: RUN shows the build args it saw as `|N K=V …`). */
function historyText(instr: Instruction, state: StageState): string {
  if (instr.kind === 'RUN') {
    const argv = runArgv(instr, shellOf(state.cfg.config));
    const args = [...state.args].map(([k, v]) => `${k}=${v}`);
    const prefix = args.length > 0 ? `|${args.length} ${args.join(' ')} ` : '';
    return `RUN ${prefix}${argv.join(' ')}`;
  }
  return instr.original;
}

function parseTrigger(trigger: string, stage: Stage, i: number): Instruction {
  try {
    const parsed = parseDockerfile(`FROM scratch\n${trigger}\n`);
    const instr = parsed.stages[0]?.instructions[0];
    if (!instr) throw new Error('empty trigger');
    return { ...instr, line: stage.from.line, endLine: stage.from.endLine };
  } catch (err) {
    throw new TerminalError(
      'DOCKERFILE_INVALID',
      `Dockerfile:${stage.from.line}: the base image's ONBUILD trigger ${i + 1} (${JSON.stringify(trigger)}) is invalid: ${err instanceof Error ? err.message : String(err)}`,
      { detail: { line: stage.from.line } },
    );
  }
}
