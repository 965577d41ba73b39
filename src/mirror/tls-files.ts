/**
 * The listener's TLS certificate and key, from PEM files that may be replaced while the server runs (a mounted
 * Kubernetes Secret renewed by cert-manager swaps a symlink): re-stat'ed every `recheckMs` and, when either file's
 * identity, size or mtime changed, re-read and installed for new connections. A pair that fails to load is logged
 * and the previous one kept; at start it is a configuration error.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Server as HttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import { TerminalError } from '../engine/errors.js';

/** Where the listener's certificate chain and key are. */
export interface TlsFiles {
  /** PEM certificate chain (leaf first). */
  readonly certFile: string;
  /** PEM private key of the leaf. */
  readonly keyFile: string;
}

/** Reads the pair; INVALID_ARGUMENT naming the file that cannot be read. */
export async function loadTlsFiles(files: TlsFiles): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (path: string, what: string): Promise<Buffer> =>
    readFile(path).catch((err: unknown) => {
      throw new TerminalError('INVALID_ARGUMENT', `TLS ${what} ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    });
  const [cert, key] = await Promise.all([read(files.certFile, 'certificate'), read(files.keyFile, 'key')]);
  return { cert, key };
}

/** Identity, size and mtime of both files ('' parts for a file that cannot be stat'ed). */
async function stamp(files: TlsFiles): Promise<string> {
  const one = async (p: string): Promise<string> => {
    const st = await stat(p).catch(() => undefined);
    return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` : '';
  };
  return `${await one(files.certFile)}|${await one(files.keyFile)}`;
}

/**
 * Watches the pair and installs a changed one on `server` (`setSecureContext`); returns a stop function.
 * `onReload` hears each outcome (`undefined`: installed).
 */
export async function watchTlsFiles(
  server: HttpsServer,
  files: TlsFiles,
  options: { recheckMs?: number; onReload?: (err: unknown) => void } = {},
): Promise<() => void> {
  let last = await stamp(files);
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      const now = await stamp(files);
      if (now === last) return;
      try {
        const pair: SecureContextOptions = await loadTlsFiles(files);
        server.setSecureContext(pair); // throws on a key that does not match the certificate
        last = now;
        options.onReload?.(undefined);
      } catch (err) {
        last = now; // reported once per change, not every tick
        options.onReload?.(err);
      }
    })().finally(() => (busy = false));
  }, options.recheckMs ?? 10_000);
  timer.unref();
  return () => clearInterval(timer);
}
