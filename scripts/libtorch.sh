#!/usr/bin/env bash
# Prints the path of a libtorch 2.13.0 directory ({include,lib}) for tch 0.26, building it first
# if needed. Idempotent; needs no root: everything lands under $VOXLOOP_CACHE (default ./.cache).
#
#   LIBTORCH=/path            use that libtorch as it is (nothing is downloaded)
#   VOXLOOP_TORCH=auto        (default) cuda where `nvidia-smi -L` lists a GPU, else cpu
#   VOXLOOP_TORCH=cpu         CPU-only libtorch assembled from the PyPI torch wheel
#   VOXLOOP_TORCH=cuda        CUDA libtorch: the torch wheel with its NVIDIA dependencies,
#                             installed with pip into the cache (several GB; needs an NVIDIA driver)
#
# Why the CPU variant is assembled by hand: the PyPI wheel is a CUDA build. libtorch_cpu.so
# only needs libcudart/libcupti (two small wheels) to load, but if libtorch_cuda.so sits in lib/
# torch-sys links it and the binary then wants cuBLAS/cuDNN at start-up. So lib/ gets exactly
# the CPU libraries plus those two.
set -euo pipefail

TORCH_VERSION=2.13.0
if [[ -n "${LIBTORCH:-}" ]]; then
  if [[ ! -d "$LIBTORCH/lib" || ! -d "$LIBTORCH/include" ]]; then
    echo "libtorch.sh: LIBTORCH=$LIBTORCH has no lib/ and include/ directories" >&2
    exit 1
  fi
  echo "$LIBTORCH"
  exit 0
fi

# shellcheck source=scripts/cache.sh
source "$(dirname "$0")/cache.sh"
variant=${VOXLOOP_TORCH:-auto}

say() { echo "libtorch.sh: $*" >&2; }

if [[ "$variant" == auto ]]; then
  # A working driver is what CUDA libtorch needs; without one the CPU build is all that runs.
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    variant=cuda
    [[ -f "$cache/libtorch-$TORCH_VERSION-cuda/.complete" ]] || say "an NVIDIA GPU is present: using CUDA libtorch (VOXLOOP_TORCH=cpu for the CPU build)"
  else
    variant=cpu
  fi
fi

case "$variant" in
  cpu)
    dest="$cache/libtorch-$TORCH_VERSION-cpu"
    if [[ -f "$dest/.complete" ]]; then echo "$dest"; exit 0; fi
    wheels="$cache/wheels"
    mkdir -p "$wheels"
    say "downloading torch==$TORCH_VERSION (~530 MB, once) and the CUDA runtime stubs it needs to load"
    "$python" -m pip download --quiet --no-deps --dest "$wheels" \
      "torch==$TORCH_VERSION" "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*" >&2
    work=$(mktemp -d "$cache/libtorch.partial.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    say "unpacking into $dest"
    whl() { ls "$wheels"/$1 | sort | tail -n 1; }
    unzip -q "$(whl "torch-$TORCH_VERSION-*.whl")" 'torch/include/*' 'torch/lib/*' -d "$work/torch"
    unzip -q -j "$(whl 'nvidia_cuda_runtime-13.0.96-*.whl')" '*/libcudart.so.13' -d "$work/cuda"
    unzip -q -j "$(whl 'nvidia_cuda_cupti-13.0.85-*.whl')" '*/libcupti.so.13' -d "$work/cuda"
    mkdir -p "$work/out/lib"
    mv "$work/torch/torch/include" "$work/out/include"
    for lib in libtorch.so libtorch_cpu.so libc10.so libgomp.so.1 libshm.so; do
      mv "$work/torch/torch/lib/$lib" "$work/out/lib/"
    done
    mv "$work/cuda/libcudart.so.13" "$work/cuda/libcupti.so.13" "$work/out/lib/"
    echo "$TORCH_VERSION cpu (assembled from the PyPI wheel)" > "$work/out/.complete"
    rm -rf "$dest"
    mv "$work/out" "$dest"
    echo "$dest"
    ;;
  cuda)
    dest="$cache/libtorch-$TORCH_VERSION-cuda"
    if [[ -f "$dest/.complete" ]]; then echo "$dest/torch"; exit 0; fi
    say "installing torch==$TORCH_VERSION with its CUDA dependencies into $dest (several GB, once)"
    rm -rf "$dest.partial"
    "$python" -m pip install --quiet --no-compile --target "$dest.partial" "torch==$TORCH_VERSION" >&2
    # The wheel's libraries find the NVIDIA libraries through their own $ORIGIN-relative rpaths.
    touch "$dest.partial/.complete"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    echo "$dest/torch"
    ;;
  *)
    say "VOXLOOP_TORCH must be 'auto', 'cpu' or 'cuda', not '$variant'"
    exit 1
    ;;
esac
