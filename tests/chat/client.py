"""Drives voxloop's OpenAI-compatible Chat Completions endpoint with the official OpenAI Python
SDK (PyPI `openai`), the way an application written against OpenAI would.

    client.py text <addr>               # models list; text in, text out; determinism, stop
    client.py audio <addr> <input.wav>  # speech in, text + WAV speech out
    client.py tools <addr>              # forced, named and auto tool calls; a tool result back
    client.py stream <addr>             # streamed answers reassembled vs the non-streamed ones
    client.py errors <addr>             # the SDK's typed exceptions for refused requests

<addr> is host:port of `voxloop serve`. Prints one JSON object with what it observed, for
tests/chat_completions.rs to assert on. The checkpoint under test has random weights, so this
reports shapes, types and decoded audio properties, never judges the words.
"""

import base64
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from openai_shared import refusal, run, wav_info  # noqa: E402

# Greedy decoding with a fixed seed wherever two answers are compared.
SEED = 7
# Short answers keep the CPU tests fast.
TEXT_TOKENS = 24
AUDIO_TOKENS = 40
# A forced call needs room to finish its JSON arguments; the schemas below bound their strings
# (`maxLength`), or the random model would write a city name up to the token limit.
TOOL_TOKENS = 64

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name.", "maxLength": 16}
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "description": "An IANA zone.", "maxLength": 16}
            },
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}

SYSTEM = {"role": "system", "content": "You are a terse assistant."}


def model_id(client):
    return client.models.list().data[0].id


def completion_report(completion):
    """The completion as the SDK parsed it, with base64 audio replaced by its decoded size
    (the bytes themselves are checked here, not shipped to the Rust side)."""
    out = completion.to_dict()
    for choice in out.get("choices", []):
        audio = choice.get("message", {}).get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            audio["data_bytes"] = len(base64.b64decode(audio.pop("data")))
    return out


def call_report(call):
    """A tool call's name and whether its arguments are a JSON object (and which)."""
    try:
        args = json.loads(call.function.arguments)
    except (TypeError, ValueError) as e:
        args, error = None, str(e)
    else:
        error = None
    return {
        "id": call.id,
        "type": call.type,
        "name": call.function.name,
        "arguments": call.function.arguments,
        "parsed": args,
        "is_object": isinstance(args, dict),
        "error": error,
    }


def content_of(completion):
    return completion.choices[0].message.content


def cmd_text(client, _args):
    listed = client.models.list()
    model = listed.data[0].id
    messages = [SYSTEM, {"role": "user", "content": "Name a colour."}]
    greedy = {"temperature": 0, "seed": SEED, "max_completion_tokens": TEXT_TOKENS}
    first = client.chat.completions.create(model=model, messages=messages, **greedy)
    again = client.chat.completions.create(model=model, messages=messages, **greedy)
    # The same prompt as a list of one text part reads the same to the model.
    parts = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    as_parts = client.chat.completions.create(model=model, messages=parts, **greedy)
    # Sampling (not greedy) with a fixed seed is reproducible too.
    sampled = {"temperature": 1.0, "top_p": 0.9, "seed": 11, "max_completion_tokens": TEXT_TOKENS}
    seeded = [
        content_of(client.chat.completions.create(model=model, messages=messages, **sampled))
        for _ in range(2)
    ]
    # Legacy `max_tokens` caps the answer like `max_completion_tokens`.
    legacy = client.chat.completions.create(
        model=model, messages=messages, temperature=0, seed=SEED, max_tokens=4
    )
    # A stop sequence taken from the middle of the greedy answer: the same greedy answer,
    # cut before the stop's first occurrence.
    stop = None
    text = content_of(first) or ""
    candidate = text[len(text) // 2 : len(text) // 2 + 3]
    if len(text) >= 8 and candidate.strip():
        stopped = client.chat.completions.create(
            model=model, messages=messages, stop=[candidate], **greedy
        )
        stop = {
            "stop": candidate,
            "expected": text[: text.find(candidate)],
            "content": content_of(stopped),
            "finish_reason": stopped.choices[0].finish_reason,
        }
    return {
        "models": listed.to_dict(),
        "model": model,
        "completion": completion_report(first),
        "again": content_of(again),
        "as_parts": content_of(as_parts),
        "seeded": seeded,
        "legacy": {
            "finish_reason": legacy.choices[0].finish_reason,
            "completion_tokens": legacy.usage.completion_tokens,
        },
        "stop": stop,
    }


def cmd_audio(client, args):
    model = model_id(client)
    with open(args[0], "rb") as f:
        recording = base64.b64encode(f.read()).decode()
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Answer the question you hear."},
            {"type": "input_audio", "input_audio": {"data": recording, "format": "wav"}},
        ],
    }
    completion = client.chat.completions.create(
        model=model,
        messages=[SYSTEM, user],
        modalities=["text", "audio"],
        audio={"voice": "fixture", "format": "wav"},
        temperature=0,
        seed=SEED,
        max_completion_tokens=AUDIO_TOKENS,
    )
    message = completion.choices[0].message
    audio = message.audio
    tts = (message.model_extra or {}).get("tts_content")
    tts_audio = tts.get("tts_audio") if isinstance(tts, dict) else None
    return {
        "completion": completion_report(completion),
        "wav": wav_info(base64.b64decode(audio.data)) if audio and audio.data else None,
        "transcript_is_str": isinstance(getattr(audio, "transcript", None), str),
        "tts_content": tts,
        "tts_audio_tokens": (
            re.fullmatch(r"(<audio_\d+>)*", tts_audio) is not None
            if isinstance(tts_audio, str)
            else None
        ),
        "tts_audio_count": len(re.findall(r"<audio_\d+>", tts_audio or "")),
    }


