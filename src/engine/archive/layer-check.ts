/**
 * Checks a layer tar while it streams past, with the rules `applyLayer` enforces (union/whiteouts.ts,
 * union/safe-path.ts) run against a model of the tree (paths and kinds only, no data), so `import` refuses what
 * `unpack` and `create` would refuse before anything is tagged.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { StrataError, TerminalError } from '../errors.js';
import { readTar, TarFormatError, type TarHeader } from '../tar/reader.js';
import { DEFAULT_MAX_PAX_HEADER_BYTES } from '../union/apply.js';
import { walkParents, type NodeKind } from '../union/safe-path.js';
import { classifyEntry, isWithin, normalizeEntryPath } from '../union/whiteouts.js';

/** A refused entry, as `applyLayer` reports it: LAYER_INVALID with `detail: { layer, entry }`. */
export function layerInvalid(layer: string, entry: string, reason: string): TerminalError {
  return new TerminalError('LAYER_INVALID', `layer ${layer}: entry ${JSON.stringify(entry)}: ${reason}`, {
    detail: { layer, entry },
  });
}

/** The header fields the rules look at. */
export type CheckedHeader = Pick<TarHeader, 'name' | 'type' | 'linkname'>;

/**
 * The tree a layer builds, as kinds by canonical path, and the apply rules over it: one call per entry, in tar
 * order, answers why the entry would be refused (undefined: accepted). A single layer applied to an empty root.
 */
export class LayerModel {
  private readonly nodes = new Map<string, NodeKind>();
  /** Entries seen. */
  entries = 0;

  private lookup = (rel: string): NodeKind => this.nodes.get(rel) ?? { kind: 'missing' };

  private removeTree(rel: string): void {
    const was = this.nodes.get(rel);
    this.nodes.delete(rel);
    // Only a directory has descendants to forget (a scan of the model, so rare: whiteouts and replaced dirs).
    if (was?.kind === 'dir') for (const p of this.nodes.keys()) if (isWithin(p, rel)) this.nodes.delete(p);
  }

  /** Applies one entry to the model; returns the reason it is refused, if it is. */
  async entry(h: CheckedHeader): Promise<string | undefined> {
    this.entries++;
    const norm = normalizeEntryPath(h.name);
    if (!norm.ok) return norm.reason;
    const cls = classifyEntry(norm.path);
    if (cls.kind === 'invalid') return cls.reason;
    if (cls.kind === 'meta') return undefined;
    const create = (rel: string): void => void this.nodes.set(rel, { kind: 'dir' });
    if (cls.kind === 'opaque') {
      const r = await walkParents(cls.dir === '' ? '' : `${cls.dir}/x`, this.lookup, { create });
      return r.status === 'refused' ? r.reason : undefined;
    }
    if (cls.kind === 'whiteout') {
      const r = await walkParents(cls.target, this.lookup, { create });
      if (r.status === 'refused') return r.reason;
      if (r.status === 'ok') this.removeTree(r.rel);
      return undefined;
    }
    if (cls.path === '') return h.type === 'directory' ? undefined : 'the root can only be a directory';
    const r = await walkParents(cls.path, this.lookup, { create });
    if (r.status !== 'ok') return r.status === 'refused' ? r.reason : undefined;
    if (h.type === 'link') {
      const why = await this.hardlinkProblem(h.linkname);
      if (why) return why;
    }
    const existing = this.nodes.get(r.rel);
    if (existing?.kind === 'dir' && h.type === 'directory') return undefined;
    if (existing) this.removeTree(r.rel);
    this.nodes.set(
      r.rel,
      h.type === 'directory'
        ? { kind: 'dir' }
        : h.type === 'symlink'
          ? { kind: 'symlink', target: h.linkname }
          : { kind: 'other' },
    );
    return undefined;
  }

