#!/usr/bin/env python3
"""Reference for the retrieval bench's embedding throughput: sentence-transformers' encode of
all-MiniLM-L6-v2 on the sentences the bench embeds.

The retrieval bench (retrieval/examples/bench.rs) embeds N synthetic sound descriptions with
voxloop's MiniLM on libtorch (batches of 32, libtorch's default threads: the core count) and
prints items/s. This script builds the same N descriptions (the same grammar and stride,
`description(i)` in that file) and times `SentenceTransformer.encode` on them with the same
model directory, batch 32 and the same thread count, so that the two figures compare:

    .cache/refenv/bin/python scripts/bench/minilm_reference.py 10000 --threads 2 \\
        --model-dir "$(scripts/minilm.sh)"

Needs torch and sentence-transformers (the reference env: `python3 -m venv .cache/refenv &&
.cache/refenv/bin/pip install torch==2.13.0 sentence-transformers`). Prints one line per run and
a JSON object last. Note that sentence-transformers sorts the texts by length before batching
(less padding); the Rust side batches them in order. The descriptions differ little in length.
"""
import argparse
import json
import os
import pathlib
import statistics
import time

SOURCES = [
    "dog", "cat", "rain", "thunder", "car engine", "train", "church bell", "piano", "guitar",
    "crowd", "wind", "ocean waves", "songbirds", "wooden door", "telephone", "alarm clock",
    "keyboard", "footsteps", "glass bottle", "campfire", "river", "helicopter", "motorcycle",
    "wall clock", "kettle", "baby", "old man", "young woman", "child", "choir", "violin",
    "drum kit", "subway train", "police siren", "fountain", "horse", "rooster", "frogs",
    "vacuum cleaner", "typewriter",
]
ACTIONS = [
    "barking", "ringing", "rumbling", "crashing", "whistling", "humming", "creaking", "clicking",
    "dripping", "buzzing", "laughing", "talking", "singing", "shouting", "whispering", "rattling",
    "roaring", "tapping", "splashing", "squeaking",
]
QUALITIES = [
    "distant", "loud", "soft", "muffled", "echoing", "close-up", "fast", "slow", "rhythmic",
    "intermittent", "steady", "faint", "harsh", "gentle", "deep", "high-pitched", "lo-fi", "crisp",
    "warm", "eerie",
]
PLACES = [
    "in a park", "in a small kitchen", "on a busy street", "in a cathedral", "at night",
    "underwater", "in a forest", "in an office", "in a tunnel", "at the beach", "in a cave",
    "on a farm", "in a stadium", "in a bathroom", "in a car", "on a rooftop", "in the rain",
    "in a library", "at a train station", "in the snow",
]


def description(i: int) -> str:
    """The i-th description, as `description` in retrieval/examples/bench.rs."""
    space = len(SOURCES) * len(ACTIONS) * len(QUALITIES) * len(PLACES)
    k = (i * 7919 + 13) % space
    s = SOURCES[k % len(SOURCES)]
    k //= len(SOURCES)
    a = ACTIONS[k % len(ACTIONS)]
    k //= len(ACTIONS)
    q = QUALITIES[k % len(QUALITIES)]
    k //= len(QUALITIES)
    p = PLACES[k % len(PLACES)]
    return f"{q} {s} {a} {p}"


def main() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("items", type=int, nargs="?", default=10000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=1, help="timed runs after a warm-up batch")
    ap.add_argument("--model-dir", type=pathlib.Path,
                    default=pathlib.Path(os.environ.get("VOXLOOP_MINILM_DIR",
                                                        root / ".cache/models/all-minilm-l6-v2")))
    args = ap.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = [description(i) for i in range(args.items)]
    if len(set(texts)) != len(texts):
        raise SystemExit("descriptions repeat: the grammar does not match the Rust bench")
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    with torch.inference_mode():
        model.encode(texts[: args.batch], batch_size=args.batch)
        rates = []
        for run in range(args.runs):
            start = time.perf_counter()
            vectors = model.encode(texts, batch_size=args.batch, normalize_embeddings=True)
            s = time.perf_counter() - start
            rates.append(args.items / s)
            print(f"run {run + 1}: {args.items} items in {s:.1f} s, {rates[-1]:.1f} items/s",
                  flush=True)
    load = " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps({
        "items": args.items, "batch": args.batch, "threads": args.threads,
        "items_per_s": statistics.median(rates), "runs": rates, "dim": vectors.shape[1],
        "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
        "load_average_end": load,
    }))


if __name__ == "__main__":
    main()
