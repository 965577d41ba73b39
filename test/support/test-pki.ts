import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requirePeer } from './peers.js';

const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = strata-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
subjectAltName = IP:127.0.0.1
extendedKeyUsage = serverAuth
keyUsage = critical,digitalSignature
[client]
extendedKeyUsage = clientAuth
keyUsage = critical,digitalSignature
`;

/**
 * Makes a test PKI in `dir` with Debian's openssl: `ca.crt`/`ca.key`, a server certificate for 127.0.0.1
 * (`server.crt`/`server.key`) and a client certificate (`client.crt`/`client.key`), EC P-256, valid two days.
 */
export async function makeTestPki(dir: string): Promise<void> {
  const openssl = requirePeer('openssl');
  const f = (name: string): string => join(dir, name);
  await writeFile(f('openssl.cnf'), OPENSSL_CNF);
  const run = (args: string[]): void => void execFileSync(openssl, args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run([
    'req',
    '-x509',
    '-config',
    f('openssl.cnf'),
    '-extensions',
    'ca',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=strata-test-ca',
  ]);
  for (const [name, ext, serial] of [
    ['server', 'server', '2'],
    ['client', 'client', '3'],
  ] as const) {
    run([
      'req',
      '-new',
      '-config',
      f('openssl.cnf'),
      ...ec,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
      '-subj',
      name === 'server' ? '/CN=127.0.0.1' : '/CN=strata-client',
    ]);
    run([
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.crt'),
      '-CAkey',
      f('ca.key'),
      '-set_serial',
      serial,
      '-days',
      '2',
      '-extfile',
      f('openssl.cnf'),
      '-extensions',
      ext,
      '-out',
      f(`${name}.crt`),
    ]);
  }
}
