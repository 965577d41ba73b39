import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import { parseDockerfile } from '../../src/engine/build/dockerfile/parse.js';
import type { Dockerfile, FromInstruction, Instruction } from '../../src/engine/build/dockerfile/types.js';

/** The instructions after `FROM scratch` in a one-stage file. */
function body(text: string): readonly Instruction[] {
  return parseDockerfile(`FROM scratch\n${text}`).stages[0]!.instructions;
}
/** The single instruction after `FROM scratch`. */
function one(text: string): Instruction {
  const all = body(text);
  expect(all).toHaveLength(1);
  return all[0]!;
}
function parseError(text: string): StrataError {
  try {
    parseDockerfile(text);
  } catch (err) {
    expect(err).toBeInstanceOf(StrataError);
    return err as StrataError;
  }
  throw new Error('expected the Dockerfile to be refused');
}

describe('parseDockerfile: instructions', () => {
  const cases: Array<[string, string, Record<string, unknown>]> = [
    [
      'RUN shell form',
      'RUN apt-get update',
      { kind: 'RUN', command: { form: 'shell', command: 'apt-get update' } },
    ],
    [
      'RUN exec form',
      'RUN ["echo", "a b"]',
      { kind: 'RUN', command: { form: 'exec', args: ['echo', 'a b'] } },
    ],
    [
      'invalid JSON falls back to the shell form',
      "RUN ['echo', 'hi']",
      { kind: 'RUN', command: { form: 'shell', command: "['echo', 'hi']" } },
    ],
    [
      'unterminated JSON falls back to the shell form',
      'CMD ["a", "b"',
      { kind: 'CMD', command: { form: 'shell', command: '["a", "b"' } },
    ],
    [
      'text after a JSON array is ignored, as Go does',
      'CMD ["a"] x',
      { command: { form: 'exec', args: ['a'] } },
    ],
    ['CMD [] is an empty exec form', 'CMD []', { kind: 'CMD', command: { form: 'exec', args: [] } }],
    ['keywords are case-insensitive', 'run echo hi', { kind: 'RUN', original: 'run echo hi' }],
    [
      'ENTRYPOINT exec form',
      'ENTRYPOINT ["/bin/app", "--serve"]',
      { kind: 'ENTRYPOINT', command: { form: 'exec', args: ['/bin/app', '--serve'] } },
    ],
    [
      'ENV several pairs, quotes kept for expansion',
      'ENV k=v k2="v w" k3=\'x\'',
      {
        kind: 'ENV',
        pairs: [
          { key: 'k', value: 'v' },
          { key: 'k2', value: '"v w"' },
          { key: 'k3', value: "'x'" },
        ],
      },
    ],
    ['ENV legacy form', 'ENV k v  w', { kind: 'ENV', pairs: [{ key: 'k', value: 'v  w' }] }],
    ['ENV empty value', 'ENV k=', { pairs: [{ key: 'k', value: '' }] }],
    ['ENV escaped space', 'ENV k=a\\ b', { pairs: [{ key: 'k', value: 'a\\ b' }] }],
    [
      'LABEL pairs',
      'LABEL org.opencontainers.image.title="My App" v=1',
      {
        kind: 'LABEL',
        pairs: [
          { key: 'org.opencontainers.image.title', value: '"My App"' },
          { key: 'v', value: '1' },
        ],
      },
    ],
    [
      'ARG several',
      'ARG a b=c d=',
      { kind: 'ARG', args: [{ name: 'a' }, { name: 'b', default: 'c' }, { name: 'd', default: '' }] },
    ],
    ['ARG default keeps quotes', 'ARG v="1 2"', { args: [{ name: 'v', default: '"1 2"' }] }],
    ['EXPOSE several', 'EXPOSE 80/tcp 53/udp', { kind: 'EXPOSE', values: ['80/tcp', '53/udp'] }],
    ['VOLUME JSON', 'VOLUME ["/a", "/b c"]', { kind: 'VOLUME', values: ['/a', '/b c'] }],
    ['VOLUME words', 'VOLUME /a /b', { kind: 'VOLUME', values: ['/a', '/b'] }],
    ['SHELL', 'SHELL ["/bin/bash", "-c"]', { kind: 'SHELL', shell: ['/bin/bash', '-c'] }],
    ['WORKDIR keeps spaces', 'WORKDIR /my dir', { kind: 'WORKDIR', value: '/my dir' }],
    ['USER', 'USER 1000:1000', { kind: 'USER', value: '1000:1000' }],
    ['STOPSIGNAL', 'STOPSIGNAL SIGTERM', { kind: 'STOPSIGNAL', value: 'SIGTERM' }],
    ['MAINTAINER', 'MAINTAINER Jane <j@example.org>', { kind: 'MAINTAINER', value: 'Jane <j@example.org>' }],
    ['HEALTHCHECK NONE', 'HEALTHCHECK NONE', { kind: 'HEALTHCHECK', test: { none: true } }],
    [
      'HEALTHCHECK with flags, shell form',
      'HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD curl -f http://localhost/',
      {
        kind: 'HEALTHCHECK',
        flags: [
          { name: 'interval', value: '5s' },
          { name: 'timeout', value: '1m30s' },
          { name: 'retries', value: '3' },
        ],
        test: { none: false, command: { form: 'shell', command: 'curl -f http://localhost/' } },
      },
    ],
    [
      'HEALTHCHECK exec form',
      'HEALTHCHECK CMD ["/bin/check"]',
      { test: { none: false, command: { form: 'exec', args: ['/bin/check'] } } },
    ],
    [
      'ONBUILD keeps the trigger as written',
      'ONBUILD  RUN echo $X',
      { kind: 'ONBUILD', trigger: 'RUN echo $X' },
    ],
    [
      'COPY flags, --link bare',
      'COPY --from=build --chown=1:1 --link /src/a /src/b /dst/',
      {
        kind: 'COPY',
        flags: [{ name: 'from', value: 'build' }, { name: 'chown', value: '1:1' }, { name: 'link' }],
        sources: ['/src/a', '/src/b'],
        destination: '/dst/',
      },
    ],
    [
      'COPY JSON form',
      'COPY ["a b", "/c d/"]',
      { kind: 'COPY', sources: ['a b'], destination: '/c d/', heredocs: [] },
    ],
    ['flag values are unquoted', 'COPY --chown="1 2" a b', { flags: [{ name: 'chown', value: '1 2' }] }],
    ['-- ends the flags', 'COPY -- --weird b', { flags: [], sources: ['--weird'], destination: 'b' }],
    [
      'ADD with --checksum',
      'ADD --checksum=sha256:abc https://example.org/x /x',
      { kind: 'ADD', flags: [{ name: 'checksum', value: 'sha256:abc' }], sources: ['https://example.org/x'] },
    ],
    [
      'RUN --mount repeatable',
      'RUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b make',
      {
        flags: [
          { name: 'mount', value: 'type=cache,target=/a' },
          { name: 'mount', value: 'type=tmpfs,target=/b' },
        ],
        command: { form: 'shell', command: 'make' },
      },
    ],
    [
      'a # inside an instruction is not a comment',
      'RUN echo # not a comment',
      { command: { command: 'echo # not a comment' } },
    ],
  ];
  it.each(cases)('%s', (_name, text, expected) => {
    expect(one(text)).toMatchObject(expected);
  });
});

