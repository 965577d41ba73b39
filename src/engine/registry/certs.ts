/**
 * Per-registry TLS material from certs.d directories, the convention of docker and containers/image:
 * `<dir>/<host[:port]>/*.crt` are extra CA certificates, `<dir>/<host[:port]>/NAME.cert` with `NAME.key` a client
 * certificate. Key material is only ever handed to the TLS layer, never put in messages.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../errors.js';
import type { TlsSettings } from './http.js';

/** Where certs.d directories are looked for when none are configured (containers' first, then docker's). */
export const DEFAULT_CERTS_DIRS: readonly string[] = ['/etc/containers/certs.d', '/etc/docker/certs.d'];

/** What a registry host's certs.d directory holds: PEM CA certificates and at most one client certificate. */
export interface RegistryCerts {
  /** The directory read (`<dir>/<host>`). */
  readonly dir: string;
  readonly ca: readonly string[];
  readonly clientCert?: { readonly cert: string; readonly key: string };
}

function isMissing(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Reads `<dir>/<host>` from the first of `dirs` that has it (like containers/image); undefined when none does.
 * `host` is `host` or `host:port` as in the registry's URL. A `.cert` without its `.key` is an error.
 */
export async function readRegistryCerts(
  dirs: readonly string[],
  host: string,
): Promise<RegistryCerts | undefined> {
  if (!host || host.includes('/') || host === '.' || host === '..') return undefined;
  for (const base of dirs) {
    const dir = join(base, host);
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch (err) {
      if (isMissing(err)) continue;
      throw new TerminalError('INVALID_ARGUMENT', `registry ${host}: cannot read ${dir}: ${String(err)}`, {
        cause: err,
      });
    }
    const read = async (name: string): Promise<string> => {
      try {
        return await readFile(join(dir, name), 'utf8');
      } catch (err) {
        throw new TerminalError('INVALID_ARGUMENT', `registry ${host}: cannot read ${join(dir, name)}`, {
          cause: err,
        });
      }
    };
    const ca: string[] = [];
    let clientCert: { cert: string; key: string } | undefined;
    for (const name of names) {
      if (name.endsWith('.crt')) ca.push(await read(name));
      else if (name.endsWith('.cert') && clientCert === undefined) {
        const keyName = `${name.slice(0, -'.cert'.length)}.key`;
        if (!names.includes(keyName)) {
          throw new TerminalError(
            'INVALID_ARGUMENT',
            `registry ${host}: client certificate ${join(dir, name)} has no matching key ${join(dir, keyName)}`,
          );
        }
        clientCert = { cert: await read(name), key: await read(keyName) };
      }
    }
    return clientCert ? { dir, ca, clientCert } : { dir, ca };
  }
  return undefined;
}

/**
 * The TLS settings for a registry host: Node's root CAs plus the certs.d CAs, the client certificate, and no
 * verification when `insecure`. Undefined when Node's defaults apply.
 */
export async function tlsSettingsFor(
  dirs: readonly string[],
  host: string,
  insecure: boolean,
): Promise<TlsSettings | undefined> {
  const certs = await readRegistryCerts(dirs, host);
  const extraCa = certs?.ca ?? [];
  const rootCertificates = extraCa.length > 0 ? (await import('node:tls')).rootCertificates : [];
  const settings: TlsSettings = {
    ...(extraCa.length > 0 ? { ca: [...rootCertificates, ...extraCa] } : {}),
    ...(certs?.clientCert ? { cert: certs.clientCert.cert, key: certs.clientCert.key } : {}),
    ...(insecure ? { rejectUnauthorized: false } : {}),
  };
  return Object.keys(settings).length > 0 ? settings : undefined;
}
