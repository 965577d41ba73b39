#!/usr/bin/env node
// Launcher: runs the CLI compiled to dist/ by `npm run build` and turns its result into the exit code.
let settled = false;
process.on('exit', (code) => {
  // The event loop emptied while the command was still pending: a bug, never a silent success.
  if (!settled && code === 0) {
    process.stderr.write('strata: internal error: the command ended without finishing\n');
    process.exitCode = 70;
  }
});
import('../dist/bundle/strata.js')
  .then((cli) => cli.run(process.argv))
  .then(
    (code) => {
      settled = true;
      process.exitCode = code;
    },
    (err) => {
      settled = true;
      if (
        err &&
        err.code === 'ERR_MODULE_NOT_FOUND' &&
        String(err.message).includes('dist/bundle/strata.js')
      ) {
        process.stderr.write('strata: not built yet; run `npm run build` first\n');
      } else {
        process.stderr.write(`strata: ${err && err.stack ? err.stack : err}\n`);
      }
      process.exitCode = 1;
    },
  );
