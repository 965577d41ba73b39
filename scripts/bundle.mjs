// bundle.mjs - bundles the compiled CLI (dist/src/cli/main.js) into one ESM file, dist/strata.mjs, which
// bin/strata.js loads: one file to read and compile instead of dozens, for a faster start (docs/adr/0005).
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/src/cli/main.js'],
  outfile: 'dist/strata.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // pino resolves worker files at run time; it is only loaded by `registry serve`, from node_modules.
  external: ['pino'],
  // CommonJS dependencies (commander) call require() for Node's built-ins; ESM output needs one to exist.
  banner: {
    js: "import { createRequire as __strataRequire } from 'node:module'; const require = __strataRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  logLevel: 'warning',
});
