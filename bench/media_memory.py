"""Media steps, repeated: does any of them keep memory per call?

    python bench/media_memory.py [--calls 3000]

Runs each per-job media step of the worker many times in this process, on the smoke set's inputs
(a 22.05 kHz and a 16 kHz voice, a 160x120 clip): probing a voice, probing the video, the two-voice
soundtrack (decode, resample to 48 kHz stereo, mix, write) and the face search over the clip. After a
warm-up it prints, per step, the RSS growth per call and the source line whose Python allocations grew
most (tracemalloc). PyAV 16.0.1 kept about 8 KB per soundtrack in ``AudioResampler.resample``
(PyAV-Org/PyAV#2282); the target is under 0.5 KB per call for every step (allocator noise).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TARGET_KB_PER_CALL = 0.5
WARM_CALLS = 200


def steps(inputs: Path, out: Path) -> dict[str, Callable[[], object]]:
    from infinitetalk_worker.config import Settings
    from infinitetalk_worker.derived_media import make_soundtrack
    from infinitetalk_worker.faces import faces_in_video
    from infinitetalk_worker.probe import probe_audio_track, probe_video

    settings = Settings()
    voices = [inputs / "voice_1.wav", inputs / "voice_2.wav"]
    return {
        "voice probe": lambda: probe_audio_track(voices[0], "wav_path", settings),
        "video probe": lambda: probe_video(inputs / "clip.mp4", "video_path", settings),
        "soundtrack (2 voices)": lambda: make_soundtrack(voices, "para", out / "soundtrack.wav"),
        "faces in the clip": lambda: faces_in_video(inputs / "clip.mp4", (128, 128), 25),
    }


def measure(step: Callable[[], object], calls: int) -> tuple[float, str]:
    """(RSS growth per call in KB, the line whose Python allocations grew most)."""
    for _ in range(WARM_CALLS):
        step()
    gc.collect()
    common.trim_heap()
    tracemalloc.start(1)
    before, rss = tracemalloc.take_snapshot(), common.rss_mb()
    for _ in range(calls):
        step()
    gc.collect()
    common.trim_heap()
    grown = common.rss_mb() - rss
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    top = tracemalloc.take_snapshot().filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    tracemalloc.stop()
    where = f"{top[0].size_diff / calls:.0f} B/call at {top[0].traceback[0]}" if top else "nothing"
    return grown * 1024 / calls, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    import av

    print(f"PyAV {av.__version__}, {args.calls} calls per step after {WARM_CALLS} warm-up calls")
    passed = True
    with tempfile.TemporaryDirectory(prefix="bench-media-memory-") as temp:
        inputs = common.make_inputs(Path(temp) / "inputs")
        for name, step in steps(inputs, Path(temp)).items():
            per_call, where = measure(step, args.calls)
            passed &= common.verdict(name, per_call < TARGET_KB_PER_CALL,
                                     f"RSS {per_call:+.2f} KB per call; most grown Python line: {where}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
