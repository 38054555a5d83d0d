#!/usr/bin/env python3
"""Builds the sample audio library that `make run` indexes: DEST/ with audio files and a
metadata.jsonl sidecar (one line per file: path, kind, description, tags, attributes).

Needs only Python's standard library and no root. What it contains depends on the machine:

- always: ~20 generated sounds (tones, chimes, noise textures, sweeps, a siren, DTMF, Morse,
  chords, a heartbeat...), each described as what it is: a synthetic signal;
- real recorded sounds from Debian sound packages where installed
  (/usr/share/sounds/freedesktop, /usr/share/sounds/alsa, /usr/share/sounds/oxygen);
- voices of distinct timbres where espeak-ng and/or flite are installed.

Deterministic: re-running writes identical files, so `voxloop index add` finds them unchanged.
Usage: python3 scripts/sample_library.py DEST
"""

import json
import math
import random
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

RATE = 16000


def write_wav(path: Path, samples: list[float]) -> None:
    peak = max(1e-9, max(abs(s) for s in samples))
    scale = 0.8 / peak if peak > 0.8 else 1.0
    frames = b"".join(struct.pack("<h", int(max(-1.0, min(1.0, s * scale)) * 32767)) for s in samples)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    tmp.replace(path)


def sine(hz: float, seconds: float, amp: float = 0.5) -> list[float]:
    return [amp * math.sin(2 * math.pi * hz * i / RATE) for i in range(int(seconds * RATE))]


def envelope(samples: list[float], attack: float = 0.01, release: float = 0.05) -> list[float]:
    n, a, r = len(samples), int(attack * RATE), int(release * RATE)
    out = []
    for i, s in enumerate(samples):
        g = 1.0
        if a and i < a:
            g = i / a
        if r and i > n - r:
            g = min(g, (n - i) / r)
        out.append(s * g)
    return out


def silence(seconds: float) -> list[float]:
    return [0.0] * int(seconds * RATE)


def chirp(f0: float, f1: float, seconds: float, amp: float = 0.5) -> list[float]:
    n, phase, out = int(seconds * RATE), 0.0, []
    for i in range(n):
        f = f0 + (f1 - f0) * i / n
        phase += 2 * math.pi * f / RATE
        out.append(amp * math.sin(phase))
    return out


def lowpass(samples: list[float], alpha: float) -> list[float]:
    out, y = [], 0.0
    for s in samples:
        y += alpha * (s - y)
        out.append(y)
    return out


def mix(*tracks: list[float]) -> list[float]:
    n = max(len(t) for t in tracks)
    return [sum(t[i] for t in tracks if i < len(t)) for i in range(n)]


