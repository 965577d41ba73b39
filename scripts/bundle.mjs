// bundle.mjs - bundles the compiled CLI (dist/src/cli/main.js) into dist/bundle/strata.js (plus chunks
// loaded on first use), which bin/strata.js loads: a faster start (docs/adr/0005).
import { build } from 'esbuild';
import { BUNDLE_EXTERNALS } from './bundle-externals.mjs';

await build({
  entryPoints: { strata: 'dist/src/cli/main.js' },
  outdir: 'dist/bundle',
  // Dynamic imports become chunks loaded on first use: a verb parses only the code it runs.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Loaded from node_modules at run time (see bundle-externals.mjs).
  external: BUNDLE_EXTERNALS,
  // CommonJS dependencies (commander) call require() for Node's built-ins; ESM output needs one to exist.
  banner: {
    js: "import { createRequire as __strataRequire } from 'node:module'; const require = __strataRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  logLevel: 'warning',
});
