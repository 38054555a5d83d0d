# Sourced by the scripts that fetch into the git-ignored cache: sets `root` (the repository),
# `cache` (absolute and created: $VOXLOOP_CACHE, default ./.cache) and `python` ($PYTHON,
# default python3).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VOXLOOP_CACHE:-$root/.cache}
python=${PYTHON:-python3}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# install_once DEST COMMAND...: unless DEST is complete, runs COMMAND with the directory to fill
# appended as its last argument (DEST.partial), then moves it to DEST and marks it complete, so
# an interrupted install never looks finished. Its output goes to stderr.
install_once() {
  local dest=$1
  shift
  [[ -f "$dest/.complete" ]] && return 0
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  "$@" "$dest.partial" >&2
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  touch "$dest/.complete"
}

# npm_install_once NAME PACKAGE@VERSION: installs an npm package (with its dependencies, never a
# browser download) once into $cache/NAME-VERSION; prints that directory's node_modules.
npm_install_once() {
  local name=$1 spec=$2
  local dest="$cache/$name-${spec##*@}"
  [[ -f "$dest/.complete" ]] || echo "$(basename "$0"): installing $spec into $dest" >&2
  npm_prefix() {
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent "$spec" --prefix "$1"
  }
  install_once "$dest" npm_prefix
  echo "$dest/node_modules"
}
