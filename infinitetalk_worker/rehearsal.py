"""The rehearsal: the four production graphs run end to end on stand-in weights, checked as a user would.

``python -m infinitetalk_worker rehearse`` sends jobs through ``Pipeline.handle`` (the handler's own
path) to a ComfyUI whose model folders hold the stand-ins written by ``standins``, then decodes each
MP4 and checks what a user would: it plays, its frames follow the audio (and ``max_frame``), 25 fps,
the requested size, and the soundtrack is the request's own audio. The picture itself is noise
(random weights); picture quality, GPU kernels and fp8 speed are out of its reach.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np

from .config import REPO_ROOT, Settings, load_settings
from .constants import FPS
from .derived_media import write_wav
from .pipeline import Pipeline
from .request import ORDERS
from .standin_graph import StandinRun

EXAMPLES = REPO_ROOT / "examples"
CHECK_RATE = 16000
MAX_SOUND_LAG_S = 0.1
MIN_SOUND_CORRELATION = 0.9
#: a job's deadline in the rehearsal: on CPU a 128x128 case takes minutes, the 480p case over an hour,
#: past the worker's default JOB_DEADLINE_S (one hour)
REHEARSAL_DEADLINE_S = 6 * 3600.0


@dataclass(frozen=True)
class Case:
    """One rehearsal job: which workflow, how long each voice is, and the request's extra keys."""

    name: str
    input_type: str
    person_count: str
    voices: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    video_seconds: float = 2.0
    #: the picture of an image case, when not the example for its person count
    image: str | None = None
    #: the size the MP4 must have, when the request does not name it (a resolution bucket)
    size: tuple[int, int] | None = None

    @property
    def mode(self) -> str:
        if self.person_count != "multi":
            return "para"
        order = self.extra.get("order")
        return ORDERS[order][0] if order else self.extra.get("multi_audio_type", "para")

    @property
    def speaker_2_first(self) -> bool:
        """order right_left: the soundtrack must hold voice 2, then voice 1."""
        return self.person_count == "multi" and self.extra.get("order") == "right_left"


SMALL = {"width": 128, "height": 128}
CASES: tuple[Case, ...] = (
    Case("i2v_single", "image", "single", (1.5,), SMALL, quick=True),
    Case("i2v_multi_para_boxes", "image", "multi", (1.5, 1.0),
         {**SMALL, "multi_audio_type": "para", "speaker_boxes": [[0.0, 0.0, 0.5, 0.75], [0.5, 0.25, 1.0, 1.0]]},
         quick=True),
    Case("v2v_single_steps4", "video", "single", (1.5,), {**SMALL, "steps": 4}, quick=True),
    Case("v2v_multi_add", "video", "multi", (0.8, 0.8), {**SMALL, "multi_audio_type": "add"}, quick=True),
    Case("i2v_single_3_windows", "image", "single", (6.4,), SMALL),
    Case("i2v_single_max_frame_cfg_no_offload", "image", "single", (3.0,),
         {**SMALL, "max_frame": 30, "cfg": 2.0, "negative_prompt": "blurry, static", "force_offload": False}),
    Case("i2v_single_non_square", "image", "single", (1.0,), {"width": 160, "height": 128}),
    Case("i2v_multi_add", "image", "multi", (0.8, 1.0), {**SMALL, "multi_audio_type": "add"}),
    Case("i2v_multi_right_left", "image", "multi", (0.6, 1.2), {**SMALL, "order": "right_left"}),
    Case("v2v_single_steps8", "video", "single", (1.5,), {**SMALL, "steps": 8}),
    Case("v2v_multi_para", "video", "multi", (1.5, 1.0), {**SMALL, "multi_audio_type": "para"}),
    # quality 'reference' without its 40 steps (CPU time): the graph without the distillation LoRA, with
    # text and audio guidance (three passes per step)
    Case("i2v_single_reference_3_steps", "image", "single", (1.0,), {**SMALL, "quality": "reference", "steps": 3}),
    Case("i2v_single_colormatch_motion_frame", "image", "single", (3.6,),
         {**SMALL, "colormatch": "mkl", "motion_frame": 25}),
    Case("v2v_single_teacache", "video", "single", (1.5,), {**SMALL, "steps": 8, "acceleration": "teacache"}),
    # the 480p bucket for a 768x512 picture: 800x512 (area 640x640, aspect within 1/16); one step, as the
    # full-size stand-in VAE on a whole window at this size is most of the case's CPU time
    Case("i2v_single_480p_non_square", "image", "single", (1.0,), {"resolution": "480p", "steps": 1},
         image="two_people.png", size=(800, 512)),
)


@dataclass
class Outcome:
    case: Case
    problems: list[str]
    execution_s: float | None = None
    peak_rss_bytes: int | None = None
    frames: int | None = None
    wall_s: float = 0.0
    changes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


# -- media for the cases ------------------------------------------------------------------------


