#!/usr/bin/env bash
# Prints the path of libfaketime.so.1 (the LD_PRELOAD library that makes a process see another
# wall-clock time), building it first if needed. Idempotent; needs no root: a build lands under
# $VOXLOOP_CACHE (default ./.cache). Used by scripts/date_check.sh.
#
#   VOXLOOP_LIBFAKETIME=/path/libfaketime.so.1   use that library as it is
#
# Order: $VOXLOOP_LIBFAKETIME, Debian's libfaketime package (installed by .ci/run when it runs
# as root), else the libfaketime C sources that PyPI's `libfaketime` sdist vendors, compiled
# with the system C compiler (a few seconds; only the sdist is downloaded, nothing installed).
set -euo pipefail

PACKAGE_VERSION=3.0.1

if [[ -n "${VOXLOOP_LIBFAKETIME:-}" ]]; then
  if [[ ! -f "$VOXLOOP_LIBFAKETIME" ]]; then
    echo "faketime.sh: VOXLOOP_LIBFAKETIME=$VOXLOOP_LIBFAKETIME does not exist" >&2
    exit 1
  fi
  echo "$VOXLOOP_LIBFAKETIME"
  exit 0
fi

for system in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 \
  /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
  if [[ -f "$system" ]]; then
    echo "$system"
    exit 0
  fi
done

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/libfaketime-$PACKAGE_VERSION"
if [[ -f "$dest/libfaketime.so.1" ]]; then
  echo "$dest/libfaketime.so.1"
  exit 0
fi

work=$(mktemp -d "$cache/libfaketime.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "faketime.sh: building libfaketime $PACKAGE_VERSION from PyPI's libfaketime sdist" >&2
"$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" \
  "libfaketime==$PACKAGE_VERSION" >&2
tar -xzf "$work/libfaketime-$PACKAGE_VERSION.tar.gz" -C "$work"
src="$work/libfaketime-$PACKAGE_VERSION/libfaketime/vendor/libfaketime/src"
make -C "$src" libfaketime.so.1 >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  exit 1
}
mkdir -p "$dest"
cp "$src/libfaketime.so.1" "$dest/"
echo "$dest/libfaketime.so.1"
