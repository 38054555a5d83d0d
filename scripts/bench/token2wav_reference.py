#!/usr/bin/env python3
"""Reference side of the token2wav benchmark: StepFun's upstream token2wav on full-size weights.

Called by `cargo bench -p voxloop-voices --bench token2wav` (voices/benches/token2wav.rs) in two
ways; both can also be run by hand with the reference env:

    .cache/refenv/bin/python scripts/bench/token2wav_reference.py write DIR \
        [--prompt-tokens 50] [--tokens 250]
    .cache/refenv/bin/python scripts/bench/token2wav_reference.py time DIR \
        [--threads 2] [--repeats 2] [--mel-out FILE]

`write` builds the flow and the vocoder with the upstream classes of the PyPI package
`token2wav-cosyvoice-stepaudio2` at the official Step-Audio-2-mini sizes, fills them with random
weights (fixed seeds) and writes, as the official `token2wav/` directory holds them:

- flow.yaml   the official hyper-parameters in the official hyperpyyaml layout (the flow is then
              built from this file with hyperpyyaml, as upstream's Token2wav does);
- flow.pt     torch.save(flow.state_dict())                      (≈ 620 MB)
- hift.pt     torch.save of HiFTGenerator()'s state dict with the `generator.` prefix (≈ 80 MB)
- inputs.safetensors  the scenario both sides render: prompt_tokens [P] i64, prompt_mel
              [1, 2P, 80], spk_emb [1, 192], tokens [N] i64 (the "generated" speech tokens), and
              flow_noise [1, 80, 1000] (the first frames of the CFM's rand_noise buffer, so that
              both sides start the ODE from the same noise).

`time` loads that directory the way upstream `Token2wav.__init__` does (hyperpyyaml flow.yaml,
strict load_state_dict of flow.pt, HiFTGenerator() + hift.pt without the prefix) and times, in
float32 on the CPU under torch.inference_mode() with `--threads` threads:

- offline: upstream `Token2wav.__call__(tokens, prompt_wav)` (flow.inference, then HiFT);
- streaming: upstream's streaming client — `set_stream_cache(prompt_wav)`, then
  `stream(buffer[:28])` while 28 tokens are buffered, dropping 25 each time, then
  `stream(rest, last_chunk=True)` — with `return_waveform=True` (float samples); the first-chunk
  latency runs from the call of set_stream_cache to the return of the first chunk.

Each is run once on the first 53 tokens as a warm-up, then `--repeats` times; the best run of
each is reported. The upstream methods run unchanged; what a CPU-only run without the ONNX models
needs is patched around them, as in scripts/fixtures/token2wav.py (whose helpers are reused):
`device='cuda'` becomes the CPU, `_prepare_prompt` returns the precomputed prompt of
inputs.safetensors (the S3 tokenizer and CAM++ are not part of token2wav's synthesis time; voxloop
gets the same prompt as a VoiceProfile), and `torchaudio.save` in `__call__` (the WAV container)
writes the raw float samples. Prints one JSON object on its last line.
"""
import argparse
import contextlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "token2wav_fixture", ROOT / "scripts/fixtures/token2wav.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # registers the upstream package with its import stubs

from hyperpyyaml import load_hyperpyyaml  # noqa: E402

t2w_mod = fx.t2w_mod
HiFTGenerator = fx.hifigan.HiFTGenerator

# The official Step-Audio-2-mini token2wav/flow.yaml hyper-parameters (as stepfun-ai/Step-Audio2
# token2wav.py builds them).
ENC = dict(
    input_size=512, output_size=512, input_layer="linear", pre_lookahead_len=3, num_blocks=6,
    num_up_blocks=4, up_stride=2, up_scale_factor=2, attention_heads=8,
    pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", key_bias=True,
    linear_units=2048, dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1,
    normalize_before=True,
)
DIT = dict(in_channels=320, out_channels=80, mlp_ratio=4.0, depth=16, num_heads=8, head_dim=64,
           hidden_size=512)
