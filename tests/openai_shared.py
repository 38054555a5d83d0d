"""What the OpenAI SDK test clients (tests/chat/client.py, tests/audio/client.py) share: the
connection to `voxloop serve`, WAV bytes as Python's `wave` reads them, and the fields of a
refused request's exception."""

import io
import json
import sys
import wave

import openai


def connect(addr):
    # No retries: a refused request must surface as the SDK's exception at once.
    return openai.OpenAI(
        base_url=f"http://{addr}/v1", api_key="unused", max_retries=0, timeout=300
    )


def wav_info(data):
    """What Python's `wave` module reads from WAV bytes (or why it could not)."""
    info = {"riff": data[:4] == b"RIFF", "bytes": len(data)}
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            info.update(
                channels=w.getnchannels(),
                sample_width=w.getsampwidth(),
                frame_rate=w.getframerate(),
                frames=w.getnframes(),
            )
    except (wave.Error, EOFError) as e:
        info["error"] = str(e)
    return info


def refusal(call):
    """Runs `call`, which must raise the SDK's APIStatusError; what the exception carried."""
    try:
        call()
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "message": e.message,
            "type": e.type,
            "code": e.code,
            "param": e.param,
            "body": e.body,
        }
    return {"class": None}


def run(commands):
    """`client.py <command> <addr> <args>`: runs `commands[command](client, args)` against the
    server at `addr` and prints its report as one JSON object."""
    command, addr, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if command not in commands:
        raise SystemExit(f"unknown command {command}; one of {', '.join(commands)}")
    print(json.dumps(commands[command](connect(addr), rest)))
