/** Keeps the last bytes written to a stream (the build pod's log tail, for its failure report). */

/** A tap on a stream's writes. */
export interface LogTail {
  /** The last bytes written since the tap, as text (may start mid-line; the first partial line is dropped). */
  text(): string;
  /** Puts the stream's own `write` back. */
  restore(): void;
}

/**
 * Wraps `stream.write` so every chunk also lands in a ring of at most `maxBytes`; the stream still gets every
 * byte. One tap per stream at a time.
 */
export function tapWrites(stream: NodeJS.WriteStream, maxBytes = 16 * 1024): LogTail {
  const original = stream.write;
  let kept = Buffer.alloc(0);
  let cut = false;
  stream.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
    const buf =
      typeof chunk === 'string'
        ? Buffer.from(chunk)
        : chunk instanceof Uint8Array
          ? Buffer.from(chunk)
          : Buffer.alloc(0);
    kept = Buffer.concat([kept, buf]);
    if (kept.length > maxBytes) {
      kept = kept.subarray(kept.length - maxBytes);
      cut = true;
    }
    return (original as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof stream.write;
  return {
    text() {
      const s = kept.toString('utf8');
      if (!cut) return s;
      const nl = s.indexOf('\n');
      return nl >= 0 ? s.slice(nl + 1) : s;
    },
    restore() {
      stream.write = original;
    },
  };
}