FLOW = dict(input_size=512, output_size=80, spk_embed_dim=192, output_type="mel", vocab_size=6561)
CFG_RATE = 0.7
NOISE_FRAMES = 1000
CHUNK, LOOKAHEAD = 25, 3
WARMUP_TOKENS = 53


def flow_yaml() -> str:
    text = fx.FLOW_YAML.format(**FLOW, e=ENC, d=DIT, cfg=CFG_RATE)
    first, rest = text.split("\n", 1)
    assert first.startswith("# Tiny test configuration"), first
    return "# Benchmark configuration: the official Step-Audio-2-mini token2wav/flow.yaml sizes.\n" + rest


def load_flow(path: Path) -> torch.nn.Module:
    t2w_mod._setup_cosyvoice2_alias()
    with open(path) as f:
        return load_hyperpyyaml(f)["flow"]


def write(args) -> None:
    out = args.dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow.yaml").write_text(flow_yaml())
    torch.manual_seed(1234)  # the CFM's rand_noise buffer comes from the global RNG
    flow = load_flow(out / "flow.yaml")
    assert len(flow.decoder.estimator.blocks) == DIT["depth"]
    fx.randomize(flow, torch.Generator().manual_seed(7))
    torch.save(flow.eval().state_dict(), out / "flow.pt")

    torch.manual_seed(99)
    hift = HiFTGenerator()
    fx.randomize(hift, torch.Generator().manual_seed(11), small=("conv_post",))
    with torch.no_grad():
        # as the fixture: f0 in a speech range (mostly voiced), moderate iSTFT magnitudes
        hift.f0_predictor.classifier.bias.fill_(60.0)
        hift.f0_predictor.classifier.weight.mul_(60.0)
        hift.conv_post.bias[:9] -= 2.5
    torch.save({"generator." + k: v for k, v in hift.state_dict().items()}, out / "hift.pt")

    g = torch.Generator().manual_seed(2024)
    save_file(
        {
            "prompt_tokens": torch.randint(0, FLOW["vocab_size"], (args.prompt_tokens,), generator=g),
            "tokens": torch.randint(0, FLOW["vocab_size"], (args.tokens,), generator=g),
            "prompt_mel": torch.randn(1, 2 * args.prompt_tokens, 80, generator=g) * 1.5 - 5.0,
            "spk_emb": torch.randn(1, 192, generator=g),
            "flow_noise": flow.decoder.rand_noise[:, :, :NOISE_FRAMES].clone().contiguous(),
        },
        out / "inputs.safetensors",
    )
    params = sum(p.numel() for p in flow.parameters()), sum(p.numel() for p in hift.parameters())
    print(json.dumps({"flow_params": params[0], "hift_params": params[1],
                      "bytes": sum(p.stat().st_size for p in out.iterdir())}))


class RawAudio:
    """Stands in for `torchaudio` inside upstream token2wav.py: `save` writes the raw samples."""

    @staticmethod
    def save(buffer, wav, sample_rate, format):  # noqa: A002 (upstream's keyword)
        buffer.write(wav.numpy().tobytes())


def load_token2wav(d: Path, inputs: dict) -> "t2w_mod.Token2wav":
    """Token2wav.__init__ without the ONNX models, on the CPU."""
    t2w_mod.torch = fx.CpuTorch()
    t2w_mod.torchaudio = RawAudio()
    t2w = object.__new__(t2w_mod.Token2wav)
    t2w.float16 = False
    t2w.n_timesteps = 10
    t2w.flow = load_flow(d / "flow.yaml")
    t2w.flow.load_state_dict(torch.load(d / "flow.pt", map_location="cpu", weights_only=True),
                             strict=True)
    t2w.flow.eval()
    t2w.hift = HiFTGenerator()
    state = torch.load(d / "hift.pt", map_location="cpu", weights_only=True)
    t2w.hift.load_state_dict({k.replace("generator.", ""): v for k, v in state.items()}, strict=True)
    t2w.hift.eval()
    t2w.cache = None
    t2w.mel_cache_len = 8
    t2w.source_cache_len = int(t2w.mel_cache_len * 480)
    t2w.speech_window = torch.from_numpy(np.hamming(2 * t2w.source_cache_len))
    t2w.hift_cache_dict = {}

    noise = inputs["flow_noise"]
    t2w.flow.decoder.rand_noise[:, :, : noise.shape[2]] = noise
    n = inputs["prompt_tokens"].shape[0]
    prompt = (
        inputs["prompt_tokens"].int().unsqueeze(0), torch.tensor([n], dtype=torch.int32),
        inputs["spk_emb"], inputs["prompt_mel"], torch.tensor([2 * n], dtype=torch.int32),
    )
    t2w._prepare_prompt = lambda _wav: prompt
    return t2w