def generated() -> list[tuple[str, list[float], dict]]:
    rng = random.Random(7)
    noise = lambda seconds: [rng.uniform(-1, 1) for _ in range(int(seconds * RATE))]  # noqa: E731
    items = []

    def add(name, samples, description, tags):
        items.append((name, samples, {"kind": "sound", "description": description, "tags": tags}))

    add("beep_440hz", envelope(sine(440, 1.0)), "A pure 440 Hz sine beep, one second (synthetic test tone)", ["beep", "tone", "sine", "提示音"])
    add("chime_two_tone", envelope(sine(659.3, 0.5), 0.005, 0.3) + envelope(sine(523.3, 0.8), 0.005, 0.6),
        "Two-note descending chime, E then C, like a simple doorbell (synthetic)", ["chime", "doorbell", "门铃"])
    add("white_noise", [0.3 * s for s in noise(2.0)], "Steady white noise hiss, like radio static (synthetic)", ["noise", "static", "hiss", "白噪音"])
    drops = [0.0] * int(3.0 * RATE)
    for _ in range(180):
        at = rng.randrange(len(drops) - 200)
        for k in range(200):
            drops[at + k] += 0.4 * math.exp(-k / 30) * math.sin(2 * math.pi * rng.uniform(1500, 4000) * k / RATE)
    add("rain_imitation", mix(lowpass([0.5 * s for s in noise(3.0)], 0.15), drops),
        "Soft low-passed noise with random droplet clicks, a rough synthetic imitation of rain", ["rain", "noise", "雨"])
    add("sweep_up", envelope(chirp(200, 2000, 1.5)), "Rising sine sweep from 200 Hz to 2 kHz, a sci-fi power-up effect (synthetic)", ["sweep", "power up", "sci-fi"])
    add("whistle_down", envelope(chirp(2000, 200, 1.2)), "Falling whistle from 2 kHz to 200 Hz, like a cartoon fall (synthetic)", ["whistle", "fall", "cartoon"])
    tick = envelope([0.8 * s for s in noise(0.01)], 0.0005, 0.008)
    add("clock_tick", (tick + silence(0.49)) * 6, "Regular clicks twice per second, like a clock ticking (synthetic)", ["clock", "tick", "时钟"])
    siren, phase = [], 0.0
    for i in range(int(3.0 * RATE)):
        f = 750 + 350 * math.sin(2 * math.pi * 0.5 * i / RATE)
        phase += 2 * math.pi * f / RATE
        siren.append(0.5 * math.sin(phase))
    add("siren_wail", siren, "Wailing siren rising and falling (synthetic)", ["siren", "alarm", "emergency", "警报"])
    square = [0.4 if math.sin(2 * math.pi * 150 * i / RATE) >= 0 else -0.4 for i in range(int(0.8 * RATE))]
    add("error_buzzer", envelope(square), "Harsh square-wave buzzer, a wrong-answer sound (synthetic)", ["buzzer", "error", "wrong"])
    add("mains_hum", mix(sine(50, 2.0, 0.4), sine(100, 2.0, 0.2), sine(150, 2.0, 0.1)),
        "Low electrical mains hum at 50 Hz with harmonics (synthetic)", ["hum", "electrical", "drone"])
    dtmf = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336)}
    dial = []
    for key in "5551234":
        lo, hi = dtmf[key]
        dial += envelope(mix(sine(lo, 0.15, 0.3), sine(hi, 0.15, 0.3)), 0.005, 0.01) + silence(0.08)
    add("dtmf_dialing", dial, "Telephone keypad tones dialing 5-5-5-1-2-3-4 (synthetic DTMF)", ["phone", "dial", "keypad", "拨号"])
    unit, morse = 0.08, []
    for sym in "... --- ...":
        if sym == " ":
            morse += silence(unit * 2)
            continue
        morse += envelope(sine(700, unit * (3 if sym == "-" else 1)), 0.003, 0.005) + silence(unit)
    add("morse_sos", morse, "Morse code SOS beeps at 700 Hz (synthetic)", ["morse", "sos", "beep", "signal"])
    pad = lambda freqs: envelope(mix(*[sine(f, 2.5, 0.2) for f in freqs]), 0.3, 0.8)  # noqa: E731
    add("major_chord", pad([261.6, 329.6, 392.0]), "Bright C major chord on a soft synth pad, happy mood", ["music", "chord", "happy", "和弦"])
    add("minor_chord", pad([220.0, 261.6, 329.6]), "Dark A minor chord on a soft synth pad, sad mood", ["music", "chord", "sad", "和弦"])
    scale = []
    for f in [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3]:
        scale += envelope(sine(f, 0.25), 0.01, 0.05)
    add("c_major_scale", scale, "C major scale played upward on a sine-wave synth", ["music", "scale", "melody", "音阶"])
    beat = []
    for _ in range(4):
        thump = [0.8 * math.sin(2 * math.pi * 55 * i / RATE) * math.exp(-i / 1200) for i in range(int(0.12 * RATE))]
        beat += thump + silence(0.1) + [0.6 * s for s in thump] + silence(0.68)
    add("heartbeat", beat, "Slow low heartbeat thumps, about 60 beats per minute (synthetic)", ["heartbeat", "pulse", "心跳"])
    wind = lowpass(noise(4.0), 0.05)
    wind = [s * (0.3 + 0.7 * math.sin(math.pi * i / len(wind)) ** 2) for i, s in enumerate(wind)]
    add("wind_imitation", wind, "Slowly swelling filtered noise, a rough synthetic imitation of wind", ["wind", "noise", "风"])
    add("alarm_beeps", (envelope(sine(2500, 0.08), 0.002, 0.01) + silence(0.07)) * 12,
        "Fast repeating high beeps, like a digital alarm clock (synthetic)", ["alarm", "beep", "clock", "闹钟"])
    add("laser_zap", envelope(chirp(3000, 300, 0.25), 0.002, 0.05), "Short descending laser zap, a sci-fi game effect (synthetic)", ["laser", "zap", "game", "sci-fi"])
    partials = [(1.0, 1.0), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)]
    bell = [sum(a * math.sin(2 * math.pi * 440 * r * i / RATE) * math.exp(-i / (RATE * (1.2 / r))) for r, a in partials) for i in range(int(3 * RATE))]
    add("bell_strike", bell, "A single struck bell tone with a slow decay (synthetic inharmonic partials)", ["bell", "strike", "钟声"])
    return items


