import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/kube/backoff.js';
import { WorkQueue } from '../../src/kube/queue.js';
import { FakeClock } from '../support/kube/fake-clock.js';

/** Takes every ready key without waiting (the queue resolves synchronously-ready keys at once). */
async function drainReady(q: WorkQueue): Promise<string[]> {
  const out: string[] = [];
  while (q.length > 0) out.push((await q.get())!);
  return out;
}

describe('WorkQueue', () => {
  type Step =
    | ['add', string]
    | ['addAfter', string, number]
    | ['rateLimited', string]
    | ['forget', string]
    | ['get', string]
    | ['done', string]
    | ['advance', number]
    | ['ready', string[]];
  const cases: { name: string; steps: Step[] }[] = [
    {
      name: 'de-duplicates keys added before a worker takes them',
      steps: [
        ['add', 'a'],
        ['add', 'b'],
        ['add', 'a'],
        ['ready', ['a', 'b']],
      ],
    },
    {
      name: 'a key added while processing is not handed out again until done, then re-run once',
      steps: [
        ['add', 'a'],
        ['get', 'a'],
        ['add', 'a'],
        ['add', 'a'],
        ['ready', []],
        ['done', 'a'],
        ['ready', ['a']],
      ],
    },
    {
      name: 'a key done without a new add is gone',
      steps: [
        ['add', 'a'],
        ['get', 'a'],
        ['done', 'a'],
        ['ready', []],
      ],
    },
    {
      name: 'addAfter waits for the clock; the earliest of two delays wins',
      steps: [
        ['addAfter', 'a', 1000],
        ['addAfter', 'a', 300],
        ['addAfter', 'a', 2000],
        ['advance', 299],
        ['ready', []],
        ['advance', 1],
        ['ready', ['a']],
        ['advance', 5000],
        ['ready', []],
      ],
    },
    {
      name: 'addAfter of a key already queued does not queue it twice',
      steps: [
        ['add', 'a'],
        ['addAfter', 'a', 10],
        ['advance', 10],
        ['ready', ['a']],
      ],
    },
    {
      name: 'per-key backoff doubles (5, 10, 20 ms) and forget resets it; keys back off independently',
      steps: [
        ['rateLimited', 'a'],
        ['advance', 4],
        ['ready', []],
        ['advance', 1],
        ['ready', ['a']],
        ['rateLimited', 'a'],
        ['rateLimited', 'b'],
        ['advance', 5],
        ['ready', ['b']],
        ['advance', 5],
        ['ready', ['a']],
        ['rateLimited', 'a'],
        ['advance', 19],
        ['ready', []],
        ['advance', 1],
        ['ready', ['a']],
        ['forget', 'a'],
        ['rateLimited', 'a'],
        ['advance', 5],
        ['ready', ['a']],
      ],
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const clock = new FakeClock();
      const q = new WorkQueue({ clock });
      for (const step of c.steps) {
        switch (step[0]) {
          case 'add':
            q.add(step[1]);
            break;
          case 'addAfter':
            q.addAfter(step[1], step[2]);
            break;
          case 'rateLimited':
            q.addRateLimited(step[1]);
            break;
          case 'forget':
            q.forget(step[1]);
            break;
          case 'get':
            expect(await q.get()).toBe(step[1]);
            break;
          case 'done':
            q.done(step[1]);
            break;
          case 'advance':
            clock.advance(step[1]);
            break;
          case 'ready': {
            const got = await drainReady(q);
            for (const k of got) q.done(k);
            expect(got).toEqual(step[1]);
            break;
          }
        }
      }
    });
  }

  it('hands a key to a waiting worker as soon as it is added, and reports how long it waited', async () => {
    const clock = new FakeClock();
    const latencies: number[] = [];
    const q = new WorkQueue({ clock, onLatency: (ms) => latencies.push(ms) });
    const waiting = q.get();
    q.addAfter('x', 50);
    clock.advance(50);
    expect(await waiting).toBe('x');
    q.add('y');
    clock.advance(7);
    expect(await q.get()).toBe('y');
    expect(latencies).toEqual([0, 7]);
  });

  it('never gives one key to two workers at once', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('k');
    const first = await q.get();
    const second = q.get();
    q.add('k');
    let got: string | undefined;
    second.then((k) => (got = k));
    await Promise.resolve();
    expect(got).toBeUndefined();
    q.done(first!);
    expect(await second).toBe('k');
  });

  it('shutdown wakes waiting workers with undefined, cancels delayed keys and refuses adds', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    const waiting = q.get();
    q.addAfter('later', 100);
    await q.shutdown();
    expect(await waiting).toBeUndefined();
    expect(clock.pending).toBe(0);
    q.add('x');
    expect(q.length).toBe(0);
    expect(await q.get()).toBeUndefined();
  });

  it('shutdown with drain waits for keys in flight; queued keys are handed back, not processed', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('a');
    q.add('b');
    const a = await q.get();
    let drained = false;
    const shutdown = q.shutdown({ drain: true }).then(() => (drained = true));
    await Promise.resolve();
    expect(drained).toBe(false);
    expect(await q.get()).toBeUndefined();
    q.done(a!);
    await shutdown;
    expect(drained).toBe(true);
  });
});

describe('backoffDelay', () => {
  it.each([
    [0, 0, 100],
    [1, 0, 200],
    [3, 0, 800],
    [10, 0, 1000],
    [60, 0, 1000],
    [1, 0.5, 300],
    [3, 1, 1000],
  ])('attempt %i with random %f → %i ms (base 100, max 1000, jitter 1)', (attempt, random, want) => {
    expect(backoffDelay({ baseMs: 100, maxMs: 1000, jitter: 1 }, attempt, () => random)).toBe(want);
  });
});
