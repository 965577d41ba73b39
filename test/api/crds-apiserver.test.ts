/**
 * The CRDs against a real kube-apiserver (envtest v1.28): `crds/` applied and Established, `kubectl explain`
 * reading the descriptions, every example accepted (a local-only one refused, saying why) with the apiserver's defaults equal to the local
 * validator's, every bad case refused with a message naming the field and rule (schema and CEL alike), transition
 * rules, and the printer columns after a status written by the status helpers.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { JsonSchema } from '../../src/api/schema.js';
import { formatPath } from '../../src/api/validate.js';
import { crdName, KINDS, kindSchema, validateObject } from '../../src/api/v1alpha1/crd.js';
import { buildStatus } from '../../src/controllers/imagebuild/build-status.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { BAD_CASES, ROOT, strataExamples } from './crd-cases.js';

const DIGEST = `sha256:${'0123456789abcdef'.repeat(4)}`;

let cp: ControlPlane;

/** Retries `fn` until it stops throwing (the apiserver publishes a new CRD's OpenAPI a moment after it exists). */
async function eventually<T>(fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Every CEL rule's message in the CRDs. */
function ruleMessages(): Set<string> {
  const out = new Set<string>();
  const walk = (s: JsonSchema): void => {
    for (const r of s['x-kubernetes-validations'] ?? []) out.add(r.message);
    for (const p of Object.values(s.properties ?? {})) walk(p);
    if (s.items) walk(s.items);
    if (s.additionalProperties) walk(s.additionalProperties);
  };
  for (const def of KINDS) walk(kindSchema(def));
  return out;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Writes the example ImageBuild `hello`'s status through the status subresource, as the controller does. */
function patchHelloStatus(status: unknown): Promise<{ code: number; stdout: string; stderr: string }> {
  const patch = JSON.stringify({ status });
  return cp.kubectl(['patch', 'imagebuild', 'hello', '--subresource=status', '--type=merge', '-p', patch]);
}

beforeAll(async () => {
  cp = await startControlPlane();
  await cp.kubectlOk(['apply', '-f', `${ROOT}crds/`]);
  await cp.kubectlOk([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    ...KINDS.map((k) => `crd/${crdName(k)}`),
  ]);
  for (const ns of ['builds', 'strata-system']) await cp.kubectlOk(['create', 'namespace', ns]);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

describe('crds/ on a real kube-apiserver', () => {
  it('kubectl explain reads the descriptions', async () => {
    const output = await eventually(() => cp.kubectlOk(['explain', 'imagebuild.spec.output']));
    expect(output).toContain('The references the built image gets, and whether it is pushed.');
    expect(output).toMatch(/pushSecret\s+<Object>/);
    expect(output).toContain('nothing is pushed to Docker Hub by omission');
    const upstreams = await eventually(() => cp.kubectlOk(['explain', 'registrymirror.spec.upstreams']));
    expect(upstreams).toMatch(/credentialsSecretRef\s+<Object>/);
    const budget = await eventually(() => cp.kubectlOk(['explain', 'lc.spec.sizeBudget']));
    expect(budget).toContain('least recently used');
  });

  it('accepts every example, and its defaults are the local validator’s', async () => {
    const kinds = new Set<string>();
    const all = await strataExamples();
    const examples = all.filter((e) => !e.localOnly);
    // A local-only example (a dir context) is refused, saying why.
    for (const e of all.filter((x) => x.localOnly)) {
      const r = await cp.kubectl(['apply', '-f', `${ROOT}examples/${e.file}`]);
      expect(r.code, e.file).not.toBe(0);
      expect(r.stderr).toContain('a dir context is a directory of the machine running strata build');
    }
    expect(all.filter((e) => e.localOnly).map((e) => e.file)).toEqual(['imagebuild-hello.yaml']);
    for (const file of new Set(examples.map((e) => e.file)))
      await cp.kubectlOk(['apply', '-f', `${ROOT}examples/${file}`]);
    // The local example with the context a cluster takes (a ConfigMap) stands in for it below.
    const local = all.find((e) => e.localOnly)!;
    const clusterCopy = (await readFile(`${ROOT}examples/${local.file}`, 'utf8')).replace(
      /dir: hello\n/,
      'configMap:\n      name: hello\n',
    );
    await cp.kubectlOk(['apply', '-f', '-'], { input: clusterCopy });
    examples.push({ ...local, object: parse(clusterCopy) as typeof local.object, localOnly: false });
    for (const { file, def, object } of examples) {
      kinds.add(def.kind);
      const { name, namespace = 'default' } = object.metadata;
      const server = JSON.parse(
        await cp.kubectlOk(['get', `${def.plural}.strata.dev`, name, '-n', namespace, '-o', 'json']),
      ) as { spec: unknown };
      const local = validateObject(def, object);
      expect(local.issues).toEqual([]);
      expect(server.spec, `${file}: ${def.kind} ${name}`).toEqual(local.value.spec);
    }
    expect([...kinds].sort()).toEqual(['ImageBuild', 'LayerCache', 'RegistryMirror']);
    const hello = JSON.parse(await cp.kubectlOk(['get', 'ib', 'hello', '-o', 'json'])) as {
      spec: Record<string, unknown>;
    };
    expect(hello.spec).toMatchObject({
      dockerfile: { path: 'Dockerfile' },
      network: 'host',
      output: { push: false },
      backoffLimit: 0,
      successfulJobsHistoryLimit: 3,
      failedJobsHistoryLimit: 1,
    });
  }, 120_000);

  it.each(BAD_CASES.map((c) => [c.name, c] as const))(
    'refuses %s, naming the field and the rule',
    async (_name, c) => {
      const r = await cp.kubectl(['create', '-f', '-', '-o', 'name'], { input: JSON.stringify(c.object) });
      expect(r.code, r.stdout).not.toBe(0);
      for (const want of c.apiserver) expect(r.stderr).toContain(want);
      // Each local twin says what its CEL rule says, at the same path.
      const messages = ruleMessages();
      for (const issue of validateObject(c.kind, c.object).issues.filter((i) => messages.has(i.message)))
        expect(r.stderr).toMatch(
          new RegExp(`${escape(formatPath(issue.path))}: Invalid value: "\\w+": ${escape(issue.message)}`),
        );
    },
  );

  it('transition rules keep storageClassName and accessMode of a mirror’s claim', async () => {
    const patch = (p: unknown): Promise<{ code: number; stderr: string }> =>
      cp.kubectl([
        '-n',
        'strata-system',
        'patch',
        'rmirror',
        'docker-io',
        '--type=merge',
        '-p',
        JSON.stringify(p),
      ]);
    const changed = await patch({
      spec: { storage: { storageClassName: 'fast', accessMode: 'ReadWriteMany' } },
    });
    expect(changed.code).not.toBe(0);
    expect(changed.stderr).toContain(
      `spec.storage.storageClassName: Invalid value: "object": storageClassName is immutable`,
    );
    expect(changed.stderr).toContain(
      'spec.storage.accessMode: Invalid value: "string": accessMode is immutable',
    );
    const fine = await patch({ spec: { storage: { size: '60Gi' }, tagTTL: '15m' } });
    expect(fine.code, fine.stderr).toBe(0);
  });

  it('kubectl get shows Image, Ready and Digest from a status the helpers wrote', async () => {
    const before = await cp.kubectlOk(['get', 'imagebuilds']);
    expect(before.split('\n')[0]).toMatch(/^NAME\s+IMAGE\s+READY\s+DIGEST\s+AGE$/);
    const status = buildStatus(
      { digest: DIGEST, reference: 'localhost:5000/examples/hello:v1', steps: 3, cacheHits: 1 },
      { startedAt: new Date(Date.now() - 5000), finishedAt: new Date() },
      1,
      undefined,
      { jobName: 'hello-1' },
    );
    const written = await patchHelloStatus(status);
    expect(written.code, written.stderr).toBe(0);
    const rows = (await cp.kubectlOk(['get', 'imagebuilds'])).trim().split('\n');
    expect(rows.find((r) => r.startsWith('hello '))).toMatch(
      new RegExp(`^hello\\s+localhost:5000/examples/hello:v1\\s+True\\s+${DIGEST}\\s+\\S+$`),
    );
    const wide = await cp.kubectlOk(['get', 'ib', 'hello', '-o', 'wide']);
    expect(wide).toMatch(/PHASE\s+REASON/);
    expect(wide).toMatch(/Succeeded\s+BuildSucceeded/);
    // The category lists every kind.
    const all = await cp.kubectlOk(['get', 'strata', '-A', '-o', 'name']);
    expect(all).toContain('imagebuild.strata.dev/hello');
    expect(all).toContain('registrymirror.strata.dev/docker-io');
    expect(all).toContain('layercache.strata.dev/web');
  });

  it('refuses a status the schema does not allow', async () => {
    const r = await patchHelloStatus({ digest: 'sha256:nothex', phase: 'Done' });
    expect(r.code).not.toBe(0);
    // The status subresource's errors are relative to status.
    expect(r.stderr).toContain('digest: Invalid value: "sha256:nothex"');
    expect(r.stderr).toContain('phase: Unsupported value: "Done"');
  });
});
