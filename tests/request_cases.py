"""Sample job inputs of every kind and option, shared by the tests that render or submit them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infinitetalk_worker.presets import ACCELERATORS, QUALITY
from infinitetalk_worker.request import COLORMATCH
from infinitetalk_worker.sizing import BUCKET_ALIASES, BUCKET_AREAS
from testsupport.media_factory import make_image, make_video, make_wav

OPTIONS = {
    "seed": 1234, "steps": 8, "cfg": 2.5, "shift": 7.0, "audio_scale": 1.2,
    "negative_prompt": "blurry", "prompt": "A woman explains something", "width": 640, "height": 368,
    "max_frame": 30,
}
MULTI_OPTIONS = {"speaker_boxes": [[0.0, 0.1, 0.4, 1.0], [0.6, 0.1, 1.0, 1.0]], "multi_audio_type": "add"}
CASES = [
    (kind, people, extra)
    for kind in ("image", "video")
    for people in ("single", "multi")
    for extra in ({}, OPTIONS) + (
        ({**OPTIONS, **MULTI_OPTIONS}, {"multi_audio_type": "add"}) if people == "multi" else ())
]
CASE_IDS = [f"{k}-{p}-{'+'.join(sorted(e)) or 'defaults'}" for k, p, e in CASES]

# Every preset and option of the request model, each on its own (issue 11): the graph each one writes.
KINDS = [(kind, people) for kind in ("image", "video") for people in ("single", "multi")]
OPTION_CASES = (
    [(k, p, {"quality": quality}) for quality in QUALITY for k, p in KINDS]
    + [("image", "single", {"resolution": name}) for name in (*BUCKET_AREAS, *BUCKET_ALIASES)]
    + [("video", "multi", {"resolution": "480p"})]
    + [("image", "single", {"colormatch": choice}) for choice in COLORMATCH]
    + [(k, p, {"acceleration": name}) for name in ACCELERATORS for k, p in (("image", "single"), ("video", "multi"))]
    + [("image", "single", {"acceleration": name, "acceleration_threshold": ACCELERATORS[name].max_threshold})
       for name in ACCELERATORS]
    + [(k, p, {"audio_cfg_scale": 4.0, "motion_frame": 25}) for k, p in KINDS]
    + [(k, p, {"separate_vocals": False}) for k, p in KINDS]
)
OPTION_CASE_IDS = [f"{k}-{p}-" + "+".join(f"{key}={value}" for key, value in sorted(e.items()))
                   for k, p, e in OPTION_CASES]
SPEECH_1_S, SPEECH_2_S = 0.8, 0.6


def make_case_media(folder: Path) -> dict[str, str]:
    """A portrait, a 1 s source video and two short speech-like tracks in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "image_path": str(make_image(folder / "portrait.png", (320, 240))),
        "video_path": str(make_video(folder / "source.mp4", 1.0, (64, 48), fps=25)),
        "wav_path": str(make_wav(folder / "speech_1.wav", SPEECH_1_S, frequency=220.0)),
        "wav_path_2": str(make_wav(folder / "speech_2.wav", SPEECH_2_S, frequency=330.0)),
    }


def case_input(kind: str, people: str, extra: dict[str, Any], media: dict[str, str]) -> dict[str, Any]:
    """The job input of one case, with its media given as paths."""
    raw = {"input_type": kind, "person_count": people, "wav_path": media["wav_path"], **extra}
    raw[f"{kind}_path"] = media[f"{kind}_path"]
    if people == "multi":
        raw["wav_path_2"] = media["wav_path_2"]
    return raw