describe('parseDockerfile: lines, comments, continuations', () => {
  it('joins continuation lines, drops comment and blank lines inside them, keeps line numbers', () => {
    const [run] = body(
      'RUN apt-get update && \\\n    # comment in the middle\n\n    apt-get install -y \\   \n    curl\n',
    );
    expect(run).toMatchObject({
      kind: 'RUN',
      line: 2,
      endLine: 6,
      original: 'RUN apt-get update &&     apt-get install -y     curl',
      command: { form: 'shell', command: 'apt-get update &&     apt-get install -y     curl' },
    });
  });

  it('an escaped escape at the end is not a continuation', () => {
    const all = body('RUN echo a\\\\\nRUN echo b');
    expect(all.map((i) => i.original)).toEqual(['RUN echo a\\\\', 'RUN echo b']);
  });

  it('skips comments, blank and indented lines, handles CRLF and a BOM', () => {
    const df = parseDockerfile(
      '\ufeff# c1\r\n\r\n  FROM  scratch  \r\n   # indented comment\r\n\tCMD ["x"]\r\n',
    );
    expect(df.stages[0]!.from).toMatchObject({ image: 'scratch', line: 3 });
    expect(df.stages[0]!.instructions[0]).toMatchObject({ kind: 'CMD', line: 5, command: { args: ['x'] } });
  });

  it('reads parser directives at the top, case-insensitively', () => {
    const df = parseDockerfile('# syntax=docker/dockerfile:1.7\n#ESCAPE = `\n# check=skip=all\nFROM scratch');
    expect(df.directives).toEqual({ syntax: 'docker/dockerfile:1.7', escape: '`', check: 'skip=all' });
    expect(df.escape).toBe('`');
  });

  it('ignores directives after a comment, a blank line or an instruction', () => {
    expect(parseDockerfile('# hello\n# escape=`\nFROM scratch').escape).toBe('\\');
    expect(parseDockerfile('\n# escape=`\nFROM scratch').escape).toBe('\\');
    expect(parseDockerfile('FROM scratch\n# escape=`\n').directives).toEqual({});
    // An unknown directive is a comment and ends the directive block.
    expect(parseDockerfile('# foo=bar\n# escape=`\nFROM scratch').directives).toEqual({});
  });

  it('uses the backtick for continuations under escape=`, and leaves backslashes alone', () => {
    const df = parseDockerfile('# escape=`\nFROM windows\nRUN dir c:\\ `\n  /s\nCOPY a c:\\dst\\\n');
    const [run, copy] = df.stages[0]!.instructions;
    expect(run).toMatchObject({ command: { command: 'dir c:\\   /s' }, line: 3, endLine: 4 });
    expect(copy).toMatchObject({ destination: 'c:\\dst\\' });
  });

  it('splits global ARGs and stages, lower-cases stage names', () => {
    const df: Dockerfile = parseDockerfile(
      'ARG A\nARG B=1\nFROM alpine AS Base\nRUN true\nfrom base as NEXT\nFROM --platform=$P scratch',
    );
    expect(df.globalArgs.map((a) => a.args[0]!.name)).toEqual(['A', 'B']);
    expect(df.stages.map((s) => [s.index, s.from.image, s.from.stageName, s.instructions.length])).toEqual([
      [0, 'alpine', 'base', 1],
      [1, 'base', 'next', 0],
      [2, 'scratch', undefined, 0],
    ]);
    const last: FromInstruction = df.stages[2]!.from;
    expect(last.flags).toEqual([{ name: 'platform', value: '$P' }]);
  });
});

