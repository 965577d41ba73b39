import { describe, expect, it } from 'vitest';
import { parse } from 'smol-toml';
import {
  mergeDaemonJson,
  mirrorsAdded,
  normalizeDockerMirror,
  parseHostsToml,
  removeMirrors,
  renderHostsToml,
  upstreamServer,
  type HostsTomlOptions,
} from '../../src/mirror/node-config/index.js';
import { hasCode } from '../../src/engine/errors.js';

/** The error code a call throws, or 'none'. */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (err) {
    return hasCode(err, 'INVALID_ARGUMENT') ? 'INVALID_ARGUMENT' : String(err);
  }
}

describe('renderHostsToml', () => {
  const cases: { name: string; options: HostsTomlOptions; toml: Record<string, unknown> }[] = [
    {
      name: 'docker.io goes to registry-1.docker.io, one mirror with the default capabilities',
      options: { registry: 'docker.io', hosts: [{ url: 'http://127.0.0.1:5002' }] },
      toml: {
        server: 'https://registry-1.docker.io',
        host: { 'http://127.0.0.1:5002': { capabilities: ['pull', 'resolve'] } },
      },
    },
    {
      name: 'quay.io with a port-less https mirror and every option',
      options: {
        registry: 'Quay.IO',
        hosts: [
          {
            url: 'https://mirror.example:8443/v2/quay',
            overridePath: true,
            skipVerify: true,
            ca: '/etc/certs/ca.pem',
            client: [['/c.cert', '/c.key'], '/both.pem'],
            dialTimeout: '1m30s',
            header: { 'x-mirror': 'a', 'x-list': ['b', 'c'] },
          },
        ],
      },
      toml: {
        server: 'https://quay.io',
        host: {
          'https://mirror.example:8443/v2/quay': {
            capabilities: ['pull', 'resolve'],
            override_path: true,
            skip_verify: true,
            ca: '/etc/certs/ca.pem',
            client: [['/c.cert', '/c.key'], '/both.pem'],
            dial_timeout: '1m30s',
            header: { 'x-mirror': 'a', 'x-list': ['b', 'c'] },
          },
        },
      },
    },
    {
      name: 'a registry with a port, two mirrors, a CA list, no server',
      options: {
        registry: 'registry.local:5000',
        server: null,
        hosts: [
          { url: 'http://m1:5002', ca: ['/a.pem', '/b.pem'] },
          { url: 'http://m2:5002', capabilities: ['pull'] },
        ],
      },
      toml: {
        host: {
          'http://m1:5002': { capabilities: ['pull', 'resolve'], ca: ['/a.pem', '/b.pem'] },
          'http://m2:5002': { capabilities: ['pull'] },
        },
      },
    },
    {
      name: '_default has no server of its own',
      options: { registry: '_default', hosts: [{ url: 'http://m:1' }] },
      toml: { host: { 'http://m:1': { capabilities: ['pull', 'resolve'] } } },
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const text = renderHostsToml(c.options);
      expect(text.startsWith('# Written by strata mirror config')).toBe(true);
      expect(parse(text)).toEqual(c.toml);
    });

  it('keeps the mirrors in the order given, as containerd tries them', () => {
    const urls = ['http://z:1', 'http://a:1', 'https://m/', 'http://b:2'];
    const text = renderHostsToml({ registry: 'docker.io', hosts: urls.map((url) => ({ url })) });
    expect(parseHostsToml(text).hosts.map((h) => h.url)).toEqual(urls);
    const positions = urls.map((u) => text.indexOf(`[host."${u}"]`));
    expect(positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1]!))).toBe(true);
  });

  it('round-trips through the parser, odd characters quoted rather than breaking the document', () => {
    const host = {
      url: 'http://127.0.0.1:5002/pa%22th',
      capabilities: ['pull', 'resolve'] as const,
      ca: [
        '/etc/ca "quoted".pem',
        "/etc/it's\\back.pem",
        '/etc/ü ñ/ca.pem',
        '/x]\n[host."evil"]'.replace('\n', ' '),
      ],
      client: [['/c"1.cert', ''] as const],
      dialTimeout: '500ms',
      header: { 'x-odd': 'a "b" \\ c = [d]', authorization: ['Basic x=', 'y'] },
    };
    const text = renderHostsToml({ registry: 'docker.io', hosts: [host] });
    const back = parseHostsToml(text);
    expect(back).toEqual({ server: 'https://registry-1.docker.io', hosts: [host] });
    expect(Object.keys(parse(text))).toEqual(['server', 'host']);
  });

  it('parses a hand-written file with comments, single strings and unknown fields', () => {
    const text = [
      '# mine',
      'server = "https://docker.io"',
      '[host."https://a"]',
      '  capabilities = ["pull"]',
      '  client = "/c.pem"',
      '  proxy = "http://p:1"',
      '[host."https://b"]',
      '  ca = "/ca.pem"',
      '  [host."https://b".header]',
      '    x = "1"',
    ].join('\n');
    expect(parseHostsToml(text)).toEqual({
      server: 'https://docker.io',
      hosts: [
        { url: 'https://a', capabilities: ['pull'], client: ['/c.pem'] },
        { url: 'https://b', ca: '/ca.pem', header: { x: '1' } },
      ],
    });
  });

  const refusals: [string, () => unknown][] = [
    ['a registry with a slash', () => renderHostsToml({ registry: 'docker.io/x', hosts: [] })],
    ['a registry named ..', () => renderHostsToml({ registry: '..', hosts: [] })],
    ['an empty registry', () => renderHostsToml({ registry: '', hosts: [] })],
    ['a ftp mirror', () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'ftp://m' }] })],
    [
      'a mirror with credentials',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://u:p@m' }] }),
    ],
    [
      'a mirror with a query',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m/?a=b' }] }),
    ],
    ['a mirror that is no URL', () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'm:5000' }] })],
    [
      'a mirror given twice',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m' }, { url: 'http://m' }] }),
    ],
    [
      'a bad dial timeout',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m', dialTimeout: '5' }] }),
    ],
    [
      'a bad capability',
      () =>
        renderHostsToml({
          registry: 'docker.io',
          hosts: [{ url: 'http://m', capabilities: ['pul' as 'pull'] }],
        }),
    ],
    [
      'a header name with a space',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m', header: { 'x y': 'v' } }] }),
    ],
    [
      'a header value with a line break',
      () =>
        renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m', header: { x: 'a\r\nb: c' } }] }),
    ],
    [
      'a CA path with a newline',
      () => renderHostsToml({ registry: 'docker.io', hosts: [{ url: 'http://m', ca: '/a\n' }] }),
    ],
    ['invalid TOML', () => parseHostsToml('server = "x"\n[host."a"\n')],
    ['a server that is a number', () => parseHostsToml('server = 1\n')],
    ['a host that is no table', () => parseHostsToml('host = "x"\n')],
  ];
  for (const [name, fn] of refusals)
    it(`refuses ${name} with INVALID_ARGUMENT`, () => expect(codeOf(fn)).toBe('INVALID_ARGUMENT'));

  it('names the upstream of a registry', () => {
    expect(upstreamServer('docker.io')).toBe('https://registry-1.docker.io');
    expect(upstreamServer('ghcr.io')).toBe('https://ghcr.io');
    expect(upstreamServer('[::1]:5000')).toBe('https://[::1]:5000');
    expect(upstreamServer('_default')).toBeUndefined();
  });
});

