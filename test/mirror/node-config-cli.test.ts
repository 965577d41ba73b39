import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';

/** Every file under `dir` (relative path → content). */
async function tree(dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, { [`${rel}/`]: '' }, await tree(dir, rel));
    else out[rel] = await readFile(join(dir, rel), 'utf8');
  }
  return out;
}

describe('strata mirror config', () => {
  it('writes hosts.toml per registry and merges daemon.json; idempotent; --restore puts the originals back', async () => {
    const dir = await tempDir();
    const certs = join(dir, 'certs.d');
    await mkdir(join(certs, 'docker.io'), { recursive: true });
    await writeFile(join(certs, 'docker.io', 'hosts.toml'), 'server = "https://registry-1.docker.io"\n');
    const daemon = join(dir, 'daemon.json');
    await writeFile(daemon, '{ "storage-driver": "overlay2", "debug": false }\n');
    await writeFile(join(dir, 'ca.pem'), 'not really a CA');
    const before = await tree(dir);
    const args = [
      'mirror',
      'config',
      '--containerd',
      certs,
      '--docker',
      daemon,
      '--mirror',
      'http://127.0.0.1:5002',
      '--mirror',
      'https://mirror-2.example:8443',
      '--registry',
      'docker.io',
      '--registry',
      'quay.io',
      '--skip-verify',
      '--ca',
      join(dir, 'ca.pem'),
      '--dial-timeout',
      '3s',
    ];

    const dry = await runCli([...args, '--dry-run']);
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would update ${join(certs, 'docker.io', 'hosts.toml')}`);
    expect(dry.stdout).toContain(`would create ${join(certs, 'quay.io', 'hosts.toml')}`);
    expect(dry.stdout).toContain('[host."https://mirror-2.example:8443"]');
    expect(await tree(dir)).toEqual(before);

    const first = await runCli(['--json', ...args]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const result = JSON.parse(first.stdout) as {
      type: string;
      results: { target: string; result: { actions: { action: string }[] } }[];
    };
    expect(result.type).toBe('result');
    expect(result.results.map((r) => [r.target, r.result.actions.map((a) => a.action)])).toEqual([
      ['containerd', ['update', 'create']],
      ['docker', ['update']],
    ]);
    const docker = parse(await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8'));
    expect(docker).toEqual({
      server: 'https://registry-1.docker.io',
      host: {
        'http://127.0.0.1:5002': {
          capabilities: ['pull', 'resolve'],
          skip_verify: true,
          ca: join(dir, 'ca.pem'),
          dial_timeout: '3s',
        },
        'https://mirror-2.example:8443': {
          capabilities: ['pull', 'resolve'],
          skip_verify: true,
          ca: join(dir, 'ca.pem'),
          dial_timeout: '3s',
        },
      },
    });
    expect(parse(await readFile(join(certs, 'quay.io', 'hosts.toml'), 'utf8')).server).toBe(
      'https://quay.io',
    );
    expect(JSON.parse(await readFile(daemon, 'utf8'))).toEqual({
      'storage-driver': 'overlay2',
      debug: false,
      'registry-mirrors': ['http://127.0.0.1:5002/', 'https://mirror-2.example:8443/'],
    });
    const written = await tree(dir);

    const second = await runCli(args);
    expect(second.code).toBe(0);
    expect(
      second.stdout
        .split('\n')
        .filter(Boolean)
        .every((l) => l.startsWith('unchanged ')),
    ).toBe(true);
    expect(await tree(dir)).toEqual(written);

    const restore = await runCli([
      'mirror',
      'config',
      '--containerd',
      certs,
      '--docker',
      daemon,
      '--restore',
    ]);
    expect(restore.stderr).toBe('');
    expect(restore.code).toBe(0);
    expect(restore.stdout).toContain(`restore ${daemon}`);
    expect(await tree(dir)).toEqual(before);
  });

  it('warns instead of clobbering a file changed after it was written', async () => {
    const dir = await tempDir();
    await runCli(['mirror', 'config', '--containerd', dir, '--mirror', 'http://m:1']);
    await writeFile(join(dir, 'docker.io', 'hosts.toml'), '# mine now\n');
    const restore = await runCli(['mirror', 'config', '--containerd', dir, '--restore']);
    expect(restore.code).toBe(0);
    expect(restore.stderr).toContain('strata: warning:');
    expect(restore.stderr).toContain('changed by someone else');
    expect(await readFile(join(dir, 'docker.io', 'hosts.toml'), 'utf8')).toBe('# mine now\n');
  });

  it('refuses bad input with a clear error and a stable code, writing nothing', async () => {
    const dir = await tempDir();
    const daemon = join(dir, 'daemon.json');
    await writeFile(daemon, '{ "debug": tru');
    const certs = join(dir, 'certs');
    await mkdir(certs);
    const before = await tree(dir);
    const cases: [string[], number, string, string][] = [
      [['--containerd', certs], 2, 'INVALID_ARGUMENT', '--mirror'],
      [['--mirror', 'http://m'], 2, 'INVALID_ARGUMENT', '--containerd'],
      [['--containerd', certs, '--mirror', 'ftp://m'], 2, 'INVALID_ARGUMENT', 'ftp://m'],
      [
        ['--containerd', certs, '--mirror', 'http://m', '--registry', '../etc'],
        2,
        'INVALID_ARGUMENT',
        '../etc',
      ],
      [
        ['--containerd', certs, '--mirror', 'http://m', '--dial-timeout', 'soon'],
        2,
        'INVALID_ARGUMENT',
        'soon',
      ],
      [
        ['--containerd', certs, '--docker', daemon, '--mirror', 'http://m'],
        2,
        'INVALID_ARGUMENT',
        'not valid JSON',
      ],
      [
        ['--containerd', certs, '--mirror', 'http://m', '--ca', join(dir, 'nope.pem')],
        1,
        'NOT_FOUND',
        'nope.pem',
      ],
      [['--containerd', join(dir, 'missing'), '--mirror', 'http://m'], 1, 'NOT_FOUND', 'does not exist'],
    ];
    for (const [args, code, errorCode, text] of cases) {
      const r = await runCli(['--json', 'mirror', 'config', ...args]);
      expect({ args, code: r.code }).toEqual({ args, code });
      const err = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
        type: string;
        code: string;
        message: string;
      };
      expect(err.code).toBe(errorCode);
      expect(r.stderr).toContain(text);
    }
    expect(await tree(dir)).toEqual(before);
  });
});