def voice_file(seconds: float, index: int, folder: Path) -> Path:
    """A voice of exactly ``seconds``, cut from the example speech (looped where it is shorter)."""
    source = decode_mono(EXAMPLES / ("speech_1.wav" if index == 0 else "speech_2.wav"), CHECK_RATE)
    needed = int(round(seconds * CHECK_RATE))
    samples = np.resize(source, needed)  # repeats the speech when it is shorter than asked
    path = folder / f"voice{index + 1}_{seconds:g}s.wav"
    write_wav(path, samples, CHECK_RATE)
    return path


def video_file(seconds: float, people: str, folder: Path) -> Path:
    """The example clip for one or two people, cut to ``seconds`` at 25 fps and 160x128."""
    source = EXAMPLES / ("portrait.mp4" if people == "single" else "two_people.mp4")
    path = folder / f"{source.stem}_{seconds:g}s.mp4"
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        for index, frame in enumerate(src.decode(video=0)):
            if index >= round(seconds * FPS):
                break
            small = frame.reformat(width=160, height=128, format="yuv420p")
            small.pts = None
            dst.mux(stream.encode(small))
        dst.mux(stream.encode(None))
    return path


def case_input(case: Case, folder: Path) -> dict[str, Any]:
    """The job input of a case, with its media files written into ``folder``."""
    raw: dict[str, Any] = {"input_type": case.input_type, "person_count": case.person_count,
                           "prompt": "A person talking naturally", "seed": 1234, **case.extra}
    if case.input_type == "image":
        default = "portrait.png" if case.person_count == "single" else "two_people.png"
        raw["image_path"] = str(EXAMPLES / (case.image or default))
    else:
        raw["video_path"] = str(video_file(case.video_seconds, case.person_count, folder))
    for index, seconds in enumerate(case.voices):
        raw["wav_path" if index == 0 else "wav_path_2"] = str(voice_file(seconds, index, folder))
    return raw


# -- what a user would check --------------------------------------------------------------------


def check_result(case: Case, raw: dict[str, Any], result: dict[str, Any], video: Path) -> list[str]:
    """Every way the MP4 differs from what the request asked for, one sentence each."""
    facts = probe_mp4(video)
    problems = []
    voices = [decode_mono(Path(raw[key]), CHECK_RATE) for key in ("wav_path", "wav_path_2") if key in raw]
    if case.speaker_2_first:
        voices.reverse()
    seconds = [len(v) / CHECK_RATE for v in voices]
    audio_frames = int((sum(seconds) if case.mode == "add" else max(seconds)) * FPS)
    expected = min(audio_frames, raw.get("max_frame") or audio_frames)
    if facts["frames"] != result.get("frames"):
        problems.append(f"the MP4 has {facts['frames']} frames, the result says {result.get('frames')}")
    if abs(facts["frames"] - expected) > 1:
        problems.append(f"{facts['frames']} frames for {expected} that the audio and max_frame call for")
    if round(facts["fps"], 3) != FPS:
        problems.append(f"{facts['fps']} fps instead of {FPS}")
    size = case.size or (raw.get("width", 512), raw.get("height", 512))
    if (facts["width"], facts["height"]) != size:
        problems.append(f"{facts['width']}x{facts['height']} instead of the requested {size[0]}x{size[1]}")
    if (result.get("width"), result.get("height")) != (facts["width"], facts["height"]):
        problems.append(f"the result says {result.get('width')}x{result.get('height')}, "
                        f"the MP4 is {facts['width']}x{facts['height']}")
    sound = _expected_sound(voices, case.mode)
    if expected < audio_frames:  # max_frame cut the video: the soundtrack ends with the picture
        sound = sound[: int(expected / FPS * CHECK_RATE)]
    problems += _check_sound(facts["sound"], sound)
    return problems


def _expected_sound(voices: list[np.ndarray], mode: str) -> np.ndarray:
    if len(voices) == 1:
        return voices[0]
    if mode == "add":
        return np.concatenate(voices)
    mixed = np.zeros(max(len(v) for v in voices), dtype=np.float32)
    for voice in voices:
        mixed[: len(voice)] += voice
    return mixed


def _check_sound(sound: np.ndarray | None, expected: np.ndarray) -> list[str]:
    """The soundtrack must be the request's audio: as long (within a frame) and correlated with it."""
    if sound is None or not len(sound):
        return ["the MP4 has no soundtrack"]
    problems = []
    difference = len(sound) / CHECK_RATE - len(expected) / CHECK_RATE
    if abs(difference) > 1 / FPS:
        problems.append(f"the soundtrack is {len(sound) / CHECK_RATE:.3f} s long, the request's audio "
                        f"{len(expected) / CHECK_RATE:.3f} s")
    correlation = best_correlation(sound, expected, int(MAX_SOUND_LAG_S * CHECK_RATE))
    if correlation < MIN_SOUND_CORRELATION:
        problems.append(f"the soundtrack does not match the request's audio (correlation {correlation:.2f})")
    return problems


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """The highest normalised correlation of two signals over lags up to ``max_lag`` samples."""
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 8):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(len(x), len(y))
        if n < CHECK_RATE // 10:
            continue
        x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
        denominator = float(np.sqrt((x * x).sum() * (y * y).sum())) or 1.0
        best = max(best, float((x * y).sum()) / denominator)
    return best


