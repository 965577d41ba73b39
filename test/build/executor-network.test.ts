import { describe, expect, it } from 'vitest';
import { runNetwork } from '../../src/engine/build/executor/network.js';

describe("runNetwork: the build's network bounds a RUN's", () => {
  const run = (value?: string) => ({ flags: value === undefined ? [] : [{ name: 'network', value }] });
  it.each<[string | undefined, 'host' | 'none' | undefined, 'host' | 'none' | RegExp]>([
    [undefined, undefined, 'host'],
    [undefined, 'none', 'none'],
    ['default', 'host', 'host'],
    ['default', 'none', 'none'],
    ['none', 'host', 'none'],
    ['none', 'none', 'none'],
    ['host', 'host', 'host'],
    ['host', undefined, 'host'],
    ['host', 'none', /^RUN --network=host is not allowed: the build's network is none/],
    ['bridge', 'host', /^RUN --network=bridge: use host, none or default$/],
  ])('RUN --network=%s under %s → %s', (flag, build, want) => {
    const got = runNetwork(run(flag), build);
    if (typeof want === 'string') expect(got).toEqual({ ok: true, network: want });
    else expect(got.ok ? got.network : got.why).toMatch(want);
  });
});
