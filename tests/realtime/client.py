"""Drives voxloop's realtime WebSocket (`/v1/realtime`) with the official OpenAI Python SDK's
realtime client (PyPI `openai`, `client.realtime.connect`, with `websockets`), the way an
application written against OpenAI's Realtime API would.

    client.py speech <addr> <question.wav>   # speech in with server VAD; audio out; a server tool
    client.py client_tool <addr>             # a client-declared tool round trip
    client.py unanswered <addr>              # a client call never answered, then more talk
    client.py cancel <addr> <question.wav>   # response.cancel, then barge-in by speech
    client.py errors <addr>                  # bad frames and events get `error` events
    client.py filler <addr>                  # a slow server tool: the filler plays meanwhile
    client.py think <addr>                   # a thinking server: voxloop.reasoning.delta first

<addr> is host:port of `voxloop serve`. Prints one JSON object with what it observed, for
tests/realtime.rs to assert on. The checkpoint under test has random weights: this reports
event order, shapes, ids and audio amounts, never judges the words.
"""

import asyncio
import base64
import json
import sys
import wave

import openai

MODEL = "step-audio-2-mini"
RATE = 24000
# Short answers keep the CPU tests fast; a forced call needs room for its JSON arguments.
TOKENS = 64
# Events after which a test gives up waiting (a hung server fails instead of blocking).
TIMEOUT_S = 120


def pcm24k(path):
    """The WAV at `path` as 16-bit mono PCM at 24 kHz (linear interpolation; enough for VAD
    and the model's front end)."""
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, "16-bit WAV expected"
        channels, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = [int.from_bytes(raw[i : i + 2], "little", signed=True) for i in range(0, len(raw), 2)]
    if channels > 1:
        samples = [sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)]
    n = len(samples) * RATE // rate
    out = bytearray()
    for k in range(n):
        pos = k * rate / RATE
        i = int(pos)
        a = samples[min(i, len(samples) - 1)]
        b = samples[min(i + 1, len(samples) - 1)]
        v = int(round(a + (b - a) * (pos - i)))
        out += max(-32768, min(32767, v)).to_bytes(2, "little", signed=True)
    return bytes(out)


def silence(seconds):
    return bytes(2 * int(RATE * seconds))


def chunks(pcm, ms=100):
    step = RATE * 2 * ms // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def b64(data):
    return base64.b64encode(data).decode()


class Log:
    """Every server event the SDK parsed, in order."""

    def __init__(self, connection):
        self.connection = connection
        self.events = []

    async def next(self):
        event = await asyncio.wait_for(self.connection.recv(), TIMEOUT_S)
        data = event.to_dict()
        self.events.append(data)
        return data

    async def until(self, kind):
        while True:
            event = await self.next()
            if event["type"] == kind:
                return event

    def types(self):
        return [e["type"] for e in self.events]

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]

    def audio_bytes(self):
        return sum(len(base64.b64decode(e["delta"])) for e in self.of("response.output_audio.delta"))


def connect(addr):
    client = openai.AsyncOpenAI(
        api_key="unused", base_url=f"http://{addr}/v1", websocket_base_url=f"ws://{addr}/v1"
    )
    return client.realtime.connect(model=MODEL)


async def ask(conn, log, session, text):
    """Updates the session with `session`, says `text` as a user message and asks for a response."""
    await conn.session.update(session={"type": "realtime", **session})
    await log.until("session.updated")
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()


async def speech(addr, wav):
    async with connect(addr) as conn:
        log = Log(conn)
        created = await log.until("session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer briefly.",
                "output_modalities": ["audio"],
                "max_output_tokens": TOKENS,
                "tool_choice": {"type": "function", "name": "get_date_time"},
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": RATE},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": RATE}},
                },
            }
        )
        updated = await log.until("session.updated")
        # The spoken question between silences, streamed like a microphone.
        for chunk in chunks(silence(0.5) + pcm24k(wav) + silence(1.2)):
            await conn.input_audio_buffer.append(audio=b64(chunk))
        done = await log.until("response.done")
        return {
            "session": created["session"],
            "updated": updated["session"],
            "types": log.types(),
            "speech_started": log.of("input_audio_buffer.speech_started"),
            "speech_stopped": log.of("input_audio_buffer.speech_stopped"),
            "committed": log.of("input_audio_buffer.committed"),
            "audio_bytes": log.audio_bytes(),
            "transcript_deltas": "".join(
                e["delta"] for e in log.of("response.output_audio_transcript.delta")
            ),
            "transcripts": [e["transcript"] for e in log.of("response.output_audio_transcript.done")],
            "calls": log.of("response.function_call_arguments.done"),
            "items": [e["item"] for e in log.of("conversation.item.done")],
            "response": done["response"],
            "errors": log.of("error"),
        }