def offline(t2w, tokens: list) -> tuple[float, int]:
    start = time.perf_counter()
    wav = t2w(tokens, None)
    return time.perf_counter() - start, len(wav) // 4


def streaming(t2w, tokens: list, mels: list | None) -> tuple[float, float, int]:
    """Upstream's streaming client on tokens that are all available; returns (total seconds,
    first-chunk seconds, samples)."""
    real_chunk = t2w.flow.inference_chunk
    if mels is not None:
        def recording_chunk(*a, **kw):
            feat, cache = real_chunk(*a, **kw)
            mels.append(feat)
            return feat, cache
        t2w.flow.inference_chunk = recording_chunk
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # set_stream_cache prints the prompt sizes
            t2w.stream_cache, t2w.hift_cache_dict = t2w.set_stream_cache(None)
        first, samples, buffer = None, 0, tokens
        while len(buffer) >= CHUNK + LOOKAHEAD:
            samples += t2w.stream(buffer[: CHUNK + LOOKAHEAD], None, return_waveform=True).shape[1]
            if first is None:
                first = time.perf_counter() - start
            buffer = buffer[CHUNK:]
        samples += t2w.stream(buffer, None, last_chunk=True, return_waveform=True).shape[1]
        total = time.perf_counter() - start
    finally:
        t2w.flow.inference_chunk = real_chunk
    return total, total if first is None else first, samples


def time_all(args) -> None:
    torch.set_num_threads(args.threads)
    inputs = load_file(args.dir / "inputs.safetensors")
    start = time.perf_counter()
    t2w = load_token2wav(args.dir, inputs)
    load_s = time.perf_counter() - start
    tokens = inputs["tokens"].tolist()
    runs = {"offline_s": [], "stream_s": [], "first_chunk_s": []}
    mels = [] if args.mel_out else None
    with torch.inference_mode():
        offline(t2w, tokens[:WARMUP_TOKENS])
        streaming(t2w, tokens[:WARMUP_TOKENS], None)
        for i in range(args.repeats):
            seconds, offline_samples = offline(t2w, tokens)
            runs["offline_s"].append(seconds)
            total, first, stream_samples = streaming(t2w, tokens, mels if i == 0 else None)
            runs["stream_s"].append(total)
            runs["first_chunk_s"].append(first)
    if args.mel_out:
        save_file({"stream_mel": torch.cat(mels, dim=2).contiguous()}, args.mel_out)
    print(json.dumps({
        **{k: min(v) for k, v in runs.items()},
        "runs": runs,
        "offline_samples": offline_samples,
        "stream_samples": stream_samples,
        "load_s": load_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write full-size random weights and the inputs")
    w.add_argument("dir", type=Path)
    w.add_argument("--prompt-tokens", type=int, default=50)
    w.add_argument("--tokens", type=int, default=250)
    t = sub.add_parser("time", help="time upstream token2wav on a written directory")
    t.add_argument("dir", type=Path)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--mel-out", type=Path, help="save the first streaming run's chunk mels")
    args = parser.parse_args()
    write(args) if args.command == "write" else time_all(args)


if __name__ == "__main__":
    main()
