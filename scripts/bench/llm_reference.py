#!/usr/bin/env python3
"""Reference side of the speech-LLM benchmark: transformers' Qwen2ForCausalLM on a checkpoint dir.

Called by `cargo bench -p voxloop-core --bench llm` (core/benches/llm.rs), which writes a random
checkpoint in the official Step-Audio 2 layout, times voxloop on it, then runs this script on the
same files with the same thread count and prints both figures and their ratio. Can also be run by
hand:

    .cache/refenv/bin/python scripts/bench/llm_reference.py CHECKPOINT_DIR \
        --threads 2 --prompt-tokens 128 --decode-tokens 64

Prints one JSON object: {"prefill_tok_s": ..., "decode_tok_s": ..., "torch": ..., "transformers": ...}.
Only the text decoder is timed (prefill of token ids, then greedy decode with the KV cache), in
float32, under torch.inference_mode(), with a manual loop so no generate() overhead is counted.
"""
import argparse
import json
import pathlib
import time

import torch
import transformers
from safetensors.torch import load_file


def load_decoder(ckpt: pathlib.Path) -> transformers.Qwen2ForCausalLM:
    config = json.loads((ckpt / "config.json").read_text())
    text = dict(config["text_config"])
    text.pop("num_attention_groups", None)
    qwen_config = transformers.Qwen2Config(**text)
    qwen_config.tie_word_embeddings = False
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(qwen_config)
    state = {}
    index = ckpt / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    for shard in shards:
        for name, tensor in load_file(ckpt / shard).items():
            if name.startswith("model.") or name.startswith("lm_head."):
                state[name] = tensor.float()
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = load_decoder(args.checkpoint)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (1, args.prompt_tokens), generator=generator)

    with torch.inference_mode():
        # Warm-up: one short prefill and two decode steps.
        out = model(prompt[:, :8], use_cache=True)
        model(out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)

        start = time.perf_counter()
        out = model(prompt, use_cache=True)
        prefill_s = time.perf_counter() - start

        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            out = model(token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        decode_s = time.perf_counter() - start

    print(json.dumps({
        "prefill_tok_s": args.prompt_tokens / prefill_s,
        "decode_tok_s": args.decode_tokens / decode_s,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
