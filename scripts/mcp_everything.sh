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
modules=$(npm_install_once mcp-server-everything "@modelcontextprotocol/server-everything@$VERSION")
echo "$modules/.bin/mcp-server-everything"