# Each theme sound's description in English, and in Chinese as a tag: the model's tool calls
# are mostly Chinese ("帮我找一个闹钟的声音"), and BM25 (jieba) matches Chinese words only.
FREEDESKTOP_ZH = {
    "alarm-clock-elapsed": "闹钟响了 时间到",
    "bell": "铃声 叮",
    "camera-shutter": "相机快门声 拍照",
    "complete": "完成提示音",
    "dialog-error": "错误提示音",
    "dialog-information": "信息提示音",
    "dialog-warning": "警告提示音",
    "door-bell": "门铃声",
    "message": "消息通知音",
    "message-new-instant": "新消息提示音",
    "phone-incoming-call": "来电铃声 电话响了",
    "phone-outgoing-busy": "电话忙音",
    "phone-outgoing-calling": "电话回铃音 拨打电话",
    "power-plug": "插上电源",
    "power-unplug": "拔掉电源",
    "screen-capture": "截屏快门声",
    "service-login": "登录提示音",
    "service-logout": "注销提示音",
    "suspend-error": "休眠失败提示音",
    "trash-empty": "清空回收站 揉纸声",
    "window-attention": "窗口提醒音",
    "audio-volume-change": "音量调节声",
    "device-added": "设备已连接",
    "device-removed": "设备已断开",
    "network-connectivity-established": "网络已连接",
    "network-connectivity-lost": "网络已断开",
}

FREEDESKTOP = {
    "alarm-clock-elapsed": "Alarm clock ringing: time is up",
    "bell": "A short bell ding",
    "camera-shutter": "Camera shutter click",
    "complete": "A short bright completion chime",
    "dialog-error": "Error alert tone from a desktop dialog",
    "dialog-information": "Soft information pop-up tone",
    "dialog-warning": "Warning alert tone",
    "door-bell": "Doorbell ringing",
    "message": "Short message notification tone",
    "message-new-instant": "Instant-message arrival pop",
    "phone-incoming-call": "Phone ringing for an incoming call",
    "phone-outgoing-busy": "Busy signal on a phone line",
    "phone-outgoing-calling": "Ringback tone of an outgoing phone call",
    "power-plug": "Power cable plugged in: a rising blip",
    "power-unplug": "Power cable unplugged: a falling blip",
    "screen-capture": "Screenshot shutter sound",
    "service-login": "Login chime",
    "service-logout": "Logout chime",
    "suspend-error": "Error tone when suspending fails",
    "trash-empty": "Crumpling paper as the trash is emptied",
    "window-attention": "Window asking for attention: a short tone",
    "audio-volume-change": "A tick when the volume changes",
    "device-added": "A device connected: short rising tone",
    "device-removed": "A device disconnected: short falling tone",
    "network-connectivity-established": "Network connected notification",
    "network-connectivity-lost": "Network lost notification",
}


def real_sounds(dest: Path) -> list[tuple[str, dict]]:
    out = []
    fd = Path("/usr/share/sounds/freedesktop/stereo")
    if fd.is_dir():
        for f in sorted(fd.glob("*.oga")):
            name = f.stem
            desc = FREEDESKTOP.get(name, name.replace("-", " "))
            target = dest / "freedesktop" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            out.append((f"freedesktop/{f.name}", {"kind": "sound", "description": f"{desc} (freedesktop sound theme, recorded)",
                                                 "tags": ["desktop", "notification", *name.split("-"), *FREEDESKTOP_ZH.get(name, "").split()], "source": "freedesktop", "license": "cc-by-sa-3.0 / gpl-2.0+"}))
    alsa = Path("/usr/share/sounds/alsa")
    if alsa.is_dir():
        for f in sorted(alsa.glob("*.wav")):
            words = f.stem.replace("_", " ").lower()
            target = dest / "alsa" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            kind = "sound" if "noise" in words else "timbre"
            out.append((f"alsa/{f.name}", {"kind": kind, "description": f"A recorded voice saying '{words}' (ALSA speaker-test sample)" if kind == "timbre" else f"{words} (ALSA test sample)",
                                           "tags": ["speaker test", "alsa"], "transcript": words if kind == "timbre" else None, "language": "en", "source": "alsa-utils", "license": "gpl-2.0+"}))
    oxygen = Path("/usr/share/sounds/oxygen/stereo")
    if oxygen.is_dir():
        for f in sorted(oxygen.glob("*.ogg"))[:40]:
            words = f.stem.replace("-", " ")
            target = dest / "oxygen" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            out.append((f"oxygen/{f.name}", {"kind": "sound", "description": f"{words} (KDE Oxygen sound theme)", "tags": ["desktop", *words.split()], "source": "oxygen-sounds", "license": "lgpl-3.0+"}))
    return out


