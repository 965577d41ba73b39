import { describe, expect, it } from 'vitest';
import { ownerKeys } from '../../src/kube/controller.js';
import { setCondition, setPhaseConditions, type Condition } from '../../src/kube/conditions.js';
import { jsonEqual, mergePatch } from '../../src/kube/json.js';
import { ObjectStore } from '../../src/kube/store.js';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const T1 = T0 + 60_000;

describe('setCondition', () => {
  const ready = (status: Condition['status'], reason = 'R', message = 'm', observedGeneration = 1) => ({
    type: 'Ready',
    status,
    reason,
    message,
    observedGeneration,
  });

  it.each([
    ['a new condition is stamped now', undefined, ready('True'), T1, '2026-01-01T00:01:00Z'],
    [
      'the same status keeps the old time',
      [ready('True')],
      ready('True', 'Other', 'new message', 2),
      T0,
      '2026-01-01T00:00:00Z',
    ],
    ['a flip moves the time', [ready('True')], ready('False'), T1, '2026-01-01T00:01:00Z'],
    ['Unknown → True is a flip', [ready('Unknown')], ready('True'), T1, '2026-01-01T00:01:00Z'],
  ] as const)('%s', (_name, before, input, _unused, wantTime) => {
    const old = before?.map((c) => ({ ...c, lastTransitionTime: '2026-01-01T00:00:00Z' }));
    const out = setCondition(old, input, T1);
    expect(out).toHaveLength(1);
    expect(out[0]).toEqual({ ...input, lastTransitionTime: wantTime });
  });

  it('never mutates its input and keeps the order of other conditions', () => {
    const old: Condition[] = [
      { type: 'A', status: 'True', reason: 'x', message: '', lastTransitionTime: 't' },
      { type: 'Ready', status: 'False', reason: 'x', message: '', lastTransitionTime: 't' },
    ];
    const frozen = JSON.stringify(old);
    const out = setCondition(old, { type: 'Ready', status: 'True', reason: 'y', message: '' }, T1);
    expect(JSON.stringify(old)).toBe(frozen);
    expect(out.map((c) => c.type)).toEqual(['A', 'Ready']);
  });

  it('setPhaseConditions keeps Ready, Progressing and Failed consistent; a second identical pass changes nothing', () => {
    const detail = { reason: 'JobRunning', message: 'building', observedGeneration: 3 };
    const p = setPhaseConditions(undefined, 'Progressing', detail, T0);
    expect(p.map((c) => `${c.type}=${c.status}`)).toEqual([
      'Ready=False',
      'Progressing=True',
      'Failed=False',
    ]);
    expect(jsonEqual(setPhaseConditions(p, 'Progressing', detail, T1), p)).toBe(true);
    const r = setPhaseConditions(p, 'Ready', { ...detail, reason: 'Built' }, T1);
    const byType = Object.fromEntries(r.map((c) => [c.type, c]));
    expect(byType.Ready!.lastTransitionTime).toBe('2026-01-01T00:01:00Z');
    expect(byType.Progressing!.lastTransitionTime).toBe('2026-01-01T00:01:00Z');
    expect(byType.Failed!.lastTransitionTime).toBe('2026-01-01T00:00:00Z'); // stayed False
  });
});

describe('mergePatch', () => {
  it.each([
    ['equal values: nothing', { a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }, undefined],
    ['a changed member', { a: 1, b: 2 }, { a: 1, b: 3 }, { b: 3 }],
    ['a removed member is null', { a: 1, b: 2 }, { a: 1 }, { b: null }],
    ['nested objects are diffed', { s: { x: 1, y: 2 } }, { s: { x: 1, y: 5 } }, { s: { y: 5 } }],
    ['arrays are replaced whole', { l: [1, 2] }, { l: [1] }, { l: [1] }],
    ['from nothing', {}, { a: { b: 1 } }, { a: { b: 1 } }],
  ])('%s', (_name, from, to, want) => {
    expect(mergePatch(from, to)).toEqual(want);
  });
});

describe('ObjectStore', () => {
  const obj = (ns: string, name: string, rv: string, owner?: string) => ({
    metadata: {
      namespace: ns,
      name,
      resourceVersion: rv,
      ...(owner ? { ownerReferences: [{ apiVersion: 'v1', kind: 'X', name: 'o', uid: owner }] } : {}),
    },
  });

  it('indexes by namespace and owner, and a relist within one namespace reports only what changed there', () => {
    const s = new ObjectStore();
    s.upsert(obj('a', 'x', '1', 'u1'));
    s.upsert(obj('a', 'y', '1'));
    s.upsert(obj('b', 'z', '1', 'u1'));
    expect(
      s
        .byOwner('u1')
        .map((o) => o.metadata!.name)
        .sort(),
    ).toEqual(['x', 'z']);
    const change = s.replace([obj('a', 'x', '2'), obj('a', 'w', '1')], 'a');
    expect(change.added.map((o) => o.metadata!.name)).toEqual(['w']);
    expect(change.updated.map((u) => u.obj.metadata!.name)).toEqual(['x']);
    expect(change.deleted.map((o) => o.metadata!.name)).toEqual(['y']);
    expect(s.byOwner('u1').map((o) => o.metadata!.name)).toEqual(['z']); // x lost its owner reference
    expect(s.byNamespace('b')).toHaveLength(1);
    expect(s.keys().sort()).toEqual(['a/w', 'a/x', 'b/z']);
  });
});

describe('ownerKeys', () => {
  it('maps a child to the keys of its controlling owners of one kind, in its namespace', () => {
    const map = ownerKeys('strata.dev/v1alpha1', 'ImageBuild');
    const ref = (kind: string, name: string, controller: boolean, apiVersion = 'strata.dev/v1alpha1') => ({
      apiVersion,
      kind,
      name,
      uid: name,
      controller,
    });
    const child = {
      metadata: {
        namespace: 'ns',
        name: 'job',
        ownerReferences: [
          ref('ImageBuild', 'b1', true),
          ref('ImageBuild', 'b2', false),
          ref('Other', 'o', true),
          ref('ImageBuild', 'b3', true, 'strata.dev/v2'),
        ],
      },
    };
    expect(map(child)).toEqual(['ns/b1']);
    expect(map({ metadata: { name: 'orphan' } })).toEqual([]);
  });
});
