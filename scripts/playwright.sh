#!/usr/bin/env bash
# playwright-core from npm (the library only: it drives the machine's Chromium and never
# downloads a browser), installed into the git-ignored cache for the browser page test
# (tests/page.rs); prints the node_modules directory to put on NODE_PATH.
#
#   scripts/playwright.sh   # install once (idempotent), print the node_modules directory
#
# Honours $VOXLOOP_PLAYWRIGHT (an existing directory is used as is) and $VOXLOOP_CACHE (default
# ./.cache). Needs node and npm (Debian's, node 20). The browser is Debian's `chromium`, which
# .ci/run installs as root; see tests/page.rs.
set -euo pipefail

# Bump to move to another release: it installs into a new directory.
VERSION=1.65.2

if [[ -n "${VOXLOOP_PLAYWRIGHT:-}" ]]; then
  echo "$VOXLOOP_PLAYWRIGHT"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
npm_install_once playwright-core "playwright-core@$VERSION"
