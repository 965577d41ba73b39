import { describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import {
  expandHeredoc,
  expandInstruction,
  expandWord,
  expandWords,
} from '../../src/engine/build/dockerfile/expand.js';
import { parseDockerfile } from '../../src/engine/build/dockerfile/parse.js';
import type { Instruction } from '../../src/engine/build/dockerfile/types.js';

const vars = new Map<string, string>([
  ['A', 'alpha'],
  ['SP', 'x  y'],
  ['EMPTY', ''],
  ['PATHV', '/usr/local/bin:/usr/bin'],
  ['FILE', 'archive.tar.gz'],
  ['lower', 'l'],
]);

describe('expandWord', () => {
  const cases: Array<[string, string]> = [
    ['$A', 'alpha'],
    ['${A}', 'alpha'],
    ['pre$A-post', 'prealpha-post'],
    ['${A}_x', 'alpha_x'],
    ['$A_x', ''], // the name is A_x, which is unset
    ['$UNSET', ''],
    ['${UNSET}', ''],
    ['$lower', 'l'], // names are case-sensitive
    ['$LOWER', ''],
    ['${UNSET:-def}', 'def'],
    ['${EMPTY:-def}', 'def'],
    ['${EMPTY-def}', ''],
    ['${UNSET-def}', 'def'],
    ['${A:-def}', 'alpha'],
    ['${A:+alt}', 'alt'],
    ['${EMPTY:+alt}', ''],
    ['${EMPTY+alt}', 'alt'],
    ['${UNSET+alt}', ''],
    ['${UNSET:-${A}-x}', 'alpha-x'], // nested word in a default
    ['${UNSET:-${ALSO:-deep}}', 'deep'],
    ['${UNSET:-"quoted }"}', 'quoted }'],
    ['${A:?must be set}', 'alpha'],
    ['${A#al}', 'pha'],
    ['${PATHV#*:}', '/usr/bin'],
    ['${PATHV##*/}', 'bin'],
    ['${FILE%.*}', 'archive.tar'],
    ['${FILE%%.*}', 'archive'],
    ['${PATHV/usr/opt}', '/opt/local/bin:/usr/bin'],
    ['${PATHV//usr/opt}', '/opt/local/bin:/opt/bin'],
    ['\\$A', '$A'], // escaped dollar
    ['\\${A}', '${A}'],
    ['a\\ b', 'a b'],
    ["'$A'", '$A'], // no expansion in single quotes
    ["'a\\b'", 'a\\b'],
    ['"$A"', 'alpha'], // expansion in double quotes, quotes removed
    ['"${SP}"', 'x  y'],
    ['"a\\"b"', 'a"b'],
    ['"a\\b"', 'a\\b'], // backslash before an ordinary char stays inside double quotes
    ['"\\$A"', '$A'],
    ['"it\'s"', "it's"],
    ['$', '$'],
    ['a$', 'a$'],
    ['$/x', '$/x'],
    ['$1', ''], // positional parameters are never set
    ['', ''],
    ['trailing\\', 'trailing'],
  ];
  it.each(cases)('%s → %s', (word, expected) => {
    expect(expandWord(word, vars)).toBe(expected);
  });

  it('uses the backtick as the escape character when told to, leaving backslashes alone', () => {
    expect(expandWord('C:\\app\\$A', vars, '`')).toBe('C:\\app\\alpha');
    expect(expandWord('`$A', vars, '`')).toBe('$A');
    expect(expandWord('"a`"b"', vars, '`')).toBe('a"b');
  });

  const errors: Array<[string, RegExp]> = [
    ['${A:x}', /unsupported modifier \(:x\) in substitution/],
    ['${A!}', /unsupported modifier \(!\) in substitution/],
    ['${}', /bad substitution/],
    ['${:-a}', /bad substitution/],
    ['${A', /missing '}'/],
    ['${A:-x', /missing '}'/],
    ['${UNSET:?}', /UNSET: is not allowed to be unset/],
    ['${UNSET?custom message}', /UNSET: custom message/],
    ['${EMPTY:?}', /EMPTY: is not allowed to be empty/],
    ['"unterminated', /matching double-quote/],
    ["'unterminated", /matching single-quote/],
    ['${A:-' + '${A:-'.repeat(100) + 'x' + '}'.repeat(101), /nested deeper/],
  ];
  it.each(errors)('refuses %s', (word, message) => {
    let caught: unknown;
    try {
      expandWord(word, vars);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StrataError);
    expect((caught as StrataError).code).toBe('DOCKERFILE_INVALID');
    expect((caught as StrataError).message).toMatch(message);
  });

  it('accepts ${X?} on an empty (set) variable', () => {
    expect(expandWord('${EMPTY?}', vars)).toBe('');
  });
});

describe('expandWords', () => {
  const cases: Array<[string, string[]]> = [
    ['80 443', ['80', '443']],
    ['$SP', ['x', 'y']], // substituted white space splits
    ['"$SP"', ['x  y']], // quoted does not
    ['a\\ b c', ['a b', 'c']],
    ['${UNSET:-8080/tcp} 53/udp', ['8080/tcp', '53/udp']],
    ['""', []], // an empty quoted word vanishes, as in docker
    ["'' x", ['x']],
    ['  lead  trail  ', ['lead', 'trail']],
    ['$EMPTY', []],
  ];
  it.each(cases)('%s', (word, expected) => {
    expect(expandWords(word, vars)).toEqual(expected);
  });
});

describe('expandHeredoc', () => {
  it('substitutes $ references, keeps quotes, honours backslash escapes', () => {
    expect(expandHeredoc('a=$A "b=${A}" \'$A\' \\$A\n', vars)).toBe('a=alpha "b=alpha" \'alpha\' $A\n');
  });
});

/** Parses one instruction after `FROM scratch` (or the FROM itself with `from: true`) and expands it. */
function expanded(text: string, v: ReadonlyMap<string, string> = vars): Instruction {
  const df = parseDockerfile(`FROM scratch\n${text}`);
  return expandInstruction(df.stages[0]!.instructions[0]!, v, df.escape);
}

describe('expandInstruction', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    [
      'ENV k=$A k2="$A b" k3=\'$A\'',
      {
        pairs: [
          { key: 'k', value: 'alpha' },
          { key: 'k2', value: 'alpha b' },
          { key: 'k3', value: '$A' },
        ],
        original: "ENV k=alpha k2='alpha b' k3='$A'",
      },
    ],
    ['ENV legacy $A "and more"', { pairs: [{ key: 'legacy', value: 'alpha and more' }] }],
    ['ENV ${A}_KEY=1', { pairs: [{ key: 'alpha_KEY', value: '1' }] }],
    ['LABEL "x.y"="${A:-d}"', { pairs: [{ key: 'x.y', value: 'alpha' }], original: 'LABEL x.y=alpha' }],
    [
      'ARG B=${A}-1 C',
      { args: [{ name: 'B', default: 'alpha-1' }, { name: 'C' }], original: 'ARG B=alpha-1 C' },
    ],
    ['WORKDIR /home/$A', { value: '/home/alpha', original: 'WORKDIR /home/alpha' }],
    ['USER ${UID:-1000}:${GID:-1000}', { value: '1000:1000' }],
    ['STOPSIGNAL ${SIG:-SIGTERM}', { value: 'SIGTERM' }],
    ['EXPOSE $PORTS 53/udp', { values: ['53/udp'] }],
    [
      'VOLUME ["/data/$A", "/logs"]',
      { values: ['/data/alpha', '/logs'], original: 'VOLUME /data/alpha /logs' },
    ],
    [
      'COPY --from=$A --chown=${U:-1}:1 --link src/$FILE /opt/$A/',
      {
        flags: [{ name: 'from', value: 'alpha' }, { name: 'chown', value: '1:1' }, { name: 'link' }],
        sources: ['src/archive.tar.gz'],
        destination: '/opt/alpha/',
        original: 'COPY --from=alpha --chown=1:1 --link src/archive.tar.gz /opt/alpha/',
      },
    ],
    // Shell-form COPY splits on blanks before expansion (as docker), so quoting needs the JSON form.
    ['COPY ["a b", "$A"]', { sources: ['a b'], destination: 'alpha', original: 'COPY ["a b","alpha"]' }],
    ['ADD --chmod=$M x /y', { flags: [{ name: 'chmod', value: '' }] }],
    // The command is the shell's business: not substituted, history shows it as written.
    [
      'RUN echo $A "${A}"',
      { command: { form: 'shell', command: 'echo $A "${A}"' }, original: 'RUN echo $A "${A}"' },
    ],
    [
      'RUN --mount=type=cache,target=/$A make',
      { flags: [{ name: 'mount', value: 'type=cache,target=/alpha' }] },
    ],
    ['CMD ["echo", "$A"]', { command: { form: 'exec', args: ['echo', '$A'] } }],
    ['ENTRYPOINT run $A', { command: { form: 'shell', command: 'run $A' } }],
    ['SHELL ["/bin/$A"]', { shell: ['/bin/$A'] }],
    ['ONBUILD RUN echo $A', { trigger: 'RUN echo $A' }],
    ['HEALTHCHECK CMD check $A', { test: { none: false, command: { form: 'shell', command: 'check $A' } } }],
    ['MAINTAINER $A', { value: '$A' }],
  ];
  it.each(cases)('%s', (text, expected) => {
    expect(expanded(text)).toMatchObject(expected);
  });

  it('leaves heredoc markers of COPY alone and keeps the bodies', () => {
    const copy = expanded('COPY <<EOF /etc/$A\nhello $A\nEOF');
    expect(copy).toMatchObject({
      sources: ['<<EOF'],
      destination: '/etc/alpha',
      heredocs: [{ name: 'EOF', content: 'hello $A\n', expand: true }],
    });
  });

  it('expands FROM image and --platform, keeps the stage name', () => {
    const df = parseDockerfile('ARG TAG=3.19\nFROM --platform=$PLAT alpine:${TAG} AS Build');
    const from = expandInstruction(
      df.stages[0]!.from,
      new Map([
        ['TAG', '3.20'],
        ['PLAT', 'linux/arm64'],
      ]),
      df.escape,
    );
    expect(from).toMatchObject({
      image: 'alpine:3.20',
      stageName: 'build',
      flags: [{ name: 'platform', value: 'linux/arm64' }],
      original: 'FROM --platform=linux/arm64 alpine:3.20 AS build',
    });
    expect(df.stages[0]!.from.image).toBe('alpine:${TAG}'); // the input is not mutated
  });

  it('honours the escape directive', () => {
    const df = parseDockerfile('# escape=`\nFROM scratch\nWORKDIR C:\\$A\\`$A');
    expect(expandInstruction(df.stages[0]!.instructions[0]!, vars, df.escape)).toMatchObject({
      value: 'C:\\alpha\\$A',
    });
  });

  const errors: Array<[string, number, RegExp]> = [
    ['FROM ${NOPE}', 1, /base name \(\$\{NOPE\}\) should not be blank/],
    ['FROM scratch\nWORKDIR ${A:x}', 2, /WORKDIR: failed to process "\$\{A:x\}": unsupported modifier/],
    ['FROM scratch\n\nCOPY "a b c', 3, /matching double-quote/],
    ['FROM scratch\nCOPY "a b" c', 2, /matching double-quote/],
    ['FROM scratch\nENV X="${REQ:?set REQ}"', 2, /REQ: set REQ/],
  ];
  it.each(errors)('names the line of %s', (text, line, message) => {
    const df = parseDockerfile(text);
    const stage = df.stages[0]!;
    const target = stage.instructions[0] ?? stage.from;
    let caught: unknown;
    try {
      expandInstruction(target, vars, df.escape);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StrataError);
    expect((caught as StrataError).code).toBe('DOCKERFILE_INVALID');
    expect((caught as StrataError).detail).toEqual({ line });
    expect((caught as StrataError).message).toMatch(new RegExp(`^Dockerfile:${line}: `));
    expect((caught as StrataError).message).toMatch(message);
  });
});
