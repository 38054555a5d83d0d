#!/usr/bin/env bash
# The MCP reference server (npm `@modelcontextprotocol/server-everything`), which the MCP client
# tests start over stdio, installed with npm into the git-ignored cache; prints the path of its
# executable (run it with the argument `stdio`).
#
#   scripts/mcp_everything.sh   # install once (idempotent), print the executable
#
# Honours $VOXLOOP_MCP_EVERYTHING (an existing executable is used as is) and $VOXLOOP_CACHE
# (default ./.cache). Needs node and npm (Debian's, node 20).
set -euo pipefail

# Bump to move to another release: it installs into a new directory.
VERSION=2026.8.31

if [[ -n "${VOXLOOP_MCP_EVERYTHING:-}" ]]; then
  echo "$VOXLOOP_MCP_EVERYTHING"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/mcp-server-everything-$VERSION"
bin="$dest/node_modules/.bin/mcp-server-everything"

npm_prefix() {
  npm install --no-audit --no-fund --silent "@modelcontextprotocol/server-everything@$VERSION" \
    --prefix "$1"
}
[[ -f "$dest/.complete" ]] ||
  echo "mcp_everything.sh: installing @modelcontextprotocol/server-everything@$VERSION into $dest" >&2
install_once "$dest" npm_prefix
echo "$bin"
