/** RBAC checks as an identity: `kubectl auth can-i` (a SelfSubjectAccessReview) for every verb of a rule set. */
import type { V1PolicyRule } from '@kubernetes/client-node';
import { expect } from 'vitest';
import type { ControlPlane } from './control-plane.js';

/** The answers of `kubectl auth can-i` as `kubeconfig`'s identity, one `"<check>: yes|no"` line per check. */
export async function canI(
  cp: Pick<ControlPlane, 'kubectl'>,
  kubeconfig: string,
  checks: readonly (readonly string[])[],
): Promise<string[]> {
  const answers = [];
  for (const check of checks) {
    const r = await cp.kubectl(['auth', 'can-i', ...check], { kubeconfig });
    answers.push(`${check.join(' ')}: ${r.stdout.trim() || r.stderr.trim()}`);
  }
  return answers;
}

/** `kubectl auth can-i` arguments for every verb of every rule, at cluster scope (or in `namespace`). */
export function ruleChecks(rules: readonly V1PolicyRule[], namespace?: string): string[][] {
  const scope = namespace ? ['-n', namespace] : ['--all-namespaces'];
  return rules.flatMap((rule) =>
    rule.resources!.flatMap((resource) => {
      const [plural, sub] = resource.split('/');
      const group = rule.apiGroups![0];
      const qualified = group ? `${plural}.${group}` : plural!;
      return rule.verbs.map((verb) => [verb, qualified, ...(sub ? [`--subresource=${sub}`] : []), ...scope]);
    }),
  );
}

/** Expects `kubectl auth can-i` as `kubeconfig` to say yes to every check of `allowed` and no to every one of `denied`. */
export async function expectCanExactly(
  cp: Pick<ControlPlane, 'kubectl'>,
  kubeconfig: string,
  allowed: readonly (readonly string[])[],
  denied: readonly (readonly string[])[],
): Promise<void> {
  expect(await canI(cp, kubeconfig, allowed)).toEqual(allowed.map((c) => `${c.join(' ')}: yes`));
  expect((await canI(cp, kubeconfig, denied)).filter((a) => !a.endsWith(': no'))).toEqual([]);
}
