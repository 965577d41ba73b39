import { makeCa, signCert } from './openssl.js';

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
  await makeCa(dir, OPENSSL_CNF, '/CN=strata-test-ca', 'ec');
  await signCert(dir, { name: 'server', subject: '/CN=127.0.0.1', ext: 'server', serial: 2, key: 'ec' });
  await signCert(dir, { name: 'client', subject: '/CN=strata-client', ext: 'client', serial: 3, key: 'ec' });
}
