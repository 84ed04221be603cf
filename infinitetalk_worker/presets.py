"""Quality presets and sampling accelerators: named sets of sampler values a caller can ask for.

Facts from WanVideoWrapper 6b286552 ``nodes_sampler.py`` (``predict_with_cfg``): each step is one
transformer pass when ``cfg`` is 1; a second (unconditional) pass when it is not; and, only then, a
third pass without the audio when ``audio_cfg_scale`` is not 1 (at cfg 1 the audio guidance is never
computed). Video input starts sampling at step 2 of ``steps`` (the V2V workflows' ``start_step``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .sizing import bucket_of


@dataclass(frozen=True)
class Preset:
    """Sampler values of one ``quality``; ``None`` keeps the workflow's own value."""

    steps_image: int | None
    steps_video: int | None
    cfg: float | None
    shift_480p: float | None
    shift_720p: float | None
    audio_cfg_scale: float | None
    distill_lora: bool
    summary: str


QUALITY: dict[str, Preset] = {
    "fast": Preset(4, 3, 1.0, 11.0, 11.0, 1.0, True, "fewest steps the distillation LoRA is made for"),
    "balanced": Preset(None, None, None, None, None, None, True,
                       "the shipped workflows' values: distillation LoRA, 6 steps (video: 4), cfg 1, shift 11"),
    "high": Preset(10, 8, 1.0, 11.0, 11.0, 1.0, True, "more steps with the distillation LoRA: finer detail"),
    "reference": Preset(40, 40, 5.0, 7.0, 11.0, 4.0, False,
                        "the reference implementation's own setting, without the distillation LoRA"),
}
DEFAULT_QUALITY = "balanced"
#: what ``balanced`` leaves to the shipped workflows, for the cost table
WORKFLOW_DEFAULTS = {"steps_image": 6, "steps_video": 4, "cfg": 1.0, "audio_cfg_scale": 1.0}
VIDEO_START_STEP = 2


def preset_values(quality: str, input_type: str, width: int, height: int) -> dict[str, float | int | None]:
    """steps, cfg, shift and audio_cfg_scale of a preset for this kind of job and size."""
    preset = QUALITY[quality]
    shift = preset.shift_720p if bucket_of(width, height) == "720p" else preset.shift_480p
    return {"steps": preset.steps_image if input_type == "image" else preset.steps_video,
            "cfg": preset.cfg, "shift": shift, "audio_cfg_scale": preset.audio_cfg_scale}


def passes_per_step(cfg: float, audio_cfg_scale: float) -> int:
    """Transformer passes per sampling step, as ``predict_with_cfg`` makes them."""
    if math.isclose(cfg, 1.0):
        return 1
    return 2 if math.isclose(audio_cfg_scale, 1.0) else 3


def evaluations_per_window(quality: str, input_type: str) -> int:
    """Transformer passes one 81-frame window costs with a preset (what the README's cost table shows)."""
    preset = QUALITY[quality]
    steps = preset.steps_image if input_type == "image" else preset.steps_video
    steps = steps or WORKFLOW_DEFAULTS[f"steps_{input_type}"]
    cfg = WORKFLOW_DEFAULTS["cfg"] if preset.cfg is None else preset.cfg
    audio_cfg = WORKFLOW_DEFAULTS["audio_cfg_scale"] if preset.audio_cfg_scale is None else preset.audio_cfg_scale
    sampled = steps - (VIDEO_START_STEP if input_type == "video" else 0)
    return sampled * passes_per_step(cfg, audio_cfg)


@dataclass(frozen=True)
class Accelerator:
    """One of WanVideoWrapper's step caches: its node class, threshold input and the node's own defaults."""

    class_type: str
    threshold_input: str
    default_threshold: float
    max_threshold: float
    fixed_inputs: dict[str, object]
    start_step: int


#: The cache nodes of ``cache_methods/nodes_cache.py``, with the defaults of their INPUT_TYPES (ranges as
#: the node lock records them). Each reuses the model's output of a previous step instead of computing a
#: step whose input changed less than the threshold.
ACCELERATORS: dict[str, Accelerator] = {
    "teacache": Accelerator("WanVideoTeaCache", "rel_l1_thresh", 0.19, 1.0,
                            {"start_step": 1, "end_step": -1, "cache_device": "offload_device",
                             "use_coefficients": True, "mode": "e"}, 1),
    "magcache": Accelerator("WanVideoMagCache", "magcache_thresh", 0.02, 0.3,
                            {"magcache_K": 4, "start_step": 1, "end_step": -1, "cache_device": "offload_device"}, 1),
    "easycache": Accelerator("WanVideoEasyCache", "easycache_thresh", 0.015, 1.0,
                             {"start_step": 10, "end_step": -1, "cache_device": "offload_device"}, 10),
}
ACCELERATION_CHOICES = ("none", *ACCELERATORS)


def cache_node(acceleration: str, threshold: float | None) -> dict[str, object]:
    """The API-format node that makes the sampler skip steps, to be linked to its ``cache_args``."""
    accelerator = ACCELERATORS[acceleration]
    value = accelerator.default_threshold if threshold is None else threshold
    return {"class_type": accelerator.class_type,
            "inputs": {accelerator.threshold_input: value, **accelerator.fixed_inputs},
            "_meta": {"title": f"Step cache ({acceleration}), added by the worker for acceleration"}}


def sampling_warnings(report: dict[str, object], acceleration: str) -> list[str]:
    """Settings that were applied but cannot change anything, said rather than left to be discovered."""
    notes = []
    cfg, audio_cfg, steps = report.get("cfg"), report.get("audio_cfg_scale"), report.get("steps")
    if isinstance(cfg, float | int) and isinstance(audio_cfg, float | int) and math.isclose(cfg, 1.0) \
            and not math.isclose(audio_cfg, 1.0):
        notes.append(f"audio_cfg_scale {audio_cfg:g} has no effect at cfg 1: the sampler computes audio guidance "
                     "only with text guidance (cfg other than 1).")
    accelerator = ACCELERATORS.get(acceleration)
    if accelerator and isinstance(steps, int) and steps <= accelerator.start_step + 1:
        notes.append(f"acceleration {acceleration} starts caching after step {accelerator.start_step}, so with "
                     f"{steps} steps it skips nothing.")
    return notes
