"""Memory profiles: block swap, offload and VAE tiling chosen from the GPU's memory.

The shipped workflows swap 20 of the transformer's 40 blocks to the CPU so that they fit a 24 GB card;
on a 48 or 80 GB card that only costs time. At start-up the worker reads the card's total memory from
ComfyUI's ``GET /system_stats`` and picks the first profile of ``PROFILES`` whose ``min_vram_gib`` the
card reaches; ``MEMORY_PROFILE=<name>`` picks one by name. The values are written into the graph by
role (``block_swap``, ``model``, ``image_embeds``, ``sampler``, ``vae_tiling``), so a workflow without
those nodes (the CPU smoke set) simply keeps its own settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from .constants import FPS
from .frames import (
    ENCODE_GPU_BYTES_PER_VALUE,
    MAX_NODE_FRAMES,
    MOTION_FRAMES,
    WINDOW_FRAMES,
    encode_gpu_bytes,
    held_frame_bytes,
    window_count,
    window_size,
)

log = logging.getLogger(__name__)

GIB: Final = 1024**3
AUTO: Final = "auto"
WORKFLOW: Final = "workflow"  # write nothing: the workflow's own settings
WINDOW_NODE: Final = "WanVideoImageToVideoMultiTalk"
ENCODE_NODE: Final = "WanVideoEncode"  # video input: the source clip is encoded whole


@dataclass(frozen=True)
class MemoryProfile:
    """One row of the memory table; ``None`` values leave the workflow's own setting."""

    name: str
    min_vram_gib: float  # auto picks the largest profile whose threshold the card's vram_total reaches
    blocks_to_swap: int | None  # WanVideoBlockSwap.blocks_to_swap: transformer blocks kept on the CPU
    load_device: str | None  # WanVideoModelLoader.load_device: main_device (GPU) or offload_device (CPU)
    force_offload: bool | None  # sampler and InfiniteTalk node: move the model off the GPU after use
    tiled_vae: bool | None  # VAE encode/decode in tiles (less VRAM, a little slower)
    why: str

    def graph_values(self, explicit_fields: set[str]) -> dict[str, Any]:
        """The graph values this profile sets; a request's explicit ``force_offload`` wins over it."""
        values = {"blocks_to_swap": self.blocks_to_swap, "load_device": self.load_device,
                  "tiled_vae": self.tiled_vae, "enable_vae_tiling": self.tiled_vae}
        if "force_offload" not in explicit_fields:
            values["force_offload"] = self.force_offload
        return {name: value for name, value in values.items() if value is not None}


# Ordered from the largest card down: the first whose threshold the card reaches is chosen.
# Thresholds sit below the nominal sizes because cards report less (an L40S: 45.0 GiB, a 4090: 24.0 GiB).
PROFILES: Final[tuple[MemoryProfile, ...]] = (
    MemoryProfile("80gb", 70, 0, "main_device", False, False,
                  "the whole model stays on the GPU between jobs: no swapping, no reloading"),
    MemoryProfile("48gb", 44, 0, "main_device", True, False,
                  "the whole model on the GPU while sampling, moved off after each job"),
    MemoryProfile("32gb", 30, 10, "offload_device", True, False,
                  "10 of 40 blocks swapped to the CPU"),
    MemoryProfile("24gb", 20, 20, "offload_device", True, False,
                  "the shipped workflows' own settings: 20 of 40 blocks swapped"),
    MemoryProfile("16gb", 0, 40, "offload_device", True, True,
                  "every block swapped and the VAE tiled; slow, and not enough for large sizes"),
)
# MEMORY_PROFILE=workflow, and auto when ComfyUI shows no GPU (the CPU smoke set): write nothing.
WORKFLOW_PROFILE: Final = MemoryProfile(WORKFLOW, 0, None, None, None, None, "the workflow's own settings")
PROFILE_NAMES: Final = tuple(p.name for p in PROFILES) + (WORKFLOW,)


def parse_profile_setting(value: Any) -> str:
    """MEMORY_PROFILE: ``auto`` or a profile name, case-insensitive; anything else stops the worker."""
    name = str(value).strip().lower() or AUTO
    if name != AUTO and name not in PROFILE_NAMES:
        raise ValueError(f"must be {AUTO} or one of {', '.join(PROFILE_NAMES)}")
    return name


def profile_named(name: str) -> MemoryProfile:
    """The profile of that name (``workflow`` included)."""
    return next((p for p in PROFILES + (WORKFLOW_PROFILE,) if p.name == name), WORKFLOW_PROFILE)


def profile_for_vram(vram_gib: float) -> MemoryProfile:
    """The profile auto picks for a card with this much memory (GiB of ``vram_total``)."""
    return next(p for p in PROFILES if vram_gib >= p.min_vram_gib)


