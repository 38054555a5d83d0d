#!/usr/bin/env bash
# The official Python clients the front-door tests drive voxloop with (PyPI `mcp`, the MCP
# Python SDK; PyPI `openai`, the OpenAI Python SDK, for Chat Completions, with `websockets` for
# its realtime client: the `openai[realtime]` extra), installed with pip into the git-ignored
# cache; prints the directory to put on PYTHONPATH.
#
#   scripts/pyclients.sh        # install once (idempotent), print the directory
#
# Honours $VOXLOOP_PYCLIENTS (an existing directory is used as is), $VOXLOOP_CACHE (default
# ./.cache) and $PYTHON (default python3). `pip install --target` needs no venv module.
set -euo pipefail

# Bump together with the pins: a new list installs into a new directory.
PACKAGES=("mcp==2.3.0" "openai==3.51.0" "websockets==15.0.1")
STAMP=mcp2.3.0-openai3.51.0-websockets15.0.1

if [[ -n "${VOXLOOP_PYCLIENTS:-}" ]]; then
  echo "$VOXLOOP_PYCLIENTS"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/pyclients-$STAMP"

# pip's --target must come last: install_once appends the directory to fill.
pip_target() {
  "$python" -m pip install --quiet --disable-pip-version-check --no-compile "${PACKAGES[@]}" \
    --target "$1"
}
[[ -f "$dest/.complete" ]] || echo "pyclients.sh: installing ${PACKAGES[*]} into $dest" >&2
install_once "$dest" pip_target
echo "$dest"
