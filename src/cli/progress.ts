import type { ProgressEvent, ProgressListener } from '../engine/image/events.js';
import { humanSize } from './format.js';

/** How the CLI reports progress: bars on a terminal, JSON lines for machines, nothing otherwise. */
export type ProgressMode = 'tty' | 'json' | 'quiet';

interface BlobLine {
  digest: string;
  size: number;
  bytes: number;
  status: string;
}

const BAR_WIDTH = 30;

/** Draws one line per blob, redrawn in place at most every 100 ms. */
class TtyProgress {
  private readonly lines: BlobLine[] = [];
  private readonly byDigest = new Map<string, BlobLine>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly out: NodeJS.WriteStream) {}

  onEvent(e: ProgressEvent): void {
    switch (e.type) {
      case 'blob-start':
        this.line(e.digest, e.size).status = e.kind === 'config' ? 'config' : 'waiting';
        break;
      case 'blob-progress': {
        const l = this.line(e.digest, e.size);
        l.bytes = e.bytes;
        l.status = 'transferring';
        break;
      }
      case 'blob-done': {
        const l = this.line(e.digest, e.size);
        l.bytes = e.size;
        l.status = {
          copied: 'done',
          exists: 'already exists',
          mounted: 'mounted',
          'skipped-foreign': 'skipped (foreign)',
        }[e.outcome];
        break;
      }
      case 'note':
        this.flush();
        this.out.write(`note: ${e.message}\n`);
        this.drawn = 0;
        return;
      default:
        return;
    }
    this.timer ??= setTimeout(() => this.flush(), 100);
  }

  private line(digest: string, size: number): BlobLine {
    let l = this.byDigest.get(digest);
    if (!l) {
      l = { digest, size, bytes: 0, status: 'waiting' };
      this.byDigest.set(digest, l);
      this.lines.push(l);
    }
    return l;
  }

  /** Redraws every line (cursor up over the previous drawing). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let text = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const l of this.lines) {
      const frac = l.size > 0 ? Math.min(1, l.bytes / l.size) : 1;
      const filled = Math.round(frac * BAR_WIDTH);
      const bar =
        l.status === 'transferring'
          ? `[${'='.repeat(Math.max(0, filled - 1))}>${' '.repeat(BAR_WIDTH - filled)}] `
          : '';
      text += `\x1b[2K${l.digest.slice(7, 19)}: ${bar}${l.status === 'transferring' ? `${humanSize(l.bytes)}/${humanSize(l.size)}` : `${l.status} ${humanSize(l.size)}`}\n`;
    }
    this.drawn = this.lines.length;
    this.out.write(text);
  }
}

/** A progress listener for the chosen mode, and a `finish` to call before printing results. */
export function createProgress(
  mode: ProgressMode,
  stderr: NodeJS.WriteStream,
  stdout: NodeJS.WriteStream,
): { listener: ProgressListener; finish(): void } {
  if (mode === 'json') {
    return { listener: (e) => void stdout.write(`${JSON.stringify(e)}\n`), finish: () => undefined };
  }
  if (mode === 'tty') {
    const p = new TtyProgress(stderr);
    return { listener: (e) => p.onEvent(e), finish: () => p.flush() };
  }
  return {
    listener: (e) => {
      if (e.type === 'note') stderr.write(`note: ${e.message}\n`);
    },
    finish: () => undefined,
  };
}
