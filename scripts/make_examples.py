#!/usr/bin/env python3
"""Regenerate examples/: drawn portraits, espeak-ng speech, short videos and one request per workflow kind.

Everything here is made from scratch so the project may redistribute it (see examples/README.md).
Needs Pillow, PyAV and the ``espeak-ng`` program (``apt-get install espeak-ng``).
Run from anywhere: ``python scripts/make_examples.py``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
FPS = 25

SPEECH = {
    "speech_1.wav": ("en-us", "Hello! This short clip was made for testing the talking video worker."),
    "speech_2.wav": ("en-gb+f3", "And this is the second speaker, answering with a different voice."),
}
PERSON_A = {"skin": (238, 196, 160), "hair": (70, 45, 30), "shirt": (52, 101, 164), "iris": (60, 110, 60)}
PERSON_B = {"skin": (190, 140, 105), "hair": (25, 25, 30), "shirt": (170, 60, 70), "iris": (80, 55, 35)}


def draw_person(draw: ImageDraw.ImageDraw, cx: float, top: float, scale: float, look: dict) -> None:
    """A front-facing head and shoulders: flat shapes a face detector and a person both read as a face."""
    s = scale
    draw.ellipse([cx - 170 * s, top + 330 * s, cx + 170 * s, top + 620 * s], fill=look["shirt"])  # shoulders
    draw.rectangle([cx - 45 * s, top + 250 * s, cx + 45 * s, top + 350 * s], fill=look["skin"])  # neck
    draw.ellipse([cx - 118 * s, top + 10 * s, cx + 118 * s, top + 200 * s], fill=look["hair"])  # hair
    draw.ellipse([cx - 105 * s, top + 40 * s, cx + 105 * s, top + 305 * s], fill=look["skin"])  # face
    draw.ellipse([cx - 120 * s, top + 150 * s, cx - 96 * s, top + 200 * s], fill=look["skin"])  # ears
    draw.ellipse([cx + 96 * s, top + 150 * s, cx + 120 * s, top + 200 * s], fill=look["skin"])
    draw.chord([cx - 110 * s, top + 20 * s, cx + 110 * s, top + 150 * s], 180, 360, fill=look["hair"])  # fringe
    for side in (-1, 1):
        ex = cx + side * 42 * s
        draw.arc([ex - 26 * s, top + 116 * s, ex + 26 * s, top + 146 * s], 200, 340,
                 fill=look["hair"], width=max(2, int(6 * s)))  # eyebrow, gently arched
        draw.ellipse([ex - 22 * s, top + 142 * s, ex + 22 * s, top + 168 * s], fill=(250, 250, 250))
        draw.ellipse([ex - 10 * s, top + 144 * s, ex + 10 * s, top + 166 * s], fill=look["iris"])
        draw.ellipse([ex - 4 * s, top + 150 * s, ex + 4 * s, top + 160 * s], fill=(15, 15, 15))
    shade = tuple(int(c * 0.82) for c in look["skin"])
    draw.polygon([(cx, top + 165 * s), (cx - 14 * s, top + 215 * s), (cx + 14 * s, top + 215 * s)], fill=shade)
    draw.chord([cx - 40 * s, top + 225 * s, cx + 40 * s, top + 265 * s], 0, 180, fill=(160, 60, 60))  # mouth


def background(width: int, height: int) -> Image.Image:
    """A soft vertical gradient, so the picture is not a flat cut-out."""
    ramp = np.linspace(0, 1, height)[:, None, None]
    top, bottom = np.array([205, 220, 235]), np.array([150, 170, 190])
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def portrait() -> Image.Image:
    image = background(512, 512)
    draw_person(ImageDraw.Draw(image), 256, 40, 1.0, PERSON_A)
    return image


def two_people() -> Image.Image:
    image = background(768, 512)
    draw = ImageDraw.Draw(image)
    draw_person(draw, 200, 70, 0.85, PERSON_A)
    draw_person(draw, 568, 70, 0.85, PERSON_B)
    return image


def speak(voice: str, text: str, target: Path) -> None:
    """16 kHz mono 16-bit WAV from espeak-ng (never an mbrola voice: those carry another licence)."""
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        with wave.open(str(raw)) as source:
            rate, samples = source.getframerate(), np.frombuffer(source.readframes(source.getnframes()), np.int16)
    positions = np.arange(0, len(samples), rate / 16000)
    resampled = np.interp(positions, np.arange(len(samples)), samples.astype(np.float64)).astype(np.int16)
    with wave.open(str(target), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(16000)
        sink.writeframes(resampled.tobytes())


def video(still: Image.Image, size: tuple[int, int], target: Path, seconds: float = 2.0) -> None:
    """A gentle zoom and sway over the still: a real, moving H.264 clip of a known person."""
    width, height = size
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "veryslow"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        for index in range(int(seconds * FPS)):
            phase = 2 * math.pi * index / (seconds * FPS)
            zoom = 1.05 + 0.04 * (1 - math.cos(phase)) / 2  # never below 1.05: room for the sway
            crop_w, crop_h = still.width / zoom, still.height / zoom
            left = (still.width - crop_w) / 2 + 6 * math.sin(phase)
            top = (still.height - crop_h) / 2
            frame_image = still.resize((width, height), Image.LANCZOS, box=(left, top, left + crop_w, top + crop_h))
            for packet in stream.encode(av.VideoFrame.from_image(frame_image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def request(**job: object) -> dict:
    return {"input": job}


REQUESTS = {
    "request_i2v_single.json": request(
        input_type="image", person_count="single", image_path="examples/portrait.png",
        wav_path="examples/speech_1.wav", prompt="A person talking naturally, friendly expression",
        width=512, height=512,
    ),
    "request_i2v_multi.json": request(
        input_type="image", person_count="multi", image_path="examples/two_people.png",
        wav_path="examples/speech_1.wav", wav_path_2="examples/speech_2.wav", multi_audio_type="add",
        prompt="Two people having a friendly conversation", width=768, height=512,
    ),
    "request_v2v_single.json": request(
        input_type="video", person_count="single", video_path="examples/portrait.mp4",
        wav_path="examples/speech_1.wav", prompt="A person talking naturally", width=512, height=512,
    ),
    "request_v2v_multi.json": request(
        input_type="video", person_count="multi", video_path="examples/two_people.mp4",
        wav_path="examples/speech_1.wav", wav_path_2="examples/speech_2.wav", multi_audio_type="add",
        prompt="Two people having a friendly conversation", width=768, height=512,
    ),
    "request_text_single.json": request(
        input_type="image", person_count="single", image_path="examples/portrait.png",
        text="Hello! I was drawn by a script, and now I can talk.", voice="af_heart",
        prompt="A person talking naturally, friendly expression", width=512, height=512,
    ),
    "request_text_two.json": request(
        input_type="image", person_count="multi", image_path="examples/two_people.png",
        text="Have you heard? We can talk now.", voice="af_heart",
        text_2="Yes, and we did not record a single word.", voice_2="am_adam", multi_audio_type="add",
        prompt="Two people having a friendly conversation", width=768, height=512,
    ),
    "request_text_dialogue.json": request(
        input_type="image", person_count="multi", image_path="examples/two_people.png",
        dialogue="(s1) Good morning! Did you sleep well? (s2) Very well, thank you. And you? "
                 "(s1) Like a log.", voice="af_heart", voice_2="am_adam",
        prompt="Two people having a friendly conversation", width=768, height=512,
    ),
    "request_test.json": request(test=True),
}


def main() -> None:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the speech clips: apt-get install espeak-ng")
    EXAMPLES.mkdir(exist_ok=True)
    single, pair = portrait(), two_people()
    single.save(EXAMPLES / "portrait.png", optimize=True)
    pair.save(EXAMPLES / "two_people.png", optimize=True)
    for name, (voice, text) in SPEECH.items():
        speak(voice, text, EXAMPLES / name)
    video(single, (256, 256), EXAMPLES / "portrait.mp4", seconds=6.0)  # longer than speech_1
    video(pair, (384, 256), EXAMPLES / "two_people.mp4", seconds=10.0)  # longer than both clips in a row
    for name, body in REQUESTS.items():
        (EXAMPLES / name).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    (REPO_ROOT / "test_input.json").write_text(json.dumps(REQUESTS["request_i2v_single.json"], indent=2) + "\n",
                                               encoding="utf-8")


if __name__ == "__main__":
    main()
