/**
 * The openssl steps every test PKI takes, with Debian's openssl in one directory: an `openssl.cnf` whose sections
 * (`ca`, `server`, `client`) are the certificates' extensions, a self-signed CA (`ca.crt`/`ca.key`) and
 * certificates it signs. Everything is valid two days.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requirePeer } from './peers.js';

const run = promisify(execFile);

/** A new unencrypted key: EC P-256, or RSA 2048. */
export type KeyKind = 'ec' | 'rsa';

const NEW_KEY: Record<KeyKind, readonly string[]> = {
  ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
  rsa: ['-newkey', 'rsa:2048', '-nodes'],
};

/** Runs openssl with `args` in `dir` (a missing openssl fails the test). */
export async function openssl(dir: string, args: readonly string[]): Promise<void> {
  await run(requirePeer('openssl'), args, { cwd: dir });
}

/** Writes `config` as `dir/openssl.cnf` and a self-signed CA `ca.crt`/`ca.key` (its `ca` section) with `subject`. */
export async function makeCa(dir: string, config: string, subject: string, key: KeyKind): Promise<void> {
  const f = (n: string): string => join(dir, n);
  await writeFile(f('openssl.cnf'), config);
  await openssl(dir, [
    'req',
    '-x509',
    '-config',
    f('openssl.cnf'),
    '-extensions',
    'ca',
    ...NEW_KEY[key],
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.crt'),
    '-days',
    '2',
    '-subj',
    subject,
  ]);
}

/** A certificate the CA of {@link makeCa} signs. */
export interface CertRequest {
  /** Files `<name>.key`, `<name>.csr` and `<name>.crt` are written. */
  readonly name: string;
  /** The distinguished name, as openssl's `-subj` takes it (`/CN=…/O=…`). */
  readonly subject: string;
  /** The `openssl.cnf` section of its extensions. */
  readonly ext: 'server' | 'client';
  readonly serial: number;
  readonly key: KeyKind;
}

/** Makes a key and a certificate signed by the CA in `dir` (see {@link CertRequest}). */
export async function signCert(dir: string, cert: CertRequest): Promise<void> {
  const f = (n: string): string => join(dir, n);
  const { name } = cert;
  await openssl(dir, [
    'req',
    '-new',
    '-config',
    f('openssl.cnf'),
    ...NEW_KEY[cert.key],
    '-keyout',
    f(`${name}.key`),
    '-out',
    f(`${name}.csr`),
    '-subj',
    cert.subject,
  ]);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    f(`${name}.csr`),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-set_serial',
    String(cert.serial),
    '-days',
    '2',
    '-extfile',
    f('openssl.cnf'),
    '-extensions',
    cert.ext,
    '-out',
    f(`${name}.crt`),
  ]);
}
