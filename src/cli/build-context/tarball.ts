import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { AbortedError, StrataError, TerminalError } from '../../engine/errors.js';

/** Options of {@link openTarball}. */
export interface TarballOptions {
  /** Directory relative paths are resolved against (the YAML file's). */
  readonly baseDir: string;
  readonly signal?: AbortSignal;
  /** Cap on the bytes read (compressed), default 1 GiB. */
  readonly maxBytes?: number;
  /** Whole-download timeout for URLs, default 5 minutes. */
  readonly timeoutMs?: number;
  /** Injectable for tests; defaults to the global fetch. */
  readonly fetch?: typeof fetch;
}

/** Counts bytes through; fails with SIZE_LIMIT past `max`. */
function byteCap(max: number, what: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) cb(new TerminalError('SIZE_LIMIT', `${what}: larger than the limit of ${max} bytes`));
      else cb(null, chunk);
    },
  });
}

/** The URL without user info, for messages (credentials are never logged). */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i, '$1***@');
}

/**
 * Opens `spec.context.tarball` as a byte stream: an http(s) URL is fetched (timeout, size cap from
 * Content-Length and while streaming, non-2xx refused), anything else is a local path resolved against
 * `baseDir`. The stream still has to be decompressed and extracted (see extractContextTar).
 */
export async function openTarball(
  tarball: string,
  options: TarballOptions,
): Promise<{ stream: Readable; what: string }> {
  const maxBytes = options.maxBytes ?? 1024 ** 3;
  if (/^https?:\/\//i.test(tarball)) {
    const what = `tarball ${redactUrl(tarball)}`;
    const timeoutMs = options.timeoutMs ?? 5 * 60_000;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await (options.fetch ?? fetch)(tarball, { signal, redirect: 'follow' });
    } catch (err) {
      if (options.signal?.aborted) throw new AbortedError(`${what}: aborted`, options.signal.reason);
      if (timeout.aborted)
        throw new StrataError('NETWORK', `${what}: no answer within ${timeoutMs} ms`, {
          retryable: true,
          cause: err,
        });
      throw new StrataError('NETWORK', `${what}: ${(err as Error).message}`, { retryable: true, cause: err });
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      const retryable = res.status >= 500 || res.status === 429;
      throw new StrataError(retryable ? 'NETWORK' : 'BUILD_CONTEXT_INVALID', `${what}: HTTP ${res.status}`, {
        retryable,
        detail: { status: res.status },
      });
    }
    const length = Number(res.headers.get('content-length') ?? NaN);
    if (Number.isFinite(length) && length > maxBytes) {
      await res.body.cancel();
      throw new TerminalError(
        'SIZE_LIMIT',
        `${what}: ${length} bytes, larger than the limit of ${maxBytes} bytes`,
      );
    }
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    const capped = byteCap(maxBytes, what);
    body.on('error', (err) =>
      capped.destroy(
        timeout.aborted
          ? new StrataError('NETWORK', `${what}: download took longer than ${timeoutMs} ms`, {
              retryable: true,
              cause: err,
            })
          : err,
      ),
    );
    capped.on('close', () => body.destroy());
    return { stream: body.pipe(capped), what };
  }
  const path = resolve(options.baseDir, tarball);
  const what = `tarball ${path}`;
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new TerminalError('BUILD_CONTEXT_INVALID', `${what}: no such file`);
  if (st.size > maxBytes)
    throw new TerminalError(
      'SIZE_LIMIT',
      `${what}: ${st.size} bytes, larger than the limit of ${maxBytes} bytes`,
    );
  const file = createReadStream(path);
  const capped = byteCap(maxBytes, what);
  file.on('error', (err) => capped.destroy(err));
  capped.on('close', () => file.destroy());
  return { stream: file.pipe(capped), what };
}
