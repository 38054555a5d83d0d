#!/usr/bin/env bash
# Prints the path of ONNX Runtime's shared library (libonnxruntime.so) for voice-profile
# extraction (the CAM++ speaker model and the S3 speech tokenizer of the token2wav release),
# fetching it first if needed. Idempotent; needs no root: everything lands under $VOXLOOP_CACHE
# (default ./.cache).
#
#   ORT_DYLIB_PATH=/path/libonnxruntime.so   use that library as it is (nothing is downloaded)
#
# Source: the PyPI wheel `onnxruntime`, which carries libonnxruntime.so next to its Python
# bindings. Only the wheel is downloaded and the one library taken out; nothing is installed.
# voxloop loads it at run time (the `ort` crate's load-dynamic mode), so a build never needs it.
set -euo pipefail

ORT_VERSION=1.32.0

if [[ -n "${ORT_DYLIB_PATH:-}" ]]; then
  if [[ ! -f "$ORT_DYLIB_PATH" ]]; then
    echo "onnxruntime.sh: ORT_DYLIB_PATH=$ORT_DYLIB_PATH is not a file" >&2
    exit 1
  fi
  echo "$ORT_DYLIB_PATH"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/onnxruntime-$ORT_VERSION"
lib="$dest/libonnxruntime.so.$ORT_VERSION"

if [[ -f "$dest/.complete" && -f "$lib" ]]; then
  echo "$lib"
  exit 0
fi

say() { echo "onnxruntime.sh: $*" >&2; }
wheels="$cache/wheels"
mkdir -p "$wheels"
whl=$(ls "$wheels"/onnxruntime-"$ORT_VERSION"-*.whl 2>/dev/null | sort | tail -n 1 || true)
if [[ -z "$whl" ]]; then
  say "downloading onnxruntime==$ORT_VERSION (~28 MB, once)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" \
    "onnxruntime==$ORT_VERSION" >&2
  whl=$(ls "$wheels"/onnxruntime-"$ORT_VERSION"-*.whl | sort | tail -n 1)
fi
work=$(mktemp -d "$cache/onnxruntime.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT
unzip -q -j "$whl" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$work"
echo "$ORT_VERSION (from the PyPI wheel $(basename "$whl"))" > "$work/.complete"
rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
echo "$lib"
