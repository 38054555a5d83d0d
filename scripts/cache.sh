# Sourced by the scripts that fetch into the git-ignored cache: sets `root` (the repository),
# `cache` (absolute and created: $VOXLOOP_CACHE, default ./.cache) and `python` ($PYTHON,
# default python3).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VOXLOOP_CACHE:-$root/.cache}
python=${PYTHON:-python3}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