def probe_mp4(path: Path) -> dict[str, Any]:
    """Decode every frame and the soundtrack: proves the file plays, and gives what a player shows."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        facts: dict[str, Any] = {"frames": frames, "fps": float(stream.average_rate or 0),
                                 "width": stream.codec_context.width, "height": stream.codec_context.height}
    facts["sound"] = decode_mono(path, CHECK_RATE) if _has_audio(path) else None
    return facts


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def decode_mono(path: Path, rate: int) -> np.ndarray:
    """The first audio track as float32 mono at ``rate`` (PyAV's resampler)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


# -- running ---------------------------------------------------------------------------------------


class PeakRss:
    """Samples a process's resident memory while a case runs (ComfyUI's peak for that case)."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, rss_bytes(self.pid) or 0)


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def comfyui_pid(port: int) -> int | None:
    """The process listening on ComfyUI's port, found through /proc (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return int(proc.name)
    return None


def run_case(pipeline: Pipeline, case: Case, folder: Path, pid: int | None) -> Outcome:
    """One job through the handler's path, then the user's checks on what came back."""
    started = time.monotonic()
    raw = case_input(case, folder)
    with PeakRss(pid) as rss:
        result = asyncio.run(pipeline.handle({"id": f"rehearsal-{case.name}", "input": raw}))
    outcome = Outcome(case, [], peak_rss_bytes=rss.peak or None, wall_s=time.monotonic() - started)
    if "error" in result:
        outcome.problems.append(f"the job failed: {result['error']}")
        return outcome
    video = folder / f"{case.name}.mp4"
    video.write_bytes(base64.b64decode(result["video"]))
    outcome.execution_s = (result.get("timings") or {}).get("comfyui_execution_s")
    outcome.frames = result.get("frames")
    outcome.changes = list(result.get("graph_changes") or [])
    outcome.problems = check_result(case, raw, result, video)
    return outcome


def rehearsal_settings(base: Settings, comfyui_url: str | None, folder: Path) -> Settings:
    """The worker's own settings, with stand-ins allowed and the case media readable."""
    return dataclasses.replace(
        base, comfyui_url=(comfyui_url or base.comfyui_url).rstrip("/"), allow_standin_models=True,
        workflow_dir=REPO_ROOT / "workflows", allowed_input_roots=[folder.resolve(), EXAMPLES.resolve()],
        inline_output_limit_bytes=min(base.inline_output_limit_bytes, 9 * 1024 * 1024),
        job_deadline_s=max(base.job_deadline_s, REHEARSAL_DEADLINE_S),
    )


def rehearse(base: Settings, comfyui_url: str | None, cases: list[Case], full_text_encoder: bool,
             out=sys.stdout) -> list[Outcome]:
    """Run the cases one after another and print a line per case as it ends."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        settings = rehearsal_settings(base, comfyui_url, Path(tmp))
        pid = comfyui_pid(urlsplit(settings.comfyui_url).port or 80)
        pipeline = Pipeline(settings, standin_run=StandinRun(full_text_encoder=full_text_encoder))
        for case in cases:
            outcome = run_case(pipeline, case, Path(tmp), pid)
            outcomes.append(outcome)
            out.write(format_outcome(outcome) + "\n")
            out.flush()
    return outcomes


def format_outcome(outcome: Outcome) -> str:
    verdict = "PASS" if outcome.passed else "FAIL"
    execution = f"{outcome.execution_s:.0f} s" if outcome.execution_s is not None else "-"
    rss = f"{outcome.peak_rss_bytes / 2**30:.1f} GiB" if outcome.peak_rss_bytes else "-"
    line = (f"{verdict} {outcome.case.name}: frames {outcome.frames}, ComfyUI execution {execution}, "
            f"ComfyUI peak RSS {rss}, wall {outcome.wall_s:.0f} s")
    line += "".join(f"\n    changed for this CPU: {change}" for change in outcome.changes)
    return line + "".join(f"\n    - {problem}" for problem in outcome.problems)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rehearse", help="run the four production graphs on stand-in weights and check the videos")
    parser.add_argument("--comfyui", help="ComfyUI's URL (default COMFYUI_URL)")
    parser.add_argument("--cases", choices=("all", "quick"), default="all", help="quick: one case per workflow")
    parser.add_argument("--full-text-encoder", action="store_true",
                        help="run umt5-xxl for the prompts instead of stand-in cached embeddings "
                        "(11-14 min a graph on CPU)")
    parser.add_argument("--only", action="append", default=[], help="run only the named case (repeatable)")
    parser.set_defaults(func=_rehearse_command)


def _rehearse_command(args: argparse.Namespace) -> int:
    cases = [c for c in CASES if args.cases == "all" or c.quick]
    if args.only:
        cases = [c for c in CASES if c.name in args.only]
    started = time.monotonic()
    outcomes = rehearse(load_settings(), args.comfyui, cases, args.full_text_encoder)
    failed = [o for o in outcomes if not o.passed]
    sys.stdout.write(f"{len(outcomes) - len(failed)} of {len(outcomes)} cases passed in "
                     f"{(time.monotonic() - started) / 60:.1f} min\n")
    return 1 if failed else 0