describe('parseDockerfile: heredocs', () => {
  it('reads a RUN heredoc', () => {
    expect(one('RUN <<EOF\napt-get update\necho "$HOME"\nEOF')).toMatchObject({
      kind: 'RUN',
      command: { form: 'shell', command: '<<EOF' },
      heredocs: [{ name: 'EOF', content: 'apt-get update\necho "$HOME"\n', expand: true, chomp: false }],
      line: 2,
      endLine: 5,
    });
  });

  it('strips leading tabs with <<- (body and terminator)', () => {
    expect(one('RUN <<-EOT bash\n\tif true; then\n\t\techo a\n\tfi\n\tEOT')).toMatchObject({
      heredocs: [{ name: 'EOT', content: 'if true; then\necho a\nfi\n', chomp: true }],
    });
  });

  it('a quoted delimiter turns expansion off', () => {
    const all = body('RUN <<"A"\n$X\nA\nRUN <<\'B\'\n$X\nB\nRUN <<C\n$X\nC');
    expect(all.map((i) => (i.kind === 'RUN' ? i.heredocs[0]!.expand : undefined))).toEqual([
      false,
      false,
      true,
    ]);
  });

  it('reads several heredocs on one line, in order', () => {
    const copy = one('COPY <<one.txt <<two.txt /dst/\nfirst\none.txt\nsecond\ntwo.txt');
    expect(copy).toMatchObject({
      kind: 'COPY',
      sources: ['<<one.txt', '<<two.txt'],
      destination: '/dst/',
      heredocs: [
        { name: 'one.txt', content: 'first\n' },
        { name: 'two.txt', content: 'second\n' },
      ],
    });
  });

  it('finds a heredoc after a command and redirect, and continues with the next instruction', () => {
    const all = body('RUN cat > /x <<EOF\nline\nEOF\nUSER nobody');
    expect(all[0]).toMatchObject({
      command: { command: 'cat > /x <<EOF' },
      heredocs: [{ content: 'line\n' }],
    });
    expect(all[1]).toMatchObject({ kind: 'USER', line: 5 });
  });

  it('no heredoc in the JSON form or in other instructions', () => {
    expect(one('RUN ["cat", "<<EOF"]')).toMatchObject({ heredocs: [] });
    expect(one('ENV X=<<EOF')).toMatchObject({ kind: 'ENV' });
  });
});

