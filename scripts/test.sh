#!/usr/bin/env bash
# test.sh - the test command: install what the tests need, lint, build, run the whole suite, and end with the
# plain summary line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run lint
npm run build
results=$(mktemp)
set +e
npx vitest run --reporter=default --reporter=json --outputFile="$results"
status=$?
set -e
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$results" || true
rm -f "$results"
exit $status
