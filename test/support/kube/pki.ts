/**
 * The certificates and keys a throwaway control plane needs, made with Debian's openssl: a CA, a serving
 * certificate for 127.0.0.1/localhost, the service-account RSA key pair, and client certificates on demand (the
 * identity of an RBAC test: CN is the user, O the groups).
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requirePeer } from '../peers.js';

const run = promisify(execFile);

const CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = strata-envtest
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
subjectAltName = IP:127.0.0.1,DNS:localhost
extendedKeyUsage = serverAuth
keyUsage = critical,digitalSignature,keyEncipherment
[client]
extendedKeyUsage = clientAuth
keyUsage = critical,digitalSignature,keyEncipherment
`;

/** Paths of the control plane's PKI files. */
export interface ControlPlanePki {
  readonly caCert: string;
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly saKey: string;
  readonly saPub: string;
}

let serial = 100;

async function openssl(dir: string, args: string[]): Promise<void> {
  await run(requirePeer('openssl'), args, { cwd: dir });
}

async function signed(dir: string, name: string, subject: string, ext: 'server' | 'client'): Promise<void> {
  const f = (n: string): string => join(dir, n);
  await openssl(
    dir,
    ['req', '-new', '-config', f('openssl.cnf'), '-newkey', 'rsa:2048', '-nodes'].concat([
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
      '-subj',
      subject,
    ]),
  );
  await openssl(
    dir,
    ['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key')]
      .concat([
        '-set_serial',
        String(serial++),
        '-days',
        '2',
        '-extfile',
        f('openssl.cnf'),
        '-extensions',
        ext,
      ])
      .concat(['-out', f(`${name}.crt`)]),
  );
}

/** Writes the CA, the serving certificate and the service-account keys into `dir`. */
export async function makeControlPlanePki(dir: string): Promise<ControlPlanePki> {
  const f = (n: string): string => join(dir, n);
  await writeFile(f('openssl.cnf'), CNF);
  await openssl(
    dir,
    ['req', '-x509', '-config', f('openssl.cnf'), '-extensions', 'ca', '-newkey', 'rsa:2048'].concat([
      '-nodes',
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.crt'),
      '-days',
      '2',
      '-subj',
      '/CN=strata-envtest-ca',
    ]),
  );
  await signed(dir, 'serving', '/CN=127.0.0.1', 'server');
  await openssl(dir, ['genrsa', '-out', f('sa.key'), '2048']);
  await openssl(dir, ['rsa', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub')]);
  return {
    caCert: f('ca.crt'),
    caKey: f('ca.key'),
    servingCert: f('serving.crt'),
    servingKey: f('serving.key'),
    saKey: f('sa.key'),
    saPub: f('sa.pub'),
  };
}

/** A client certificate for `user` in `groups`, signed by the control plane's CA; returns its cert and key paths. */
export async function makeClientCert(
  dir: string,
  user: string,
  groups: readonly string[],
): Promise<{ cert: string; key: string }> {
  const name = `client-${serial}`;
  const subject = `/CN=${user}${groups.map((g) => `/O=${g}`).join('')}`;
  await signed(dir, name, subject, 'client');
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}
