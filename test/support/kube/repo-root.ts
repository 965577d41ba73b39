/**
 * The repository's root, found from this file whether it runs from test/ (vitest) or compiled under dist/ (the
 * benchmark and the quickstart's operator act): the nearest directory upwards whose package.json is Strata's.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function find(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'strata')
      return dir;
    const up = dirname(dir);
    if (up === dir)
      throw new Error('the Strata repository root was not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** The repository root directory. */
export const REPO_ROOT = find();
