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
from .frames import HELD_BYTES_PER_VALUE, MOTION_FRAMES, WINDOW_FRAMES, held_frame_bytes, window_count, window_size

log = logging.getLogger(__name__)

GIB: Final = 1024**3
AUTO: Final = "auto"
WORKFLOW: Final = "workflow"  # write nothing: the workflow's own settings
WINDOW_NODE: Final = "WanVideoImageToVideoMultiTalk"


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
                          ram: int | None) -> str | None:
    """Why the decoded video cannot fit in the machine's RAM, or ``None`` when it can (or RAM is unknown).

    The pinned nodes keep every decoded frame until the MP4 is written (see ``frames.held_frame_bytes``);
    a job that needs more than the whole RAM would be killed after its whole sampling time, so it is
    refused before it starts.
    """
    settings = window_settings(graph)
    if settings is None or ram is None:
        return None
    window, motion = settings
    needed = held_frame_bytes(frames, width, height, window, motion)
    if needed <= ram:
        return None
    per_frame = width * height * 3 * HELD_BYTES_PER_VALUE
    windows_fitting = (ram // per_frame - window) // (window - motion) + 1
    fits = window + (windows_fitting - 1) * (window - motion) if windows_fitting >= 1 else 0
    count = window_count(frames, window, motion)
    return (f"The video would be {frames} frames at {width}x{height}, made as {count} "
            f"window{'s' if count != 1 else ''} of {window} frames; the pinned nodes hold every decoded frame in "
            f"memory until the MP4 is written, about {needed / 1e9:.1f} GB, more than this machine's "
            f"{ram / 1e9:.1f} GB of RAM. "
            + (f"At this size at most {fits} frames ({fits / FPS:g} s) fit: set max_frame, shorten the audio, "
               "or use a smaller width and height." if fits else "Use a smaller width and height."))
