/** The admin's build policy: what it refuses, and the `--build-*` flag values it reads (pure). */
import { describe, expect, it } from 'vitest';
import {
  buildPolicy,
  DEFAULT_BUILD_POLICY,
  parseToleration,
  refusalOf,
} from '../../../src/controllers/imagebuild/policy.js';
import { SPEC_ENV_MAX_BYTES } from '../../../src/api/v1alpha1/spec-env.js';
import { clusterImageBuild } from './fixtures.js';

const GIT = `  context:\n    git:\n      url: https://example.com/app.git\n  output:\n    images: [registry.example:5000/app:v1]\n`;
const POLICY = buildPolicy({
  nodeSelector: ['strata.dev/pool=builds'],
  tolerations: ['strata.dev/builds=true:NoSchedule'],
  serviceAccounts: ['builder'],
  networks: ['none'],
});

describe('refusalOf', () => {
  it('allows a spec within the policy, and anything the default allows', () => {
    const ok = clusterImageBuild(
      `${GIT}  network: none\n  nodeSelector:\n    strata.dev/pool: builds\n    zone: a\n`,
    );
    expect(refusalOf(ok, POLICY, 100)).toBeUndefined();
    expect(refusalOf(clusterImageBuild(GIT), DEFAULT_BUILD_POLICY, 100)).toBeUndefined();
  });

  it.each([
    [
      'a node selector that moves builds off the pool',
      `${GIT}  network: none\n  nodeSelector:\n    strata.dev/pool: web\n`,
      'spec.nodeSelector.strata.dev/pool: builds run where strata.dev/pool=builds',
    ],
    [
      'a ServiceAccount the admin did not list',
      `${GIT}  network: none\n  serviceAccountName: deployer\n`,
      'spec.serviceAccountName: deployer is not a ServiceAccount builds may run as (allowed: builder)',
    ],
    [
      'a RUN network the admin does not allow',
      `${GIT}  network: host\n`,
      'spec.network: host is not allowed here (--build-network allows none)',
    ],
  ])('refuses %s (PolicyViolation, naming the field)', (_what, spec, message) => {
    const r = refusalOf(clusterImageBuild(spec), POLICY, 100);
    expect(r?.reason).toBe('PolicyViolation');
    expect(r?.message).toContain(message);
  });

  it('refuses a deadline longer than --build-max-duration; a shorter one, or none, is fine', () => {
    const capped = buildPolicy({ maxDuration: '2h' });
    expect(capped.maxDurationSeconds).toBe(7200);
    expect(refusalOf(clusterImageBuild(`${GIT}  activeDeadlineSeconds: 600\n`), capped, 1)).toBeUndefined();
    expect(refusalOf(clusterImageBuild(GIT), capped, 1)).toBeUndefined();
    const r = refusalOf(clusterImageBuild(`${GIT}  activeDeadlineSeconds: 86400\n`), capped, 1);
    expect(r?.message).toContain('spec.activeDeadlineSeconds: 86400 is more than builds may run here');
  });

  it('refuses any serviceAccountName when the admin allows none', () => {
    const r = refusalOf(clusterImageBuild(`${GIT}  serviceAccountName: default\n`), DEFAULT_BUILD_POLICY, 1);
    expect(r).toEqual({
      reason: 'PolicyViolation',
      message: expect.stringContaining('the controller allows none: see --build-service-account') as string,
    });
  });

  it.each([
    [
      'a dir context',
      `  context:\n    dir: /var/run/secrets/kubernetes.io/serviceaccount\n`,
      'spec.context.dir:',
    ],
    ['a local tarball', `  context:\n    tarball: /etc/shadow.tar\n`, 'spec.context.tarball:'],
    [
      'a file:// repository',
      `  context:\n    git:\n      url: file:///var/run/strata/docker\n`,
      'spec.context.git.url:',
    ],
  ])('refuses %s as InvalidSpec whatever the policy', (_what, context, field) => {
    const ib = clusterImageBuild(`${context}  output:\n    images: [app:v1]\n`);
    expect(refusalOf(ib, DEFAULT_BUILD_POLICY, 1)).toEqual({
      reason: 'InvalidSpec',
      message: expect.stringContaining(field) as string,
    });
  });

  it('refuses a spec larger than a pod environment carries', () => {
    const r = refusalOf(clusterImageBuild(GIT), DEFAULT_BUILD_POLICY, SPEC_ENV_MAX_BYTES + 1);
    expect(r?.reason).toBe('InvalidSpec');
    expect(r?.message).toMatch(/more than a build pod's environment carries.*dockerfile\.path/);
  });
});

describe('the --build-* flags', () => {
  it.each([
    [
      'key=value:Effect',
      'pool=builds:NoSchedule',
      { key: 'pool', operator: 'Equal', value: 'builds', effect: 'NoSchedule' },
    ],
    [
      'key:Effect',
      'strata.dev/builds:NoExecute',
      { key: 'strata.dev/builds', operator: 'Exists', effect: 'NoExecute' },
    ],
    ['key alone (every effect)', 'dedicated', { key: 'dedicated', operator: 'Exists' }],
    ['key= (empty value)', 'dedicated=', { key: 'dedicated', operator: 'Equal', value: '' }],
  ])('a toleration as %s', (_what, text, want) => {
    expect(parseToleration(text)).toEqual(want);
  });

  it.each([
    [{ tolerations: ['pool=builds:Sometimes'] }, 'invalid --build-toleration: "pool=builds:Sometimes"'],
    [{ nodeSelector: ['pool'] }, 'invalid --build-node-selector: "pool" is not key=value'],
    [
      { serviceAccounts: ['Builder!'] },
      'invalid --build-service-account: "Builder!" is not a ServiceAccount name',
    ],
    [{ networks: ['bridge'] }, 'invalid --build-network: "bridge" is not host or none'],
    [{ maxDuration: 'forever' }, 'invalid --build-max-duration: "forever" is not a duration like 30m or 2h'],
  ])('refuses %j, naming the flag', (flags, message) => {
    expect(() => buildPolicy(flags)).toThrow(message);
  });

  it('without flags: the default policy', () => {
    expect(buildPolicy({})).toEqual(DEFAULT_BUILD_POLICY);
  });
});
