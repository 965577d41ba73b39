#!/usr/bin/env bash
# test.sh - the test command: install what the tests need, then build and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run lint
npm test