LOOKUP = {
    "type": "function",
    "name": "lookup_order",
    "description": "Looks up an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string", "maxLength": 8}},
        "required": ["order"],
        "additionalProperties": False,
    },
}


async def client_tool(addr):
    async with connect(addr) as conn:
        log = Log(conn)
        await log.until("session.created")
        session = {
            "output_modalities": ["text"],
            "max_output_tokens": TOKENS,
            "tools": [LOOKUP],
            "tool_choice": {"type": "function", "name": "lookup_order"},
            "audio": {"input": {"turn_detection": None}},
        }
        await ask(conn, log, session, "Where is my order 42?")
        first = (await log.until("response.done"))["response"]
        # The client's calls: a malformed one is answered by the server at once (its
        # function_call_output is already in the response), so it is not the client's to answer.
        answered = {i["call_id"] for i in first["output"] if i["type"] == "function_call_output"}
        calls = [
            i for i in first["output"] if i["type"] == "function_call" and i["call_id"] not in answered
        ]
        report = {"first": first, "calls": calls}
        if calls:
            call = calls[0]
            await conn.session.update(session={"type": "realtime", "tool_choice": "none"})
            await log.until("session.updated")
            await conn.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": json.dumps({"status": "shipped"}),
                }
            )
            output_item = await log.until("conversation.item.done")
            await conn.response.create()
            second = (await log.until("response.done"))["response"]
            report.update({"output_item": output_item["item"], "second": second})
            # The same output twice is refused, naming the event.
            await conn.send_raw(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "event_id": "evt_again",
                        "item": {
                            "type": "function_call_output",
                            "call_id": call["call_id"],
                            "output": "again",
                        },
                    }
                )
            )
            report["again"] = (await log.until("error"))["error"]
        report["types"] = log.types()
        return report


async def unanswered(addr):
    async with connect(addr) as conn:
        log = Log(conn)
        session = (await log.until("session.created"))["session"]
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "max_output_tokens": TOKENS,
                "tools": [LOOKUP],
                "tool_choice": {"type": "function", "name": "lookup_order"},
                "audio": {"input": {"turn_detection": None}},
            }
        )
        await log.until("session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Order 7?"}]}
        )
        await conn.response.create()
        first = (await log.until("response.done"))["response"]
        # The call is never answered: the user just talks on.
        await conn.session.update(session={"type": "realtime", "tool_choice": "none"})
        await log.until("session.updated")
        mark = len(log.events)
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Never mind."}]}
        )
        await conn.response.create()
        second = (await log.until("response.done"))["response"]
        items = [e["item"] for e in log.events[mark:] if e["type"] == "conversation.item.done"]
        return {"session": session["id"], "first": first, "second": second, "items": items}


async def cancel(addr, wav):
    async with connect(addr) as conn:
        log = Log(conn)
        await log.until("session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["audio"],
                "max_output_tokens": 400,
                "tool_choice": "none",
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": 400,
                            "create_response": False,
                            "interrupt_response": True,
                        }
                    }
                },
            }
        )
        await log.until("session.updated")

        async def ask(text):
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            await conn.response.create()
            return await log.until("response.output_audio.delta")

        # 1. response.cancel after the first audio.
        first_delta = await ask("Tell me a long story.")
        await conn.response.cancel()
        cancelled = (await log.until("response.done"))["response"]
        truncated = log.of("conversation.item.truncated")
        sent_1 = log.audio_bytes()
        # 2. Barge-in: the user speaks while the answer plays.
        mark = len(log.events)
        await ask("Tell me another long story.")
        for chunk in chunks(silence(0.3) + pcm24k(wav) + silence(1.0)):
            await conn.input_audio_buffer.append(audio=b64(chunk))
        barged = (await log.until("response.done"))["response"]
        after = log.events[mark:]
        # 3. The client's own truncation of the interrupted item, to less than was sent.
        item_id = first_delta["item_id"]
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=40)
        client_truncated = await log.until("conversation.item.truncated")
        # 4. The session still answers.
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go on."}]}
        )
        await conn.session.update(session={"type": "realtime", "max_output_tokens": 8})
        await conn.response.create()
        last = (await log.until("response.done"))["response"]
        return {
            "cancelled": cancelled,
            "truncated": truncated,
            "first_item": item_id,
            "audio_bytes_1": sent_1,
            "barged": barged,
            "barge_types": [e["type"] for e in after],
            "barge_truncated": [e for e in after if e["type"] == "conversation.item.truncated"],
            "client_truncated": client_truncated,
            "last": last,
            "errors": log.of("error"),
        }