describe('daemon.json', () => {
  const cases: { name: string; existing: string | undefined; mirrors: string[]; want: string }[] = [
    {
      name: 'no file',
      existing: undefined,
      mirrors: ['http://m:5002'],
      want: '{\n  "registry-mirrors": [\n    "http://m:5002/"\n  ]\n}\n',
    },
    {
      name: 'a blank file',
      existing: ' \n',
      mirrors: ['https://m'],
      want: '{\n  "registry-mirrors": [\n    "https://m/"\n  ]\n}\n',
    },
    {
      name: 'other keys kept in order, ours appended',
      existing: '{"zeta":1,"alpha":{"nested":[1,2]},"debug":true}',
      mirrors: ['http://m'],
      want:
        JSON.stringify(
          { zeta: 1, alpha: { nested: [1, 2] }, debug: true, 'registry-mirrors': ['http://m/'] },
          null,
          2,
        ) + '\n',
    },
    {
      name: 'existing mirrors kept after ours, in place, without duplicates',
      existing: '{"a":1,"registry-mirrors":["https://old/","http://m/"],"b":2}',
      mirrors: ['http://m', 'http://n:1'],
      want:
        JSON.stringify(
          { a: 1, 'registry-mirrors': ['http://m/', 'http://n:1/', 'https://old/'], b: 2 },
          null,
          2,
        ) + '\n',
    },
  ];
  for (const c of cases)
    it(`merges: ${c.name}`, () => expect(mergeDaemonJson(c.existing, c.mirrors)).toBe(c.want));

  it('removeMirrors undoes a merge of mirrors the original did not list', () => {
    const original = '{"a":1,"registry-mirrors":["https://old/"],"b":[true]}';
    const added = mirrorsAdded(original, ['http://m', 'https://old']);
    expect(added).toEqual(['http://m/']);
    const merged = mergeDaemonJson(original, ['http://m', 'https://old']);
    expect(JSON.parse(removeMirrors(merged, added))).toEqual(JSON.parse(original));
    expect(
      Object.keys(JSON.parse(removeMirrors('{"x":1,"registry-mirrors":["http://m/"]}', ['http://m']))),
    ).toEqual(['x']);
    expect(removeMirrors(undefined, ['http://m'])).toBe('{}\n');
  });

  it('normalizes docker mirrors as dockerd does and refuses paths', () => {
    expect(normalizeDockerMirror('http://m:5002')).toBe('http://m:5002/');
    expect(normalizeDockerMirror('https://M.example/')).toBe('https://m.example/');
    expect(codeOf(() => normalizeDockerMirror('http://m/v2'))).toBe('INVALID_ARGUMENT');
  });

  const bad = ['{', '[]', '"x"', 'null', '{"registry-mirrors":"http://m"}', '{"registry-mirrors":[1]}'];
  for (const text of bad)
    it(`refuses ${JSON.stringify(text)} with INVALID_ARGUMENT`, () => {
      expect(codeOf(() => mergeDaemonJson(text, ['http://m']))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => removeMirrors(text, ['http://m']))).toBe('INVALID_ARGUMENT');
    });
});
