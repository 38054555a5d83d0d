#!/usr/bin/env bash
# Prints the path of the Silero VAD model (silero_vad.onnx: 16 kHz and 8 kHz voice activity
# detection) for the realtime front door's turn detection, fetching it first if needed.
# Idempotent; needs no root: everything lands under $VOXLOOP_CACHE (default ./.cache).
#
#   VOXLOOP_SILERO_VAD=/path/silero_vad.onnx   use that file as it is (nothing is downloaded)
#
# Source: the PyPI wheel `silero-vad` (snakers4/silero-vad), which ships the model under
# silero_vad/data/. Only the wheel is downloaded and the one file taken out; nothing is
# installed. voxloop runs it on the ONNX Runtime of scripts/onnxruntime.sh.
set -euo pipefail

PACKAGE_VERSION=6.2.3
MODEL=silero_vad.onnx

if [[ -n "${VOXLOOP_SILERO_VAD:-}" ]]; then
  if [[ ! -f "$VOXLOOP_SILERO_VAD" ]]; then
    echo "silero_vad.sh: VOXLOOP_SILERO_VAD=$VOXLOOP_SILERO_VAD is not a file" >&2
    exit 1
  fi
  echo "$VOXLOOP_SILERO_VAD"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/models/silero-vad-$PACKAGE_VERSION"
model="$dest/$MODEL"

if [[ -f "$dest/.complete" && -f "$model" ]]; then
  echo "$model"
  exit 0
fi

say() { echo "silero_vad.sh: $*" >&2; }
wheels="$cache/wheels"
mkdir -p "$wheels" "$cache/models"

# Fills the directory given last (install_once's DEST.partial) with the one model file.
unpack_model() {
  local out=$1 whl
  whl=$(ls "$wheels"/silero_vad-"$PACKAGE_VERSION"-*.whl 2>/dev/null | sort | tail -n 1 || true)
  if [[ -z "$whl" ]]; then
    say "downloading silero-vad==$PACKAGE_VERSION (~11 MB, once)"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" \
      "silero-vad==$PACKAGE_VERSION"
    whl=$(ls "$wheels"/silero_vad-"$PACKAGE_VERSION"-*.whl | sort | tail -n 1)
  fi
  say "unpacking $MODEL into $dest"
  unzip -q -j "$whl" "silero_vad/data/$MODEL" -d "$out"
  [[ -f "$out/$MODEL" ]] || { say "the wheel $whl lacks silero_vad/data/$MODEL"; return 1; }
}
# A stale directory without the model (hand-edited) is filled again.
[[ -f "$model" ]] || rm -f "$dest/.complete"
install_once "$dest" unpack_model
echo "$model"
