import { describe, expect, it } from 'vitest';
import { matchGoPattern } from '../../src/engine/build/copy/match.js';
import { hasCode } from '../../src/engine/errors.js';

// Go's path/filepath match_test.go cases (pattern, name, match, bad pattern).
const cases: Array<[string, string, boolean, boolean?]> = [
  ['abc', 'abc', true],
  ['*', 'abc', true],
  ['*c', 'abc', true],
  ['a*', 'a', true],
  ['a*', 'abc', true],
  ['a*', 'ab/c', false],
  ['a*/b', 'abc/b', true],
  ['a*/b', 'a/c/b', false],
  ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
  ['a*b?c*x', 'abxbbxdbxebxczzx', true],
  ['a*b?c*x', 'abxbbxdbxebxczzy', false],
  ['ab[c]', 'abc', true],
  ['ab[b-d]', 'abc', true],
  ['ab[e-g]', 'abc', false],
  ['ab[^c]', 'abc', false],
  ['ab[^b-d]', 'abc', false],
  ['ab[^e-g]', 'abc', true],
  ['a\\*b', 'a*b', true],
  ['a\\*b', 'ab', false],
  ['a?b', 'a☺b', true],
  ['a[^a]b', 'a☺b', true],
  ['a???b', 'a☺b', false],
  ['a[^a][^a][^a]b', 'a☺b', false],
  ['[a-ζ]*', 'α', true],
  ['*[a-ζ]', 'A', false],
  ['a?b', 'a/b', false],
  ['a*b', 'a/b', false],
  ['[\\]a]', ']', true],
  ['[\\-]', '-', true],
  ['[x\\-]', 'x', true],
  ['[x\\-]', '-', true],
  ['[x\\-]', 'z', false],
  ['[\\-x]', 'x', true],
  ['[\\-x]', '-', true],
  ['[\\-x]', 'a', false],
  ['[]a]', ']', false, true],
  ['[-]', '-', false, true],
  ['[x-]', 'x', false, true],
  ['[x-]', '-', false, true],
  ['[x-]', 'z', false, true],
  ['[-x]', 'x', false, true],
  ['[-x]', '-', false, true],
  ['[-x]', 'a', false, true],
  ['\\', 'a', false, true],
  ['[a-b-c]', 'a', false, true],
  ['[', 'a', false, true],
  ['[^', 'a', false, true],
  ['[^bc', 'a', false, true],
  ['a[', 'a', false, true],
  ['a[', 'ab', false, true],
  ['a[', 'x', false, true],
  ['a/b[', 'x', false, true],
  ['*x', 'xxx', true],
  // the COPY globs of the brief
  ['*.txt', 'notes.txt', true],
  ['*.txt', 'notes.txt.bak', false],
  ['[ab].c', 'a.c', true],
  ['[ab].c', 'c.c', false],
  // Go: `!` does not negate a class (only `^` does)
  ['[!x]', '!', true],
  ['[!x]', 'y', false],
];

describe('matchGoPattern (Go filepath.Match)', () => {
  it.each(cases)('%j vs %j → %s', (pattern, name, want, badPattern) => {
    if (badPattern) {
      let err: unknown;
      try {
        matchGoPattern(pattern, name);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, 'INVALID_ARGUMENT')).toBe(true);
    } else expect(matchGoPattern(pattern, name)).toBe(want);
  });
});