async def errors(addr):
    async with connect(addr) as conn:
        log = Log(conn)
        session = (await log.until("session.created"))["session"]
        report = {}
        cases = {
            "not_json": "this is not json",
            "unknown": json.dumps({"type": "response.teleport", "event_id": "evt_unknown"}),
            "odd_audio": json.dumps(
                {"type": "input_audio_buffer.append", "event_id": "evt_odd", "audio": b64(b"\x01\x02\x03")}
            ),
            "bad_base64": json.dumps(
                {"type": "input_audio_buffer.append", "event_id": "evt_b64", "audio": "%%%"}
            ),
            "empty_commit": json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_commit"}),
            "cancel_idle": json.dumps({"type": "response.cancel", "event_id": "evt_cancel"}),
            "nothing_to_answer": json.dumps({"type": "response.create", "event_id": "evt_resp"}),
            "bad_update": json.dumps(
                {
                    "type": "session.update",
                    "event_id": "evt_update",
                    "session": {"type": "realtime", "output_modalities": ["video"]},
                }
            ),
            "truncate_unknown": json.dumps(
                {
                    "type": "conversation.item.truncate",
                    "event_id": "evt_trunc",
                    "item_id": "item_nope",
                    "content_index": 0,
                    "audio_end_ms": 10,
                }
            ),
            "assistant_item": json.dumps(
                {
                    "type": "conversation.item.create",
                    "event_id": "evt_role",
                    "item": {"type": "message", "role": "assistant", "content": []},
                }
            ),
        }
        for name, frame in cases.items():
            await conn.send_raw(frame)
            report[name] = (await log.until("error"))["error"]
        # Still usable: a text question gets a text answer.
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 8}
        )
        report["updated"] = (await log.until("session.updated"))["session"]
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        await conn.response.create()
        report["response"] = (await log.until("response.done"))["response"]
        report["session"] = session
        report["types"] = log.types()
        return report


async def filler(addr):
    async with connect(addr) as conn:
        log = Log(conn)
        await log.until("session.created")
        session = {
            "max_output_tokens": TOKENS,
            "tool_choice": {"type": "function", "name": "py__pause"},
            "audio": {"input": {"turn_detection": None}},
        }
        await ask(conn, log, session, "Look it up, slowly.")
        response = (await log.until("response.done"))["response"]
        audio = {}
        for e in log.of("response.output_audio.delta"):
            audio[e["item_id"]] = audio.get(e["item_id"], 0) + len(base64.b64decode(e["delta"]))
        report = {"response": response, "audio_by_item": audio, "types": log.types()}
        # Output items in the order they were added.
        report["added"] = [e["item"] for e in log.of("response.output_item.added")]
        report["sequence"] = [
            [e["type"], e["item"]["type"], e["item"]["id"]]
            for e in log.events
            if e["type"] in ("response.output_item.added", "conversation.item.added")
        ]
        report["outputs"] = [
            e["item"] for e in log.of("conversation.item.added") if e["item"]["type"] == "function_call_output"
        ]
        return report


async def think(addr):
    async with connect(addr) as conn:
        log = Log(conn)
        await log.until("session.created")
        session = {
            "output_modalities": ["text"],
            "max_output_tokens": 8,
            "tool_choice": "none",
            "audio": {"input": {"turn_detection": None}},
        }
        await ask(conn, log, session, "Why is the sky blue?")
        response = (await log.until("response.done"))["response"]
        deltas = [e["delta"] for e in log.of("voxloop.reasoning.delta")]
        ids = {e["response_id"] for e in log.of("voxloop.reasoning.delta")}
        return {"response": response, "reasoning": deltas, "response_ids": sorted(ids), "types": log.types()}


def main():
    command, addr = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    run = {
        "speech": speech,
        "client_tool": client_tool,
        "unanswered": unanswered,
        "cancel": cancel,
        "errors": errors,
        "filler": filler,
        "think": think,
    }[command]
    print(json.dumps(asyncio.run(run(addr, *args))))


if __name__ == "__main__":
    main()
