#!/usr/bin/env python3
"""A small tool-calling benchmark in the layout of StepFun's StepEval-Audio-Toolcall.

Writes {timbre,get_date_time,get_weather,web_search}_{positive,negative}.jsonl and wav/ into
OUT_DIR: multi-turn dialogues in Chinese and English whose last user turn asks (positives) or
does not ask (negatives) for the file's tool, every user and assistant turn spoken by espeak-ng
(Mandarin voice "cmn", English "en"). The last assistant turn is the reference: a
<tool_call> for a positive, a spoken answer (or a call of another tool) for a negative.

It lets `voxloop eval toolcall` run on any machine; point it at the real set for real figures.

    python3 scripts/toolcall_synthetic.py OUT_DIR
"""

import json
import pathlib
import subprocess
import sys


def call(name, arguments):
    body = json.dumps(arguments, ensure_ascii=False)
    return f"<tool_call>function\n{name}\n{body}</tool_call>"


# Each dialogue: (language, [(speaker, text), ...]); the last turn is the reference answer.
# Speakers: H(uman), A(ssistant, spoken), C(all by the assistant), I(nput: a tool's result).
DIALOGUES = {
    "timbre_positive": [
        ("zh", [("H", "小跃，你好。"), ("A", "你好，有什么可以帮你？"),
                ("H", "换成一个低沉沙哑的老爷爷声音跟我说话。"),
                ("C", call("timbre_rag", {"query": "低沉沙哑的老爷爷声音"}))]),
        ("en", [("H", "Please talk to me in a cheerful young woman's voice."),
                ("C", call("timbre_rag", {"query": "a cheerful young woman's voice"}))]),
    ],
    "timbre_negative": [
        ("zh", [("H", "你的声音真好听。"), ("A", "谢谢你的夸奖！")]),
        ("en", [("H", "What is the capital of France?"), ("A", "The capital of France is Paris.")]),
    ],
    "get_date_time_positive": [
        ("zh", [("H", "小跃，我下午有个会。"), ("A", "好的，需要我提醒你吗？"),
                ("H", "现在几点了？"), ("C", call("get_date_time", {}))]),
        ("en", [("H", "What day is it today?"), ("C", call("get_date_time", {}))]),
    ],
    "get_date_time_negative": [
        ("zh", [("H", "一天有多少个小时？"), ("A", "一天有二十四个小时。")]),
        ("en", [("H", "How do I say good morning in Spanish?"), ("A", "You say buenos dias.")]),
    ],
    "get_weather_positive": [
        ("zh", [("H", "小跃，明天我要去成都。"), ("A", "成都很好玩！"),
                ("H", "帮我查一下成都的天气。"), ("C", call("get_weather", {"location": "chengdu"}))]),
        ("en", [("H", "Will it rain in Tokyo this week?"),
                ("C", call("get_weather", {"location": "tokyo"}))]),
    ],
    "get_weather_negative": [
        ("zh", [("H", "查一下上海的天气。"), ("C", call("get_weather", {"location": "shanghai"})),
                ("I", "上海：晴，二十五度。"), ("H", "谢谢，那我穿短袖就好。"),
                ("A", "对，穿短袖很合适。")]),
        ("en", [("H", "Who wrote the novel Dream of the Red Chamber?"),
                ("C", call("web_search", {"query": "Dream of the Red Chamber author"}))]),
    ],
    "web_search_positive": [
        ("zh", [("H", "帮我搜一下今天的科技新闻。"), ("C", call("web_search", {"query": "今天 科技新闻"}))]),
        ("en", [("H", "I want to visit the Louvre."), ("A", "That sounds lovely."),
                ("H", "Search the web for the Louvre's opening hours."),
                ("C", call("web_search", {"query": "Louvre opening hours"}))]),
    ],
    "web_search_negative": [
        ("zh", [("H", "给我讲个笑话吧。"), ("A", "好呀，为什么海很咸？因为鱼在里面哭。")]),
        ("en", [("H", "What time is it in my city now?"), ("C", call("get_date_time", {}))]),
    ],
}

VOICES = {"zh": "cmn", "en": "en"}


def speak(text, language, path):
    subprocess.run(["espeak-ng", "-v", VOICES[language], "-s", "190", "-w", str(path), text],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    (out / "wav").mkdir(parents=True, exist_ok=True)
    for stem, dialogues in DIALOGUES.items():
        name = f"{stem}.jsonl"
        lines = []
        for line, (language, turns) in enumerate(dialogues):
            rows = []
            for index, (speaker, text) in enumerate(turns):
                row = {"session_id": f"{stem}-{line}", "turn_idx": index, "text": text}
                if speaker in ("H", "A"):
                    wav = f"wav/{name}-{line}-{index}.wav"
                    speak(text, language, out / wav)
                    row["from"] = "Human" if speaker == "H" else "Assistant"
                    row["value"] = {"type": "wav", "value": wav}
                elif speaker == "C":
                    row["from"] = "Assistant"
                    row["value"] = text
                else:
                    row["from"] = "Input"
                    row["value"] = text
                rows.append(row)
            lines.append(json.dumps(rows, ensure_ascii=False))
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