def gpu_vram_gib(system_stats: dict[str, Any]) -> float | None:
    """Total memory of the first GPU in a ``/system_stats`` answer; ``None`` when it lists none (``--cpu``)."""
    for device in system_stats.get("devices") or []:
        if isinstance(device, dict) and device.get("type") != "cpu" and \
                isinstance(device.get("vram_total"), (int, float)) and device["vram_total"] > 0:
            return device["vram_total"] / GIB
    return None


def choose_profile(setting: str, system_stats: dict[str, Any] | None) -> MemoryProfile:
    """MEMORY_PROFILE's choice, or (auto) the one for the card ComfyUI reports."""
    if setting != AUTO:
        return profile_named(setting)
    vram = gpu_vram_gib(system_stats or {})
    if vram is None:
        log.info("Memory profile %s: %s, so the workflows keep their own memory settings.", WORKFLOW,
                 "no GPU memory is known" if system_stats is None else "ComfyUI shows no GPU")
        return WORKFLOW_PROFILE
    profile = profile_for_vram(vram)
    log.info("Memory profile %s for a GPU with %.1f GiB (%s).", profile.name, vram, profile.why)
    return profile


def ram_total(system_stats: dict[str, Any] | None) -> int | None:
    """The machine's RAM in bytes as ComfyUI reports it (``system.ram_total``), if it does."""
    value = ((system_stats or {}).get("system") or {}).get("ram_total")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def window_settings(graph: dict[str, Any]) -> tuple[int, int] | None:
    """(window, motion frames) of the graph's InfiniteTalk window node; ``None`` when it has none."""
    for node in graph.values():
        if node.get("class_type") == WINDOW_NODE:
            inputs = node.get("inputs") or {}
            window, motion = inputs.get("frame_window_size"), inputs.get("motion_frame")
            if isinstance(window, int) and isinstance(motion, int):
                return window_size(window), motion
            return WINDOW_FRAMES, MOTION_FRAMES
    return None


def frames_memory_problem(graph: dict[str, Any], frames: int, width: int, height: int,
                          ram: int | None, vram_gib: float | None = None) -> str | None:
    """Why the video cannot fit in the machine's RAM (or, from a video, the GPU's), or ``None`` when it can.

    The pinned nodes keep every decoded frame until the MP4 is written (see ``frames.held_frame_bytes``);
    a job that needs more than the whole RAM would be killed after its whole sampling time, so it is
    refused before it starts. Unknown memory is not checked.
    """
    settings = window_settings(graph)
    if settings is None:
        return None
    window, motion = settings
    source = frames if any(n.get("class_type") == ENCODE_NODE for n in graph.values()) else 0
    what = (f"The video would be {frames} frames at {width}x{height}, made as {_windows(frames, window, motion)} "
            f"of {window} frames")
    needed = held_frame_bytes(frames, width, height, window, motion, source)
    if ram is not None and needed > ram:
        fits = _frames_fitting(ram, width, height, window, motion, source > 0)
        return (f"{what}; the pinned nodes hold every decoded frame in memory until the MP4 is written, about "
                f"{_gb(needed)}, more than this machine's {_gb(ram)} of RAM. {_advice(fits)}")
    on_gpu = encode_gpu_bytes(source, width, height)
    if vram_gib is not None and on_gpu > vram_gib * GIB:
        fits = int(vram_gib * GIB // (width * height * 3 * ENCODE_GPU_BYTES_PER_VALUE))
        return (f"{what}; WanVideoEncode moves the whole source clip to the GPU at once, about {_gb(on_gpu)}, "
                f"more than the GPU's {_gb(vram_gib * GIB)}. {_advice(fits)}")
    return None


def _gb(size: float) -> str:
    """Bytes as GB, with two decimals below 10 GB so that small figures still differ."""
    return f"{size / 1e9:.2f} GB" if size < 10e9 else f"{size / 1e9:.1f} GB"


def _windows(frames: int, window: int, motion: int) -> str:
    count = window_count(frames, window, motion)
    return f"{count} window{'s' if count != 1 else ''}"


def _frames_fitting(ram: int, width: int, height: int, window: int, motion: int, video: bool) -> int:
    """The most frames whose held memory stays within ``ram`` (0: not even one window)."""
    low, high = 0, MAX_NODE_FRAMES
    while low < high:
        mid = (low + high + 1) // 2
        if held_frame_bytes(mid, width, height, window, motion, mid if video else 0) <= ram:
            low = mid
        else:
            high = mid - 1
    return low


def _advice(fits: int) -> str:
    if fits < 1:
        return "Use a smaller width and height."
    return (f"At this size at most {fits} frames ({fits / FPS:g} s) fit: set max_frame, shorten the audio, "
            "or use a smaller width and height.")
