"""Drives voxloop's OpenAI-compatible audio endpoints with the official OpenAI Python SDK (PyPI
`openai`), the way an application written against OpenAI would.

    client.py transcribe <addr> <input.wav>  # transcriptions (json, text, stream), translations
    client.py speech <addr>                  # speech as WAV and as raw PCM
    client.py errors <addr> <not-audio>      # the SDK's typed exceptions for refused requests

<addr> is host:port of `voxloop serve`. Prints one JSON object with what it observed, for
tests/audio_tasks.rs to assert on. The checkpoint under test has random weights: this reports
shapes, types and decoded audio, never judges the words.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from openai_shared import refusal, run, wav_info  # noqa: E402

MODEL = "step-audio-2-mini"


def cmd_transcribe(client, args):
    path = args[0]
    with open(path, "rb") as f:
        as_json = client.audio.transcriptions.create(model=MODEL, file=f, language="en")
    with open(path, "rb") as f:
        as_text = client.audio.transcriptions.create(model=MODEL, file=f, response_format="text")
    with open(path, "rb") as f:
        events = client.audio.transcriptions.create(model=MODEL, file=f, stream=True)
        streamed = [event.to_dict() for event in events]
    with open(path, "rb") as f:
        translation = client.audio.translations.create(model=MODEL, file=f)
    return {
        "json": as_json.to_dict(),
        "json_class": type(as_json).__name__,
        "text": as_text,
        "text_type": type(as_text).__name__,
        "stream": streamed,
        "translation": translation.to_dict(),
    }


def cmd_speech(client, _args):
    wav = client.audio.speech.create(
        model=MODEL, voice="fixture", input="Hello there.", response_format="wav"
    )
    pcm = client.audio.speech.create(
        model=MODEL, voice={"id": "fixture"}, input="Hello there.", response_format="pcm"
    )
    return {
        "wav": wav_info(wav.content),
        "wav_type": wav.response.headers.get("content-type"),
        "pcm_bytes": len(pcm.content),
        "pcm_type": pcm.response.headers.get("content-type"),
    }


def cmd_errors(client, args):
    not_audio = args[0]

    def transcribe(**kw):
        with open(not_audio, "rb") as f:
            return client.audio.transcriptions.create(file=f, **kw)

    def speak(**kw):
        params = {"model": MODEL, "voice": "fixture", "input": "Hi."}
        params.update(kw)
        return client.audio.speech.create(**params)

    return {
        "not_audio": refusal(lambda: transcribe(model=MODEL)),
        "unknown_model": refusal(lambda: transcribe(model="whisper-1")),
        "prompt": refusal(lambda: transcribe(model=MODEL, prompt="Spell names carefully.")),
        "verbose": refusal(lambda: transcribe(model=MODEL, response_format="verbose_json")),
        "mp3": refusal(lambda: speak(response_format="mp3")),
        "unknown_voice": refusal(lambda: speak(voice="alloy")),
        "speed": refusal(lambda: speak(speed=1.5)),
        "empty_input": refusal(lambda: speak(input="  ")),
    }


COMMANDS = {"transcribe": cmd_transcribe, "speech": cmd_speech, "errors": cmd_errors}


if __name__ == "__main__":
    run(COMMANDS)