describe('parseDockerfile: errors name the line', () => {
  const cases: Array<[string, string, number, RegExp]> = [
    ['empty file', '', 1, /file with no instructions/],
    ['only comments', '# a\n\n# b\n', 3, /file with no instructions/],
    ['no FROM', 'ARG A=1\nARG B', 2, /no FROM/],
    ['instruction before FROM', 'ARG A\nRUN echo\nFROM scratch', 2, /RUN before the first FROM/],
    ['unknown instruction', 'FROM scratch\nRUNN echo', 2, /unknown instruction: RUNN/],
    [
      'unknown instruction after a continuation',
      'FROM scratch\nRUN a \\\n b\nFOO bar',
      4,
      /unknown instruction: FOO/,
    ],
    ['FROM with two arguments', 'FROM a b', 1, /FROM requires either one or three arguments/],
    ['FROM x y z without AS', 'FROM a B c', 1, /second argument of FROM must be "AS"/],
    ['bad stage name', 'FROM a AS 1st', 1, /invalid name for build stage/],
    [
      'duplicate stage name',
      'FROM a AS x\nRUN y\nFROM b AS X',
      3,
      /duplicate stage name "x" \(first defined on line 1\)/,
    ],
    ['missing argument', 'FROM scratch\nWORKDIR', 2, /WORKDIR requires at least one argument/],
    ['RUN without command', 'FROM scratch\n\nRUN   ', 3, /RUN requires at least one argument/],
    ['FROM without image', 'FROM', 1, /FROM requires at least one argument/],
    ['COPY with one argument', 'FROM scratch\nCOPY a', 2, /COPY requires at least two arguments/],
    ['ADD with only flags', 'FROM scratch\nADD --chown=1 a', 2, /ADD requires at least two arguments/],
    ['ENV legacy without value', 'FROM scratch\nENV k', 2, /ENV must have two arguments/],
    ['ENV mixed forms', 'FROM scratch\nENV a=1 b', 2, /can't find = in "b"/],
    ['ENV blank name', 'FROM scratch\nENV =1', 2, /ENV names can not be blank/],
    ['ARG blank name', 'FROM scratch\nARG =1', 2, /ARG names can not be blank/],
    [
      'SHELL not JSON',
      'FROM scratch\nSHELL /bin/bash -c',
      2,
      /SHELL requires the arguments to be in JSON form/,
    ],
    ['SHELL empty', 'FROM scratch\nSHELL []', 2, /SHELL requires at least one argument/],
    [
      'JSON array of non-strings',
      'FROM scratch\nCMD ["a", 1]',
      2,
      /arrays must be comprised of strings only/,
    ],
    [
      'VOLUME empty string',
      'FROM scratch\nVOLUME ["/a", " "]',
      2,
      /VOLUME specified can not be an empty string/,
    ],
    [
      'HEALTHCHECK NONE with args',
      'FROM scratch\nHEALTHCHECK NONE x',
      2,
      /HEALTHCHECK NONE takes no arguments/,
    ],
    ['HEALTHCHECK unknown type', 'FROM scratch\nHEALTHCHECK RUN x', 2, /Unknown type "RUN" in HEALTHCHECK/],
    [
      'HEALTHCHECK CMD without command',
      'FROM scratch\nHEALTHCHECK CMD',
      2,
      /Missing command after HEALTHCHECK CMD/,
    ],
    ['HEALTHCHECK bad duration', 'FROM scratch\nHEALTHCHECK --interval=5x CMD a', 2, /invalid duration "5x"/],
    [
      'HEALTHCHECK negative retries',
      'FROM scratch\nHEALTHCHECK --retries=-1 CMD a',
      2,
      /--retries cannot be negative/,
    ],
    ['ONBUILD ONBUILD', 'FROM scratch\nONBUILD ONBUILD RUN x', 2, /Chaining ONBUILD/],
    ['ONBUILD FROM', 'FROM scratch\nONBUILD FROM x', 2, /FROM isn't allowed as an ONBUILD trigger/],
    [
      'ONBUILD MAINTAINER',
      'FROM scratch\nonbuild maintainer x',
      2,
      /MAINTAINER isn't allowed as an ONBUILD trigger/,
    ],
    ['ONBUILD unknown trigger', 'FROM scratch\nONBUILD NOPE x', 2, /unknown instruction: NOPE/],
    ['unknown flag', 'FROM scratch\nCOPY --frm=a b c', 2, /unknown flag: frm/],
    ['flag on an instruction without flags', 'FROM scratch\nUSER --x=1 a', 2, /unknown flag: x/],
    ['string flag without value', 'FROM scratch\nCOPY --from a b', 2, /missing a value on flag: from/],
    ['duplicate flag', 'FROM scratch\nCOPY --from=a --from=b c d', 2, /duplicate flag specified: from/],
    ['bad boolean flag', 'FROM scratch\nCOPY --link=maybe a b', 2, /expecting boolean value for flag link/],
    ['unterminated heredoc', 'FROM scratch\nRUN <<EOF\necho hi\n', 2, /unterminated heredoc EOF/],
    ['bad escape directive', '# escape=x\nFROM scratch', 1, /invalid escape token 'x'/],
    ['repeated directive', '# syntax=a\n# syntax=b\nFROM scratch', 2, /only one syntax parser directive/],
    ['overlong line', `FROM scratch\nRUN ${'x'.repeat(70_000)}`, 2, /greater than max allowed size/],
  ];
  it.each(cases)('%s', (_name, text, line, message) => {
    const err = parseError(text);
    expect(err.code).toBe('DOCKERFILE_INVALID');
    expect(err.retryable).toBe(false);
    expect(err.detail).toEqual({ line });
    expect(err.message).toMatch(new RegExp(`^Dockerfile:${line}: `));
    expect(err.message).toMatch(message);
  });
});

describe('parseDockerfile: realistic files', () => {
  const dir = join(import.meta.dirname, 'fixtures', 'dockerfiles');
  const files = readdirSync(dir).filter((f) => f.endsWith('.Dockerfile'));

  it('has the fixtures', () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
  });

  it.each(files)('%s parses to its expected summary', (file) => {
    const df = parseDockerfile(readFileSync(join(dir, file), 'utf8'));
    const expected = JSON.parse(
      readFileSync(join(dir, file.replace(/\.Dockerfile$/u, '.expected.json')), 'utf8'),
    );
    expect(summarize(df)).toEqual(expected);
  });
});

/** A compact, reviewable view of a parsed file: what the fixtures' expected JSON files hold. */
function summarize(df: Dockerfile): unknown {
  return {
    escape: df.escape,
    directives: df.directives,
    globalArgs: df.globalArgs.map((a) => a.original),
    stages: df.stages.map((s) => ({
      from: [s.from.image, s.from.stageName ?? null, s.from.line],
      instructions: s.instructions.map((i) => {
        const out: Record<string, unknown> = { kind: i.kind, lines: [i.line, i.endLine] };
        if (i.flags.length > 0)
          out.flags = i.flags.map((f) => (f.value === undefined ? f.name : `${f.name}=${f.value}`));
        if (i.kind === 'RUN' || i.kind === 'CMD' || i.kind === 'ENTRYPOINT') out.command = i.command;
        if (i.kind === 'RUN' || i.kind === 'COPY' || i.kind === 'ADD') {
          if (i.heredocs.length > 0) out.heredocs = i.heredocs.map((h) => [h.name, h.content, h.expand]);
        }
        if (i.kind === 'COPY' || i.kind === 'ADD') out.paths = [...i.sources, i.destination];
        if (i.kind === 'ENV' || i.kind === 'LABEL') out.pairs = i.pairs.map((p) => `${p.key}=${p.value}`);
        if (i.kind === 'ARG')
          out.args = i.args.map((a) => (a.default === undefined ? a.name : `${a.name}=${a.default}`));
        if (i.kind === 'WORKDIR' || i.kind === 'USER' || i.kind === 'STOPSIGNAL') out.value = i.value;
        if (i.kind === 'EXPOSE' || i.kind === 'VOLUME') out.values = i.values;
        if (i.kind === 'SHELL') out.shell = i.shell;
        if (i.kind === 'ONBUILD') out.trigger = i.trigger;
        if (i.kind === 'HEALTHCHECK') out.test = i.test;
        return out;
      }),
    })),
  };
}