def cmd_tools(client, _args):
    model = model_id(client)
    messages = [SYSTEM, {"role": "user", "content": "What is the weather in Paris?"}]
    greedy = {"temperature": 0, "seed": SEED, "max_completion_tokens": TOOL_TOKENS}
    required = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        **greedy,
    )
    calls = required.choices[0].message.tool_calls or []
    # A named choice picks that tool even when it is not the first one declared.
    named = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        **greedy,
    )
    # "auto" may answer or call; either way the answer must be consistent.
    auto = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER, CLOCK], tool_choice="auto", **greedy
    )
    answered = None
    if calls:
        # As SDK users do: the assistant message goes back as the SDK returned it, then the
        # tool's result for its call id.
        result = {"city": "Paris", "temperature_c": 21, "conditions": "sunny"}
        history = messages + [
            required.choices[0].message,
            {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps(result)},
        ]
        answered = client.chat.completions.create(
            model=model, messages=history, tools=[WEATHER], tool_choice="none", **greedy
        )
    return {
        "required": {
            "completion": completion_report(required),
            "calls": [call_report(c) for c in calls],
        },
        "named": {
            "completion": completion_report(named),
            "calls": [call_report(c) for c in named.choices[0].message.tool_calls or []],
        },
        "auto": {
            "completion": completion_report(auto),
            "calls": [call_report(c) for c in auto.choices[0].message.tool_calls or []],
        },
        "answered": completion_report(answered) if answered else None,
    }


def reassemble(chunks):
    """Accumulates a chat.completion.chunk stream as SDK users do: content, audio transcript
    and pcm16, and tool calls by index; plus what the chunks looked like."""
    content, transcript, pcm = "", "", b""
    audio_ids, roles, finishes, calls = set(), [], [], {}
    usage, last_choices = None, None
    ids, objects = set(), set()
    for chunk in chunks:
        ids.add(chunk.id)
        objects.add(chunk.object)
        last_choices = len(chunk.choices)
        if chunk.usage is not None:
            usage = chunk.usage.to_dict()
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.append(delta.role)
            if delta.content:
                content += delta.content
            if delta.audio is not None:
                if delta.audio.id:
                    audio_ids.add(delta.audio.id)
                transcript += delta.audio.transcript or ""
                pcm += base64.b64decode(delta.audio.data or "")
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    tool_calls = []
    for index in sorted(calls):
        slot = calls[index]
        try:
            parsed = json.loads(slot["arguments"])
        except ValueError:
            parsed = None
        tool_calls.append({**slot, "index": index, "is_object": isinstance(parsed, dict)})
    return {
        "ids": sorted(ids),
        "objects": sorted(objects),
        "roles": roles,
        "content": content,
        "tool_calls": tool_calls,
        "finish_reasons": finishes,
        "usage": usage,
        "last_chunk_choices": last_choices,
        "audio_ids": sorted(audio_ids),
        "transcript": transcript,
        "pcm_bytes": len(pcm),
    }


def plain_report(completion):
    """The parts of a non-streamed answer a stream must reproduce."""
    message = completion.choices[0].message
    audio = message.audio
    return {
        "content": message.content,
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls or []
        ],
        "finish_reason": completion.choices[0].finish_reason,
        "usage": completion.usage.to_dict() if completion.usage else None,
        "transcript": audio.transcript if audio else None,
        "pcm_bytes": len(base64.b64decode(audio.data)) if audio and audio.data else 0,
        "pcm_is_wav": bool(audio and audio.data and base64.b64decode(audio.data)[:4] == b"RIFF"),
    }


def cmd_stream(client, _args):
    model = model_id(client)
    weather = [SYSTEM, {"role": "user", "content": "What is the weather in Paris?"}]
    cases = {
        "text": {
            "messages": [SYSTEM, {"role": "user", "content": "Tell me about rivers."}],
            "max_completion_tokens": TEXT_TOKENS,
        },
        "tools": {
            "messages": weather,
            "tools": [WEATHER, CLOCK],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_completion_tokens": TOOL_TOKENS,
        },
        "audio": {
            "messages": [SYSTEM, {"role": "user", "content": "Say hello."}],
            "modalities": ["text", "audio"],
            "audio": {"voice": "fixture", "format": "pcm16"},
            "max_completion_tokens": AUDIO_TOKENS,
        },
    }
    out = {}
    for name, params in cases.items():
        common = {"model": model, "temperature": 0, "seed": SEED, **params}
        plain = client.chat.completions.create(**common)
        stream = client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **common
        )
        out[name] = {"plain": plain_report(plain), "stream": reassemble(stream)}
    return out


def cmd_errors(client, _args):
    model = model_id(client)
    messages = [{"role": "user", "content": "Hello."}]
    create = client.chat.completions.create
    return {
        "n2": refusal(lambda: create(model=model, messages=messages, n=2, max_tokens=4)),
        "unknown_model": refusal(
            lambda: create(model="no-such-model", messages=messages, max_tokens=4)
        ),
        "audio_without_voice": refusal(
            lambda: create(model=model, messages=messages, modalities=["text", "audio"])
        ),
    }


COMMANDS = {
    "text": cmd_text,
    "audio": cmd_audio,
    "tools": cmd_tools,
    "stream": cmd_stream,
    "errors": cmd_errors,
}


if __name__ == "__main__":
    run(COMMANDS)
