/** `layer-apply` progress events for one layer being applied (unpack, create's layer cache). */
import type { Readable } from 'node:stream';
import type { Observer } from '../observe.js';
import { progressGate } from '../util/throttle.js';
import type { ApplyStats } from './apply.js';

/** Where a layer sits in the image being applied, and who hears about it. */
export interface LayerProgressOptions {
  readonly observer?: Observer;
  /** 0-based position of the layer in the image, base first. */
  readonly index?: number;
  /** Layers in the image. */
  readonly count?: number;
}

/** Hooks a layer's apply calls: after each entry (throttled) and once at the end. */
export interface LayerProgress {
  readonly onEntry: (stats: ApplyStats) => void;
  readonly done: (stats: ApplyStats) => void;
}

const NONE: LayerProgress = { onEntry: () => undefined, done: () => undefined };

/**
 * Reports the apply of `layer` (its blob digest and size) read from `blob`: compressed bytes read so far and tar
 * entries applied, a few events a second, then one with `done: true`. Without an observer it costs nothing.
 */
export function layerProgress(
  options: LayerProgressOptions,
  layer: { readonly digest: string; readonly size?: number },
  blob: Readable,
): LayerProgress {
  const { observer } = options;
  if (!observer) return NONE;
  let read = 0;
  // A second 'data' listener sees every chunk the decompressor gets (a sniffed head may come twice: clamped).
  blob.on('data', (chunk: Buffer) => (read += chunk.length));
  const gate = progressGate();
  const emit = (stats: ApplyStats, done: boolean): void => {
    const size = layer.size;
    const bytes = size === undefined ? read : done ? size : Math.min(read, size);
    observer.emit({
      type: 'layer-apply',
      layer: layer.digest,
      index: options.index ?? 0,
      count: options.count ?? 1,
      bytes,
      entries: stats.entries,
      done,
      ...(size !== undefined ? { size } : {}),
    });
  };
  return {
    onEntry: (stats) => {
      if (gate()) emit(stats, false);
    },
    done: (stats) => emit(stats, true),
  };
}
