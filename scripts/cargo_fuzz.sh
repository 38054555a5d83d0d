#!/usr/bin/env bash
# cargo-fuzz (libFuzzer for Rust), installed with `cargo install` into the git-ignored cache;
# prints the directory holding the `cargo-fuzz` executable (put it on PATH). The fuzz targets
# build with the nightly toolchain, which this checks for.
#
#   scripts/cargo_fuzz.sh   # install once (idempotent), print the bin directory
#
# Honours $VOXLOOP_CACHE (default ./.cache).
set -euo pipefail

# Bump to move to another release: it installs into a new directory.
VERSION=0.13.2

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "$(basename "$0"): the fuzz targets need the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
dest="$cache/cargo-fuzz-$VERSION"
[[ -f "$dest/.complete" ]] || echo "$(basename "$0"): installing cargo-fuzz $VERSION into $dest" >&2
install_cargo_fuzz() {
  cargo install --quiet --locked cargo-fuzz --version "$VERSION" --root "$1"
}
install_once "$dest" install_cargo_fuzz
echo "$dest/bin"
