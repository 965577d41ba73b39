/** Node selection: nodeSelector, taints against tolerations, required node affinity, as a DaemonSet pod is scheduled. */
import { describe, expect, it } from 'vitest';
import {
  cacheNodes,
  fitsNode,
  matchesRequiredTerms,
  mirrorNodes,
  nodeEssentials,
  tolerates,
  toleratesTaints,
  type PlacementConstraints,
} from '../../../src/controllers/stratanode/selection.js';
import { node } from './fixtures.js';

const gpu = node('gpu-1', { pool: 'gpu', zone: 'a', cores: '64' }, [
  { key: 'gpu', value: 'true', effect: 'NoSchedule' },
]);
const web = node('web-1', { pool: 'web', zone: 'b', cores: '8' });
const drain = node('web-2', { pool: 'web', zone: 'a' }, [{ key: 'drain', effect: 'NoExecute' }]);
const soft = node('web-3', { pool: 'web' }, [{ key: 'soft', effect: 'PreferNoSchedule' }]);
const ALL = [gpu, web, drain, soft];
const names = (ns: { metadata: { name: string } }[]) => ns.map((n) => n.metadata.name);

describe('tolerations against taints', () => {
  it.each([
    ['Equal matches key and value', { key: 'gpu', value: 'true' }, true],
    ['Equal with another value', { key: 'gpu', value: 'false' }, false],
    ['Exists matches the key', { key: 'gpu', operator: 'Exists' }, true],
    ['empty key with Exists matches every taint', { operator: 'Exists' }, true],
    ['the effect must match when given', { key: 'gpu', operator: 'Exists', effect: 'NoExecute' }, false],
    ['the same effect', { key: 'gpu', operator: 'Exists', effect: 'NoSchedule' }, true],
  ])('%s', (_what, t, want) => {
    expect(tolerates(t, { key: 'gpu', value: 'true', effect: 'NoSchedule' })).toBe(want);
  });

  it('PreferNoSchedule never excludes; NoSchedule and NoExecute must be tolerated', () => {
    expect(toleratesTaints([], soft.spec!.taints)).toBe(true);
    expect(toleratesTaints([], gpu.spec!.taints)).toBe(false);
    expect(toleratesTaints([], drain.spec!.taints)).toBe(false);
  });
});

describe('which nodes', () => {
  it('a RegistryMirror: its nodeSelector only (runtimes on tainted nodes are configured too)', () => {
    expect(names(mirrorNodes({}, ALL))).toEqual(['gpu-1', 'web-1', 'web-2', 'web-3']);
    expect(names(mirrorNodes({ nodeSelector: { pool: 'web' } }, ALL))).toEqual(['web-1', 'web-2', 'web-3']);
    expect(names(mirrorNodes({ nodeSelector: {}, configureNodes: false }, ALL))).toEqual([]);
  });

  it('a LayerCache: nodeSelector and tolerations, as a DaemonSet pod', () => {
    expect(names(cacheNodes({}, ALL))).toEqual(['web-1', 'web-3']);
    expect(names(cacheNodes({ tolerations: [{ operator: 'Exists' }] }, ALL))).toEqual([
      'gpu-1',
      'web-1',
      'web-2',
      'web-3',
    ]);
    expect(
      names(
        cacheNodes({ nodeSelector: { pool: 'gpu' }, tolerations: [{ key: 'gpu', operator: 'Exists' }] }, ALL),
      ),
    ).toEqual(['gpu-1']);
  });

  it.each<[string, PlacementConstraints, string[]]>([
    ['no constraints: the untainted nodes', {}, ['web-1', 'web-3']],
    ['a nodeSelector', { nodeSelector: { zone: 'b' } }, ['web-1']],
    [
      'In',
      { requiredTerms: [{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['web'] }] }] },
      ['web-1', 'web-3'],
    ],
    [
      'NotIn (an absent label passes)',
      { requiredTerms: [{ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['b'] }] }] },
      ['web-3'],
    ],
    [
      'DoesNotExist',
      { requiredTerms: [{ matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }] },
      ['web-3'],
    ],
    [
      'Gt on an integer label',
      {
        tolerations: [{ operator: 'Exists' }],
        requiredTerms: [{ matchExpressions: [{ key: 'cores', operator: 'Gt', values: ['16'] }] }],
      },
      ['gpu-1'],
    ],
    [
      'terms are ORed',
      {
        requiredTerms: [
          { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] },
          {
            matchExpressions: [
              { key: 'pool', operator: 'Exists' },
              { key: 'zone', operator: 'DoesNotExist' },
            ],
          },
        ],
      },
      ['web-1', 'web-3'],
    ],
    [
      'matchFields on metadata.name',
      { requiredTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['web-3'] }] }] },
      ['web-3'],
    ],
    ['an empty term matches nothing', { requiredTerms: [{}] }, []],
    [
      'an unknown operator matches nothing',
      { requiredTerms: [{ matchExpressions: [{ key: 'pool', operator: 'Near' }] }] },
      [],
    ],
  ])('a pod template: %s', (_what, c, want) => {
    expect(names(ALL.filter((n) => fitsNode(c, n)))).toEqual(want);
  });

  it('no required terms: any node', () => {
    expect(matchesRequiredTerms(undefined, gpu)).toBe(true);
    expect(matchesRequiredTerms([], gpu)).toBe(true);
  });
});

describe('the Node informer transform', () => {
  it('keeps labels, taints and identity; drops status and the rest of the spec', () => {
    const full = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: 'n',
        uid: 'u',
        resourceVersion: '9',
        labels: { a: 'b' },
        annotations: { big: 'x'.repeat(1000) },
      },
      spec: {
        podCIDR: '10.0.0.0/24',
        taints: [{ key: 'k', value: 'v', effect: 'NoSchedule', timeAdded: 'now' }],
      },
      status: { images: [{ names: ['x'], sizeBytes: 1 }] },
    };
    expect(nodeEssentials(full as never)).toEqual({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'n', uid: 'u', resourceVersion: '9', labels: { a: 'b' } },
      spec: { taints: [{ key: 'k', value: 'v', effect: 'NoSchedule' }] },
    });
  });
});
