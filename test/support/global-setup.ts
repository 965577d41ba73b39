import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Fails fast when the CLI was not built (the test script builds it first: `npm test`). */
export default function setup(): void {
  const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run the tests with \`npm test\` (it builds first)`);
}
