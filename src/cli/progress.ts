import type { ProgressEvent } from '../engine/image/events.js';
import type { EngineEvent } from '../engine/observe.js';
import { humanSize } from './format.js';

/**
 * How the CLI reports progress: bars on a terminal (`tty`), one line per retry and note when standard error is
 * not a terminal (`plain`), JSON lines for machines (`json`), notes only with `-q` (`quiet`).
 */
export type ProgressMode = 'tty' | 'plain' | 'json' | 'quiet';

/** Everything the CLI renders: the copy pipeline's progress events and the engine's observer events. */
export type CliEvent = ProgressEvent | EngineEvent;

/** The line a `retry` event prints: `retrying (n/N): cause (what)`, n the retry, N the retries allowed. */
export function retryLine(e: Extract<EngineEvent, { type: 'retry' }>): string {
  // `attempt` is the 1-based attempt that failed, `maxAttempts` counts the first one: retry n of N = attempts - 1.
  const retries = Math.max(1, e.maxAttempts - 1);
  return `retrying (${e.attempt}/${retries}): ${e.reason} (${e.what}; in ${(e.delayMs / 1000).toFixed(1)}s)`;
}

interface Line {
  /** What the line is about: 12 hex digits of a blob or layer, or `commit`. */
  label: string;
  /** Total when known (blob size); 0 when unknown (a layer being applied, a commit). */
  size: number;
  bytes: number;
  /** The text after the label when no bar is drawn. */
  status: string;
  bar: boolean;
}

const BAR_WIDTH = 30;

/** The 12 hex digits docker shows for a digest. */
function short(digest: string): string {
  const i = digest.indexOf(':');
  return digest.slice(i + 1, i + 13);
}

/** Draws one line per blob, layer or commit, redrawn in place at most every 100 ms. */
class TtyProgress {
  private readonly lines: Line[] = [];
  private readonly byKey = new Map<string, Line>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly out: NodeJS.WritableStream) {}

  onEvent(e: CliEvent): void {
    switch (e.type) {
      case 'blob-start':
        Object.assign(this.line(e.digest, e.size), {
          status: e.kind === 'config' ? 'config' : 'waiting',
          bar: false,
        });
        break;
      case 'blob-progress':
        Object.assign(this.line(e.digest, e.size), { bytes: e.bytes, bar: true });
        break;
      case 'blob-done': {
        const status = {
          copied: 'done',
          exists: 'already exists',
          mounted: 'mounted',
          'skipped-foreign': 'skipped (foreign)',
        }[e.outcome];
        Object.assign(this.line(e.digest, e.size), {
          bytes: e.size,
          status: `${status} ${humanSize(e.size)}`,
          bar: false,
        });
        break;
      }
      case 'layer-apply':
        Object.assign(this.line(`apply:${e.layer}`, 0, short(e.layer)), {
          bytes: e.bytes,
          status: `${e.done ? 'applied' : 'applying'} layer ${e.index + 1}/${e.count}: ${humanSize(e.bytes)}, ${e.entries} entries`,
          bar: false,
        });
        break;
      case 'commit-progress':
        Object.assign(this.line('commit', 0, 'commit'), {
          bytes: e.bytes,
          status: `${e.done ? 'written' : 'writing'} layer: ${e.entries} entries, ${humanSize(e.bytes)}`,
          bar: false,
        });
        break;
      case 'build-step':
      case 'build-output': {
        const line = buildLine(e);
        if (line !== undefined) this.above(line.replace(/\n$/, ''));
        break;
      }
      case 'note':
        this.above(`note: ${e.message}`);
        return;
      case 'retry':
        this.above(retryLine(e));
        return;
      default:
        return;
    }
    this.timer ??= setTimeout(() => this.flush(), 100);
  }

  private line(key: string, size: number, label = short(key)): Line {
    let l = this.byKey.get(key);
    if (!l) {
      l = { label, size, bytes: 0, status: 'waiting', bar: false };
      this.byKey.set(key, l);
      this.lines.push(l);
    }
    return l;
  }

  /** Prints a message above the drawing (which is redrawn below it). */
  private above(message: string): void {
    this.flush();
    this.out.write(`${message}\n`);
    this.drawn = 0;
  }

  /** Redraws every line (cursor up over the previous drawing). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length === 0) return;
    let text = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const l of this.lines) {
      let body = l.status;
      if (l.bar) {
        const frac = l.size > 0 ? Math.min(1, l.bytes / l.size) : 1;
        const filled = Math.round(frac * BAR_WIDTH);
        body = `[${'='.repeat(Math.max(0, filled - 1))}>${' '.repeat(BAR_WIDTH - filled)}] ${humanSize(l.bytes)}/${humanSize(l.size)}`;
      }
      text += `\x1b[2K${l.label}: ${body}\n`;
    }
    this.drawn = this.lines.length;
    this.out.write(text);
  }

  /** Draws the final state and forgets the lines: the next verb's events start a new drawing. */
  finish(): void {
    this.flush();
    this.lines.length = 0;
    this.byKey.clear();
    this.drawn = 0;
  }
}

/** A progress renderer: `listener` takes every event, `finish` draws the final state before results print. */
export interface Progress {
  listener(event: CliEvent): void;
  finish(): void;
}

/**
 * A progress renderer for the chosen mode. `json` writes every event as one JSON line to `jsonOut` (standard
 * output, or standard error when standard output carries an archive).
 */
export function createProgress(
  mode: ProgressMode,
  stderr: NodeJS.WritableStream,
  jsonOut: NodeJS.WritableStream,
): Progress {
  if (mode === 'json')
    return { listener: (e) => void jsonOut.write(`${JSON.stringify(e)}\n`), finish: () => undefined };
  if (mode === 'tty') {
    const p = new TtyProgress(stderr);
    return { listener: (e) => p.onEvent(e), finish: () => p.finish() };
  }
  return {
    listener: (e) => {
      if (e.type === 'note') stderr.write(`note: ${e.message}\n`);
      else if (e.type === 'retry' && mode === 'plain') stderr.write(`${retryLine(e)}\n`);
      else if ((e.type === 'build-step' || e.type === 'build-output') && mode === 'plain') {
        const line = buildLine(e);
        if (line !== undefined) stderr.write(line.endsWith('\n') ? line : `${line}\n`);
      }
    },
    finish: () => undefined,
  };
}

/**
 * A build event as docker's plain progress shows it: `#3 [build 2/7] RUN make`, `#3 CACHED`, `#3 DONE 1.2s`, and a
 * RUN step's output with its step number in front of each line. Undefined for events that print nothing.
 */
export function buildLine(e: CliEvent): string | undefined {
  if (e.type === 'build-output') {
    const text = e.text.endsWith('\n') ? e.text.slice(0, -1) : e.text;
    return text
      .split('\n')
      .map((l) => `#${e.step} ${l}`)
      .join('\n');
  }
  if (e.type !== 'build-step') return undefined;
  const secs = e.durationMs !== undefined ? ` ${(e.durationMs / 1000).toFixed(1)}s` : '';
  switch (e.status) {
    case 'start':
      return `#${e.step} [${e.stage} ${e.step}/${e.total}] ${e.instruction}`;
    case 'cached':
      return `#${e.step} CACHED`;
    case 'done':
      return `#${e.step} DONE${secs}`;
    case 'error':
      return `#${e.step} ERROR${secs}`;
  }
}
