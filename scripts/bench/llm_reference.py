#!/usr/bin/env python3
"""Reference side of the speech-LLM benchmark: transformers' Qwen2ForCausalLM on a checkpoint dir.

Called by `cargo bench -p voxloop-core --bench llm` (core/benches/llm.rs), which writes a random
checkpoint in the official Step-Audio 2 layout, times voxloop on it, then runs this script on the
same files with the same thread count, prompt length and decode length, and prints both figures
and their ratio. Can also be run by hand:

    .cache/refenv/bin/python scripts/bench/llm_reference.py CHECKPOINT_DIR \
        --threads 2 --prompt-tokens 256 --decode-tokens 64 --repeats 3

Prints one JSON object on its last line:
{"prefill_tok_s": ..., "decode_tok_s": ..., "torch": ..., "transformers": ..., ...}.

What is timed, exactly as the Rust side times voxloop: only the text decoder (the audio encoder
is not run), in float32 on the CPU, under torch.inference_mode(), with a manual loop so that no
generate() bookkeeping is counted:
- prefill: one forward over `--prompt-tokens` random ids into an empty cache, computing the
  logits of the last position only (`logits_to_keep=1`, as transformers' generate() does);
- decode: `--decode-tokens` greedy steps, each one forward of the previous argmax with the KV
  cache, then the argmax of its logits.
After one warm-up, each is run `--repeats` times on a fresh cache; the best run is reported.
Needs transformers >= 5 (the `cache=` argument; older versions call it `past_key_values`).
"""
import argparse
import json
import pathlib
import time

import torch
import transformers
from safetensors.torch import load_file


def load_decoder(ckpt: pathlib.Path) -> transformers.Qwen2ForCausalLM:
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    text = json.loads((ckpt / "config.json").read_text())["text_config"]
    tied = bool(text.get("tie_word_embeddings", False))
    qwen_config = transformers.Qwen2Config(
        vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"], num_hidden_layers=text["num_hidden_layers"],
        num_attention_heads=text["num_attention_heads"],
        num_key_value_heads=text.get("num_key_value_heads", text.get("num_attention_groups")),
        max_position_embeddings=text["max_position_embeddings"], rms_norm_eps=text["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": text["rope_theta"]},
        tie_word_embeddings=tied,
    )
    # Built on the meta device (no random init), then the checkpoint's tensors are assigned.
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(qwen_config)
    state = {}
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    for shard in shards:
        for name, tensor in load_file(ckpt / shard).items():
            if name.startswith("model.") or name.startswith("lm_head."):
                state[name] = tensor.float()
    model.load_state_dict(state, strict=not tied, assign=True)
    if tied:
        model.tie_weights()
    # The RoPE tables are not in the checkpoint (non-persistent buffers): compute them on the CPU.
    model.model.rotary_emb = Qwen2RotaryEmbedding(config=qwen_config)
    return model.eval()


def run_once(model, prompt: torch.Tensor, steps: int) -> tuple[float, float]:
    """Seconds for one prefill of `prompt` and for `steps` greedy decode steps after it."""
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    prefill_s = time.perf_counter() - start

    cache = out.cache
    token = out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache = out.cache
        token = out.logits[:, -1:].argmax(-1)
    decode_s = time.perf_counter() - start

    # The cache must have grown by every step, or the decode timing measured something else.
    held = cache.get_seq_length()
    expected = prompt.shape[1] + steps
    assert held == expected, f"the KV cache holds {held} positions, expected {expected}"
    return prefill_s, decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_decoder(args.checkpoint)
    load_s = time.perf_counter() - start
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (1, args.prompt_tokens), generator=generator)

    prefill, decode = [], []
    with torch.inference_mode():
        run_once(model, prompt[:, :8], 2)  # warm-up
        for _ in range(args.repeats):
            p, d = run_once(model, prompt, args.decode_tokens)
            prefill.append(p)
            decode.append(d)

    print(json.dumps({
        "prefill_tok_s": args.prompt_tokens / min(prefill),
        "decode_tok_s": args.decode_tokens / min(decode),
        "prefill_s": prefill,
        "decode_s": decode,
        "load_s": load_s,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
    }))


if __name__ == "__main__":
    main()
