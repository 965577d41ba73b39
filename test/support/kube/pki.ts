/**
 * The certificates and keys a throwaway control plane needs, made with Debian's openssl: a CA, a serving
 * certificate for 127.0.0.1/localhost, the service-account RSA key pair, and client certificates on demand (the
 * identity of an RBAC test: CN is the user, O the groups).
 */
import { join } from 'node:path';
import { makeCa, openssl, signCert } from '../openssl.js';

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

/** Writes the CA, the serving certificate and the service-account keys into `dir`. */
export async function makeControlPlanePki(dir: string): Promise<ControlPlanePki> {
  const f = (n: string): string => join(dir, n);
  await makeCa(dir, CNF, '/CN=strata-envtest-ca', 'rsa');
  await signCert(dir, {
    name: 'serving',
    subject: '/CN=127.0.0.1',
    ext: 'server',
    serial: serial++,
    key: 'rsa',
  });
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
  await signCert(dir, { name, subject, ext: 'client', serial: serial++, key: 'rsa' });
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}