VOICE_TEXT = "The quick brown fox jumps over the lazy dog. I can read this sentence in my own voice."
ESPEAK = [
    ("en+m1", "male", "Synthetic male English voice (espeak-ng, variant m1), clear and robotic"),
    ("en+m3", "male", "Synthetic deeper male English voice (espeak-ng, variant m3), flat and robotic"),
    ("en+f2", "female", "Synthetic female English voice (espeak-ng, variant f2), higher pitched"),
    ("en+f4", "female", "Synthetic breathy female English voice (espeak-ng, variant f4)"),
    ("en+whisper", "other", "Synthetic whispering English voice (espeak-ng, whisper variant)"),
    ("en+croak", "male", "Synthetic croaky, rough male English voice (espeak-ng, croak variant)"),
    ("en-us+klatt", "male", "Synthetic American English voice in the old Klatt formant style (espeak-ng)"),
]
FLITE = [
    ("slt", "female", "American English female voice (CMU Flite 'slt', derived from a real speaker)"),
    ("awb", "male", "Scottish English male voice (CMU Flite 'awb', derived from a real speaker)"),
    ("rms", "male", "American English male voice, deep (CMU Flite 'rms', derived from a real speaker)"),
    ("kal", "male", "American English male voice, diphone synthesis, old-fashioned (CMU Flite 'kal')"),
]


def voices(dest: Path) -> list[tuple[str, dict]]:
    out = []
    (dest / "voices").mkdir(parents=True, exist_ok=True)
    espeak = shutil.which("espeak-ng")
    if espeak:
        for variant, gender, desc in ESPEAK:
            rel = f"voices/espeak_{variant.replace('+', '_').replace('-', '_')}.wav"
            if subprocess.run([espeak, "-v", variant, "-w", str(dest / rel), VOICE_TEXT], capture_output=True).returncode == 0:
                out.append((rel, {"kind": "timbre", "description": desc, "tags": ["synthetic", "espeak", "tts"], "transcript": VOICE_TEXT,
                                  "gender": gender, "language": "en", "style": "robotic", "source": "espeak-ng", "license": "gpl-3.0+"}))
        rel = "voices/espeak_cmn.wav"
        zh = "你好，我是一个合成的普通话声音，可以用来朗读中文。"
        if subprocess.run([espeak, "-v", "cmn", "-w", str(dest / rel), zh], capture_output=True).returncode == 0:
            out.append((rel, {"kind": "timbre", "description": "合成的普通话男声（espeak-ng），机械感 / synthetic Mandarin voice", "tags": ["synthetic", "普通话", "tts"],
                              "transcript": zh, "gender": "male", "language": "zh", "style": "robotic", "source": "espeak-ng", "license": "gpl-3.0+"}))
    flite = shutil.which("flite")
    if flite:
        for voice, gender, desc in FLITE:
            rel = f"voices/flite_{voice}.wav"
            if subprocess.run([flite, "-voice", voice, "-t", VOICE_TEXT, "-o", str(dest / rel)], capture_output=True).returncode == 0:
                out.append((rel, {"kind": "timbre", "description": desc, "tags": ["flite", "tts"], "transcript": VOICE_TEXT,
                                  "gender": gender, "language": "en", "source": "flite", "license": "bsd"}))
    return out


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: sample_library.py DEST")
    dest = Path(sys.argv[1])
    (dest / "generated").mkdir(parents=True, exist_ok=True)
    entries = []
    for name, samples, meta in generated():
        rel = f"generated/{name}.wav"
        write_wav(dest / rel, samples)
        entries.append((rel, {**meta, "source": "generated", "license": "cc0-1.0"}))
    entries += real_sounds(dest)
    entries += voices(dest)
    with open(dest / "metadata.jsonl", "w", encoding="utf-8") as f:
        for rel, meta in entries:
            line = {"path": rel, **{k: v for k, v in meta.items() if v is not None}}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    kinds = {}
    for _, meta in entries:
        kinds[meta["kind"]] = kinds.get(meta["kind"], 0) + 1
    print(f"sample library in {dest}: {len(entries)} files ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})", file=sys.stderr)


if __name__ == "__main__":
    main()