  private async hardlinkProblem(linkname: string): Promise<string | undefined> {
    const what = `hardlink target ${JSON.stringify(linkname)}`;
    const norm = normalizeEntryPath(linkname);
    if (!norm.ok) return `${what}: ${norm.reason}`;
    if (norm.path === '') return 'a hardlink to the root';
    const r = await walkParents(norm.path, this.lookup);
    if (r.status === 'refused') return `${what}: ${r.reason}`;
    const node = r.status === 'ok' ? this.nodes.get(r.rel) : undefined;
    if (!node) return `${what} does not exist in the image`;
    if (node.kind === 'dir') return `${what} is a directory`;
    return undefined;
  }
}

/** Hands chunks from a stream's transform to an async reader, one chunk ahead at most (backpressure both ways). */
class ChunkFeed implements AsyncIterableIterator<Uint8Array> {
  private readonly chunks: Buffer[] = [];
  private ended = false;
  private closed = false;
  private wake: (() => void) | undefined;
  private taken: (() => void) | undefined;

  /** Resolves when the reader has taken the chunk (at once when it stopped reading). */
  push(chunk: Buffer): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.chunks.push(chunk);
    this.wake?.();
    return new Promise((resolve) => (this.taken = resolve));
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async next(): Promise<IteratorResult<Uint8Array>> {
    while (this.chunks.length === 0) {
      if (this.ended || this.closed) return { done: true, value: undefined };
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    const value = this.chunks.shift()!;
    const taken = this.taken;
    this.taken = undefined;
    taken?.();
    return { done: false, value };
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    this.closed = true;
    this.chunks.length = 0;
    const taken = this.taken;
    this.taken = undefined;
    taken?.();
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** Options of {@link LayerCheckStream}. */
export interface LayerCheckOptions {
  /** Names the layer in errors (`layer NAME: entry "…": reason`). */
  readonly layerName: string;
  /** Called every few MiB and at the end with the entries and uncompressed bytes seen. */
  readonly onProgress?: (entries: number, bytes: number, done: boolean) => void;
}

/**
 * A pass-through stage for an uncompressed layer tar: bytes flow on unchanged while a tar reader checks every
 * entry against {@link LayerModel}. A refused entry or a malformed tar fails the stream (LAYER_INVALID naming the
 * entry) before its end is signalled downstream, so whatever consumes it never completes on a bad layer. A tar
 * with no entries is refused too (an import of nothing is a mistake).
 */
export class LayerCheckStream extends Transform {
  private readonly feed = new ChunkFeed();
  private readonly checking: Promise<void>;
  private bytes = 0;
  private reported = 0;
  private readonly model = new LayerModel();

  constructor(private readonly options: LayerCheckOptions) {
    super({ highWaterMark: 1 << 20 });
    this.checking = this.check();
    this.checking.catch(() => undefined); // surfaced through transform/flush
  }

  private async check(): Promise<void> {
    const name = this.options.layerName;
    let current: string | undefined;
    try {
      for await (const { header } of readTar(this.feed, { maxHeaderBytes: DEFAULT_MAX_PAX_HEADER_BYTES })) {
        current = header.name;
        const why = await this.model.entry(header);
        if (why) throw layerInvalid(name, header.name, why);
      }
    } catch (err) {
      if (err instanceof StrataError) throw err;
      if (err instanceof TarFormatError) throw layerInvalid(name, err.entry ?? current ?? '?', err.message);
      throw err;
    }
    if (this.model.entries === 0)
      throw new TerminalError('LAYER_INVALID', `layer ${name}: not a tar archive with entries`, {
        detail: { layer: name },
      });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes - this.reported >= 4 << 20) {
      this.reported = this.bytes;
      this.options.onProgress?.(this.model.entries, this.bytes, false);
    }
    // The checker failing first must stop the flow at once: race its failure against the hand-over.
    Promise.race([this.feed.push(chunk), this.checking.then(() => undefined)]).then(
      () => cb(null, chunk),
      (err: unknown) => cb(err as Error),
    );
  }

  override _flush(cb: TransformCallback): void {
    this.feed.end();
    this.checking.then(
      () => {
        this.options.onProgress?.(this.model.entries, this.bytes, true);
        cb();
      },
      (err: unknown) => cb(err as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    void this.feed.return();
    cb(err);
  }
}
