"""A fake ComfyUI v0.3.64 for tests: the real HTTP + websocket protocol, and a real MP4 at the end.

Why it exists: the worker's ComfyUI client, handler and entrypoint must be tested without a GPU, models
or a real ComfyUI, yet against the protocol as it really is. Everything observable here copies the
recorded traces in ``tests/data/comfyui/traces`` (message order, field names, history shape, 400 bodies,
caching across prompts, interrupt at the next node boundary or progress tick). Success runs the graph
node by node through the fake's own description of the node classes (``NODE_CLASSES``, written from
the recorded /object_info and the nodes' sources): each node reads its inputs by name, as ComfyUI
hands them over, and derives sizes and frame counts as the real node does, then the output node
writes a genuine H.264/AAC MP4. It imports nothing from the worker, so what the worker reports about
the video is checked against what the nodes make of the graph, not against the worker's own tables.
Test infrastructure only: nothing in the product may import it.

Use it as a context manager or through the ``fake_comfy`` pytest fixture, or standalone::

    python testsupport/fake_comfyui.py --port 8188 --root DIR [--scenario success_vhs]

Scenarios (``server.scenario``, read when a prompt is POSTed): see ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import signal
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("fake_comfyui")

COMFYUI_VERSION = "0.3.64"
DEFAULT_OBJECT_INFO = REPO_ROOT / "tests" / "data" / "comfyui" / "object_info.json"

SCENARIOS: dict[str, str] = {
    "success_vhs": "run the graph and render its output (default)",
    "success_native": "same as success_vhs: the graph's output node decides VHS or SaveVideo",
    "validation_400": "POST /prompt answers 400 with node_errors on the file-loading nodes",
    "reject_400": "POST /prompt answers 400 invalid_prompt with no node_errors",
    "execution_error": "execution_error at the fault node (sampler, else the second node run)",
    "interrupt": "slow nodes and steps; POST /interrupt takes effect at the next boundary or step",
    "interrupt_soon": "ComfyUI is interrupted from elsewhere right after the first node",
    "ws_drop": "the prompt's websocket is cut mid-run; the prompt still finishes",
    "die": "mid-run the server stops answering and drops every connection, like a killed process",
    "hang": "the fault node never finishes until interrupted or the server is stopped",
    "slow": "every node and step waits step_delay / node_delay (default 0.05 s)",
}
SCENARIO_DELAYS: dict[str, tuple[float, float]] = {  # (node_delay, step_delay)
    "interrupt": (0.3, 0.05),
    "slow": (0.05, 0.05),
}

FILE_INPUTS: dict[str, tuple[str, str]] = {  # class -> (input, message), as their VALIDATE_INPUTS answer
    "LoadImage": ("image", "Invalid image file: {}"),
    "LoadImageMask": ("image", "Invalid image file: {}"),
    "LoadAudio": ("audio", "Invalid audio file: {}"),
    "VHS_LoadVideo": ("video", "Invalid video file: {}"),
}
SAMPLER_CLASSES = {"WanVideoSampler", "KSampler", "KSamplerAdvanced"}  # progress: steps per window
FAULT_CLASSES = SAMPLER_CLASSES | {"ImageAddNoise"}  # where faults strike by default (the CPU graphs' stand-in)
AAC_RATES = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}
BINARY_PREVIEW_IMAGE, BINARY_PROGRESS_TEXT = 1, 3


def now_ms() -> int:
    return int(time.time() * 1000)


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def full_type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Interrupted(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class NodeFailed(Exception):
    def __init__(self, node_id: str, exception_type: str, message: str, trace: list[str]) -> None:
        super().__init__(message)
        self.node_id, self.exception_type, self.message, self.trace = node_id, exception_type, message, trace


class Died(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Validation: the checks ComfyUI's validate_prompt makes that matter for a worker.


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


class PromptValidator:
    """ComfyUI's validate_prompt, reduced to what a worker can trip over (no combo lists: no models)."""

    def __init__(self, graph: dict, object_info: dict, file_exists) -> None:
        self.graph, self.object_info, self.file_exists = graph, object_info, file_exists
        self.validated: dict[str, tuple[bool, list]] = {}

    def run(self, force_file_errors: bool = False) -> tuple[bool, dict | None, list[str], dict]:
        self.force_file_errors = force_file_errors
        outputs, error = self._outputs()
        if error:
            return False, error, [], {}
        good, node_errors = [], {}
        for output in outputs:
            if self._validate_output(output):
                good.append(output)
                continue
            for node_id, (valid, reasons) in self.validated.items():
                if not valid and reasons:
                    entry = node_errors.setdefault(node_id, {
                        "errors": reasons, "dependent_outputs": [], "class_type": self.graph[node_id]["class_type"]})
                    entry["dependent_outputs"].append(output)
        if not good:
            error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
            return False, error, [], node_errors
        return True, None, good, node_errors

    def _outputs(self) -> tuple[list[str], dict | None]:
        outputs = []
        for node_id, node in self.graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return [], _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                  f"Node ID '#{node_id}'")
            if node["class_type"] not in self.object_info:
                return [], _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                                  f"Node ID '#{node_id}'")
            node.setdefault("inputs", {})
            if self.object_info[node["class_type"]].get("output_node"):
                outputs.append(node_id)
        if not outputs:
            return [], _error("prompt_no_outputs", "Prompt has no outputs")
        return outputs, None

    def _validate_output(self, output: str) -> bool:
        try:
            return self._validate(output)
        except Exception as exc:  # ComfyUI reports a broken graph (e.g. a link to a missing node) this way
            reason = _error("exception_during_validation", "Exception when validating node", str(exc),
                            exception_type=full_type_name(type(exc)), traceback=traceback.format_tb(exc.__traceback__))
            self.validated[output] = (False, [reason])
            return False

    def _validate(self, node_id: str) -> bool:
        if node_id in self.validated:
            return self.validated[node_id][0]
        node = self.graph[node_id]
        spec = self.object_info[node["class_type"]].get("input", {})
        errors, valid = [], True
        for category in ("required", "optional"):
            for name, config in (spec.get(category) or {}).items():
                ok = self._check_input(node, name, config, category, errors)
                valid = valid and ok
        errors += self._file_errors(node)
        result = valid and not errors
        self.validated[node_id] = (result, errors)
        return result

    def _check_input(self, node: dict, name: str, config: list, category: str, errors: list) -> bool:
        inputs = node["inputs"]
        if name not in inputs:
            if category == "required":
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            return True
        value = inputs[name]
        if isinstance(value, list):
            if not is_link(value):
                message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                errors.append(_error("bad_linked_input", message, name, input_name=name, input_config=config,
                                     received_value=value))
                return True
            return self._validate(str(value[0]))  # KeyError for a missing node, as in ComfyUI
        self._check_literal(inputs, name, config, errors)
        return True

    def _check_literal(self, inputs: dict, name: str, config: list, errors: list) -> None:
        kind = config[0] if config else None
        options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
        converters = {"INT": int, "FLOAT": float, "STRING": str}
        if not isinstance(kind, str) or kind not in converters:
            return
        try:
            inputs[name] = converters[kind](inputs[name])  # ComfyUI stores the converted value in the prompt
        except (TypeError, ValueError) as exc:
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                 f"{name}, {inputs[name]}, {exc}", input_name=name, input_config=config,
                                 received_value=inputs[name], exception_message=str(exc)))
            return
        value = inputs[name]
        if kind != "STRING" and "min" in options and value < options["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name,
                                 input_name=name, input_config=config, received_value=value))
        elif kind != "STRING" and "max" in options and value > options["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name,
                                 input_name=name, input_config=config, received_value=value))

    def _file_errors(self, node: dict) -> list[dict]:
        if node["class_type"] not in FILE_INPUTS:
            return []
        name, message = FILE_INPUTS[node["class_type"]]
        value = node["inputs"].get(name)
        if not isinstance(value, str) or (self.file_exists(value) and not self.force_file_errors):
            return []
        return [_error("custom_validation_failed", "Custom validation failed for node",
                       f"{name} - {message.format(value)}", input_name=name)]


# ---------------------------------------------------------------------------------------------
# Execution order and caching, as ComfyUI's ExecutionList and classic cache behave.


class ExecutionList:
    """Which node runs next: dependencies first, and among ready nodes ComfyUI's 'UX friendly' pick."""

    def __init__(self, graph: dict, outputs: list[str], is_cached, is_output) -> None:
        self.graph, self.is_output = graph, is_output
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}
        for output in outputs:
            self._add(output, is_cached)

    def _add(self, start: str, is_cached) -> None:
        stack = [start]
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count.setdefault(node_id, 0)
            self.blocking.setdefault(node_id, {})
            for value in self.graph[node_id]["inputs"].values():
                if is_link(value) and not is_cached(str(value[0])):
                    source = str(value[0])
                    stack.append(source)
                    if node_id not in self.blocking.setdefault(source, {}):
                        self.blocking[source][node_id] = None
                        self.block_count[node_id] += 1

    def __iter__(self) -> Iterator[str]:
        while self.pending:
            ready = [n for n in self.pending if self.block_count[n] == 0]
            if not ready:
                stuck = next(iter(self.pending))
                raise NodeFailed(stuck, "graph.DependencyCycleError", "Dependency cycle detected", [])
            node_id = self._pick(ready)
            yield node_id
            del self.pending[node_id]
            for blocked in self.blocking.pop(node_id, {}):
                self.block_count[blocked] -= 1

    def _pick(self, ready: list[str]) -> str:
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking.get(node_id, {})):
                return node_id
        for node_id in ready:
            if any(self.is_output(c) for b in self.blocking.get(node_id, {}) for c in self.blocking.get(b, {})):
                return node_id
        return ready[0]


def node_signatures(graph: dict, object_info: dict, file_digest) -> dict[str, str]:
    """Cache keys: class, inputs and upstream signatures (plus the file's hash for loaders, the id for
    nodes with a hidden unique_id), so an identical node in a later prompt is a cache hit."""
    memo: dict[str, str] = {}

    def signature(node_id: str, seen: frozenset) -> str:
        if node_id in memo:
            return memo[node_id]
        node = graph.get(node_id)
        if node is None or node_id in seen:
            return f"missing:{node_id}"
        class_type = node["class_type"]
        parts: list[Any] = [class_type]
        if class_type in FILE_INPUTS:
            parts.append(file_digest(node["inputs"].get(FILE_INPUTS[class_type][0])))
        hidden = (object_info.get(class_type, {}).get("input", {}).get("hidden") or {}).values()
        if any(h == "UNIQUE_ID" or h == ["UNIQUE_ID"] for h in hidden):
            parts.append(node_id)
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            if is_link(value):
                value = ["link", signature(str(value[0]), seen | {node_id}), value[1]]
            parts.append([key, value])
        memo[node_id] = json.dumps(parts, sort_keys=True, default=str)
        return memo[node_id]

    return {node_id: signature(node_id, frozenset()) for node_id in graph}


# ---------------------------------------------------------------------------------------------
# The node classes the fake emulates, described in its own words from the recorded /object_info.
#
# ComfyUI calls a node's function with the node's inputs by name: a literal from the prompt, or the
# output slot of the node a link points to. Each class below declares the input names it reads and its
# output types exactly as tests/data/comfyui/object_info.json lists them (a test checks), and computes
# sizes and frame counts from those inputs the way the real node does (its source is cited). It knows
# nothing of the worker: no roles, no titles. Media stays lazy: an IMAGE is a frame count, a size and a
# way to make frame i, so a long batch costs nothing until an output node encodes it. A class with no
# emulation here (a model loader, a text encoder) still runs and yields opaque values; an emulated node
# that gets one where it needs media fails, as the real node would.


@dataclass(frozen=True)
class Images:
    """ComfyUI's IMAGE, a [count, height, width, 3] batch: ``frame(i)`` makes frame i (uint8 RGB)."""
    count: int
    width: int
    height: int
    frame: Callable[[int], np.ndarray]

    def frames(self) -> Iterator[np.ndarray]:
        return (self.frame(index) for index in range(self.count))


@dataclass(frozen=True)
class Masks:
    """ComfyUI's MASK, a [count, height, width] batch of float32 in 0..1."""
    count: int
    width: int
    height: int
    frame: Callable[[int], np.ndarray]


@dataclass(frozen=True)
class Audio:
    """ComfyUI's AUDIO ({"waveform": [1, channels, n], "sample_rate"}) as (channels, n) float32 and a rate."""
    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.rate


@dataclass(frozen=True)
class Video:
    """ComfyUI's VIDEO, as CreateVideo makes it."""
    images: Images
    audio: Audio | None
    fps: float


@dataclass(frozen=True)
class Opaque:
    """The output of a node the fake does not emulate (a model, an encoding): usable only as a pass-through."""
    class_type: str
    kind: str


@dataclass(frozen=True)
class ImageEmbeds:
    """WanVideoImageToVideoMultiTalk's WANVIDIMAGE_EMBEDS: what the sampler reads back from it."""
    width: int
    height: int
    frame_window_size: int
    motion_frame: int
    start_image: Images | None


@dataclass(frozen=True)
class MultiTalkEmbeds:
    """MultiTalkWav2VecEmbeds' MULTITALK_EMBEDS: the audio embedding's length in frames, per speaker padded."""
    frames: int
    speakers: int


@dataclass(frozen=True)
class Latent:
    """A LATENT, kept as the pictures it stands for; ``windows`` is how many sampling windows made it."""
    images: Images
    windows: int = 1


@dataclass(frozen=True)
class NodeClass:
    function: Callable[..., tuple]
    inputs: tuple[str, ...]  # the inputs it reads, by their /object_info names
    outputs: tuple[str, ...]  # its output types, in /object_info's order
    widgets: tuple[str, ...] = ()  # inputs it reads that /object_info does not list (widgets added at run time)
    output_node: bool = False  # returns (ui, outputs) instead of outputs


@dataclass
class NodeContext:
    """What an output node needs besides its inputs: the server's folders and the node it is."""
    server: FakeComfyUI
    graph: dict
    node_id: str


NODE_CLASSES: dict[str, NodeClass] = {}


def emulates(class_type: str, inputs: str, outputs: str, widgets: str = "", output_node: bool = False):
    """Register an emulation; ``inputs`` and ``outputs`` as /object_info names them (space-separated)."""
    def register(function: Callable[..., tuple]) -> Callable[..., tuple]:
        NODE_CLASSES[class_type] = NodeClass(function, tuple(inputs.split()), tuple(outputs.split()),
                                             tuple(widgets.split()), output_node)
        return function
    return register


class GraphEvaluator:
    """Runs the emulated nodes of one prompt, each once, inputs first (ComfyUI's get_input_data by name)."""

    def __init__(self, server: FakeComfyUI, graph: dict) -> None:
        self.server, self.graph = server, graph
        self.results: dict[str, tuple] = {}
        self.ui: dict[str, dict | None] = {}

    def run(self, node_id: str) -> dict | None:
        """Compute a node's outputs (once); returns its UI output when it is an output node."""
        if node_id not in self.results:
            self._compute(node_id)
        return self.ui.get(node_id)

    def input(self, node_id: str, name: str) -> Any:
        value = self.graph[node_id]["inputs"].get(name)
        return self.output(value) if is_link(value) else value

    def output(self, link: list) -> Any:
        source = str(link[0])
        self.run(source)
        results = self.results[source]
        if not 0 <= link[1] < len(results):
            raise IndexError(f"node {source} has no output {link[1]}")
        return results[link[1]]

    def _compute(self, node_id: str) -> None:
        class_type = self.graph[node_id]["class_type"]
        spec = NODE_CLASSES.get(class_type)
        if spec is None:
            kinds = self.server.object_info.get(class_type, {}).get("output", [])
            self.results[node_id] = tuple(Opaque(class_type, str(kind)) for kind in kinds)
            return
        names = spec.inputs + spec.widgets
        kwargs = {name: self.input(node_id, name) for name in names if name in self.graph[node_id]["inputs"]}
        result = spec.function(NodeContext(self.server, self.graph, node_id), **kwargs)
        ui, outputs = result if spec.output_node else (None, result)
        self.results[node_id], self.ui[node_id] = tuple(outputs), ui


def need(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"input '{name}' is {type(value).__name__}, not {kind.__name__}: "
                        "the fake does not emulate the node it comes from")
    return value


def still(array: np.ndarray) -> Images:
    return Images(1, array.shape[1], array.shape[0], lambda index: array)


def mapped(images: Images, function: Callable[[np.ndarray, int], np.ndarray], width: int | None = None,
           height: int | None = None, count: int | None = None) -> Images:
    """A new batch whose frame i is function(source frame i mod count, i); the last frames made are kept."""
    @functools.lru_cache(maxsize=2)
    def frame(index: int) -> np.ndarray:
        return function(images.frame(index % images.count), index)
    return Images(images.count if count is None else count, width or images.width, height or images.height, frame)


# -- constants (KJNodes INTConstant etc., comfy_extras PrimitiveInt etc.) --

for _class, _input, _kind in (("INTConstant", "value", "INT"), ("FloatConstant", "value", "FLOAT"),
                              ("StringConstant", "string", "STRING"), ("PrimitiveInt", "value", "INT"),
                              ("PrimitiveFloat", "value", "FLOAT"), ("PrimitiveString", "value", "STRING"),
                              ("PrimitiveBoolean", "value", "BOOLEAN")):
    emulates(_class, _input, _kind)(lambda ctx, _name=_input, **inputs: (inputs[_name],))


# -- loaders (ComfyUI nodes.py LoadImage, LoadImageMask; comfy_extras/nodes_audio.py LoadAudio) --


@emulates("LoadImage", "image", "IMAGE MASK")
def _load_image(ctx: NodeContext, image: str) -> tuple:
    with Image.open(ctx.server._resolve_input(image)) as picture:
        array = np.asarray(picture.convert("RGB"))
        alpha = np.asarray(picture.getchannel("A"), np.float32) / 255.0 if "A" in picture.getbands() else None
    plane = 1.0 - alpha if alpha is not None else np.zeros((64, 64), np.float32)  # as LoadImage does
    return still(array), Masks(1, plane.shape[1], plane.shape[0], lambda index: plane)


@emulates("LoadImageMask", "image channel", "MASK")
def _load_image_mask(ctx: NodeContext, image: str, channel: str) -> tuple:
    with Image.open(ctx.server._resolve_input(image)) as picture:
        rgba = np.asarray(picture.convert("RGBA"), np.float32) / 255.0
    plane = rgba[:, :, "rgba".index(channel[0])]
    if channel == "alpha":
        plane = 1.0 - plane  # LoadImageMask inverts alpha
    return (Masks(1, plane.shape[1], plane.shape[0], lambda index: plane),)


@emulates("LoadAudio", "audio", "AUDIO")
def _load_audio(ctx: NodeContext, audio: str) -> tuple:
    samples, rate, _ = decode_audio(ctx.server._resolve_input(audio))
    return (Audio(samples, rate),)


# VHS_LoadVideo's formats (VideoHelperSuite load_video_nodes.py:24-31): size rounding and frame-count rule.
VHS_LOAD_FORMATS: dict[str, dict] = {
    "None": {}, "AnimateDiff": {"dim": 8}, "Mochi": {"dim": 16, "frames": (6, 1)},
    "LTXV": {"dim": 32, "frames": (8, 1)}, "Hunyuan": {"dim": 16, "frames": (4, 1)},
    "Cosmos": {"dim": 16, "frames": (8, 1)}, "Wan": {"dim": 8, "frames": (4, 1)},
}


@emulates("VHS_LoadVideo", "video force_rate custom_width custom_height frame_load_cap skip_first_frames "
          "select_every_nth format", "IMAGE INT AUDIO VHS_VIDEOINFO")
def _load_video(ctx: NodeContext, video: str, force_rate: float = 0, custom_width: int = 0, custom_height: int = 0,
                frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
                format: str = "AnimateDiff") -> tuple:
    path = ctx.server._resolve_input(video)
    decoded, fps = decode_video(path)
    form = VHS_LOAD_FORMATS.get(format, {})
    target = 1 / force_rate if force_rate else 1 / fps
    chosen = vhs_frame_indices(len(decoded), fps, force_rate, frame_load_cap, skip_first_frames, select_every_nth)
    if not chosen:
        raise RuntimeError("No frames generated")
    if "frames" in form and len(chosen) % form["frames"][0] != form["frames"][1]:
        div, mod = form["frames"]
        chosen = chosen[:(len(chosen) - mod) // div * div + mod]  # load_video_nodes.py:387-395
    source_height, source_width = decoded[0].shape[:2]
    width, height = vhs_target_size(source_width, source_height, custom_width, custom_height, form.get("dim", 1))
    images = Images(len(chosen), width, height, lambda index: resize(decoded[chosen[index]], width, height))
    start = skip_first_frames * target
    audio = video_audio(path, start, frame_load_cap * target * select_every_nth)
    info = {"source_fps": fps, "source_frame_count": len(decoded), "loaded_fps": 1 / (target * select_every_nth),
            "loaded_frame_count": len(chosen), "loaded_width": width, "loaded_height": height}
    return images, len(chosen), audio, info


def vhs_target_size(width: int, height: int, custom_width: int, custom_height: int, ratio: int) -> tuple[int, int]:
    """VideoHelperSuite's target_size (load_video_nodes.py:59-75)."""
    if custom_width and custom_height:
        width, height = custom_width, custom_height
    elif custom_width:
        width, height = custom_width, height * custom_width / width
    elif custom_height:
        width, height = width * custom_height / height, custom_height
    return int(width / ratio + 0.5) * ratio, int(height / ratio + 0.5) * ratio


def vhs_frame_indices(available: int, fps: float, force_rate: float, cap: int, skip: int, nth: int) -> list[int]:
    """Which decoded frames VHS_LoadVideo yields: cv_frame_generator's timing (load_video_nodes.py:77-168)."""
    base = 1 / fps
    target = 1 / force_rate if force_rate else base
    chosen: list[int] = []
    grabbed, offset, counted, evaluated = 0, target, 0, -1
    while True:
        if offset < target:
            grabbed += 1
            if grabbed >= available:
                break
            offset += base
        if offset < target:
            continue
        offset -= target
        counted += 1
        if counted <= skip:
            continue
        evaluated += 1
        if evaluated % max(1, nth):
            continue
        chosen.append(grabbed)
        if cap > 0 and len(chosen) >= cap:
            break
    return chosen


# -- pictures (ComfyUI nodes.py ImageScale, EmptyImage, ImageCompositeMasked; comfy_extras) --


@emulates("ImageScale", "image upscale_method width height crop", "IMAGE")
def _image_scale(ctx: NodeContext, image: Images, upscale_method: str, width: int, height: int, crop: str) -> tuple:
    image = need(image, Images, "image")
    if not width and not height:
        return (image,)
    width = width or max(1, round(image.width * height / image.height))
    height = height or max(1, round(image.height * width / image.width))
    return (mapped(image, lambda frame, _: scaled(frame, width, height, crop == "center"), width, height),)


@emulates("ImageResizeKJv2", "image width height upscale_method keep_proportion pad_color crop_position "
          "divisible_by", "IMAGE INT INT MASK")
def _image_resize_kj(ctx: NodeContext, image: Images, width: int, height: int, upscale_method: str,
                     keep_proportion: str, pad_color: str, crop_position: str, divisible_by: int) -> tuple:
    """KJNodes image_nodes.py:2505-2640, for keep_proportion stretch and crop (what workflows use)."""
    image = need(image, Images, "image")
    if keep_proportion not in ("stretch", "crop"):
        raise NotImplementedError(f"the fake emulates ImageResizeKJv2 keep_proportion stretch and crop, "
                                  f"not {keep_proportion}")
    width, height = width or image.width, height or image.height
    if divisible_by > 1:
        width, height = width - width % divisible_by, height - height % divisible_by
    resized = mapped(image, lambda frame, _: scaled(frame, width, height, keep_proportion == "crop"), width, height)
    mask = Masks(image.count, width, height, lambda index: np.zeros((height, width), np.float32))
    return resized, width, height, mask


@emulates("ImageAddNoise", "image seed strength", "IMAGE")
def _image_add_noise(ctx: NodeContext, image: Images, seed: int, strength: float) -> tuple:
    """comfy_extras/nodes_images.py: image + strength * randn(seed), clipped."""
    image = need(image, Images, "image")

    def noisy(frame: np.ndarray, index: int) -> np.ndarray:
        noise = np.random.default_rng([seed, index]).standard_normal(frame.shape, np.float32)
        return np.clip(frame + strength * 255.0 * noise, 0, 255).astype(np.uint8)
    return (mapped(image, noisy),)


@emulates("RepeatImageBatch", "image amount", "IMAGE")
def _repeat_image_batch(ctx: NodeContext, image: Images, amount: int) -> tuple:
    image = need(image, Images, "image")
    return (mapped(image, lambda frame, _: frame, count=image.count * amount),)


@emulates("EmptyImage", "width height batch_size color", "IMAGE")
def _empty_image(ctx: NodeContext, width: int, height: int, batch_size: int, color: int) -> tuple:
    rgb = np.array([(color >> 16) & 255, (color >> 8) & 255, color & 255], np.uint8)
    array = np.broadcast_to(rgb, (height, width, 3))
    return (Images(batch_size, width, height, lambda index: array),)


@emulates("ImageCompositeMasked", "destination source x y resize_source mask", "IMAGE")
def _image_composite_masked(ctx: NodeContext, destination: Images, source: Images, x: int, y: int,
                            resize_source: bool, mask: Masks | None = None) -> tuple:
    destination, source = need(destination, Images, "destination"), need(source, Images, "source")
    if resize_source:
        source = mapped(source, lambda f, _: resize(f, destination.width, destination.height),
                        destination.width, destination.height)

    def composite(frame: np.ndarray, index: int) -> np.ndarray:
        out = frame.astype(np.float32)
        src = source.frame(index % source.count).astype(np.float32)
        h, w = min(src.shape[0], out.shape[0] - y), min(src.shape[1], out.shape[1] - x)
        if h <= 0 or w <= 0:
            return frame
        alpha = 1.0 if mask is None else mask_at(mask, index, source.width, source.height)[:h, :w, None]
        region = out[y:y + h, x:x + w]
        out[y:y + h, x:x + w] = region * (1 - alpha) + src[:h, :w] * alpha
        return out.astype(np.uint8)
    return (mapped(destination, composite),)


@emulates("GetImageSizeAndCount", "image", "IMAGE INT INT INT")
def _get_image_size_and_count(ctx: NodeContext, image: Images) -> tuple:
    image = need(image, Images, "image")
    return image, image.width, image.height, image.count


@emulates("GetImageRangeFromBatch", "start_index num_frames images masks", "IMAGE MASK")
def _get_image_range(ctx: NodeContext, start_index: int, num_frames: int, images: Images | None = None,
                     masks: Masks | None = None) -> tuple:
    """KJNodes image_nodes.py:1761-1783: start_index -1 takes the last num_frames."""
    chosen = None
    if images is not None:
        images = need(images, Images, "images")
        start = max(0, images.count - num_frames) if start_index == -1 else start_index
        if not 0 <= start < images.count:
            raise ValueError("Start index is out of range")
        end = min(start + num_frames, images.count)
        chosen = Images(end - start, images.width, images.height, lambda index: images.frame(start + index))
    return chosen, masks


# -- masks (ComfyUI comfy_extras/nodes_mask.py; KJNodes MaskBatchMulti) --


@emulates("SolidMask", "value width height", "MASK")
def _solid_mask(ctx: NodeContext, value: float, width: int, height: int) -> tuple:
    plane = np.full((height, width), value, np.float32)
    return (Masks(1, width, height, lambda index: plane),)


MASK_OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "multiply": np.multiply, "add": np.add, "subtract": np.subtract,
    "and": lambda a, b: np.logical_and(a > 0.5, b > 0.5).astype(np.float32),
    "or": lambda a, b: np.logical_or(a > 0.5, b > 0.5).astype(np.float32),
    "xor": lambda a, b: np.logical_xor(a > 0.5, b > 0.5).astype(np.float32),
}


@emulates("MaskComposite", "destination source x y operation", "MASK")
def _mask_composite(ctx: NodeContext, destination: Masks, source: Masks, x: int, y: int, operation: str) -> tuple:
    destination, source = need(destination, Masks, "destination"), need(source, Masks, "source")

    def composite(index: int) -> np.ndarray:
        out = destination.frame(index % destination.count).copy()
        src = source.frame(index % source.count)
        h, w = min(src.shape[0], out.shape[0] - y), min(src.shape[1], out.shape[1] - x)
        if h > 0 and w > 0:
            out[y:y + h, x:x + w] = MASK_OPERATIONS[operation](out[y:y + h, x:x + w], src[:h, :w])
        return np.clip(out, 0.0, 1.0)
    return (Masks(destination.count, destination.width, destination.height, composite),)


@emulates("MaskBatchMulti", "inputcount mask_1 mask_2", "MASK", widgets="mask_3 mask_4 mask_5 mask_6")
def _mask_batch_multi(ctx: NodeContext, inputcount: int, **masks: Masks) -> tuple:
    """KJNodes: mask_1 .. mask_<inputcount> in one batch, each resized to the first's size."""
    batch = [need(masks.get(f"mask_{n}"), Masks, f"mask_{n}") for n in range(1, inputcount + 1)]
    first = batch[0]
    frames = [(m, i) for m in batch for i in range(m.count)]
    return (Masks(len(frames), first.width, first.height,
                  lambda index: resize_mask(frames[index][0].frame(frames[index][1]), first.width, first.height)),)


def mask_at(mask: Masks, index: int, width: int, height: int) -> np.ndarray:
    return resize_mask(mask.frame(index % mask.count), width, height)


def resize_mask(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    if plane.shape == (height, width):
        return plane
    return np.asarray(Image.fromarray(plane.astype(np.float32)).resize((width, height), Image.BILINEAR))


# -- audio (MelBandRoFormer; WanVideoWrapper multitalk/nodes.py MultiTalkWav2VecEmbeds) --


@emulates("MelBandRoFormerSampler", "model audio", "AUDIO AUDIO")
def _melband_sampler(ctx: NodeContext, model: Any, audio: Audio) -> tuple:
    """Vocals and instruments, stereo at 44.1 kHz as MelBandRoFormer nodes.py:87-169 gives them (mono is doubled,
    the length is the resampled one); the fake's separation leaves the voice whole and the rest silent."""
    audio = need(audio, Audio, "audio")
    channels = audio.samples if audio.samples.shape[0] > 1 else np.repeat(audio.samples, 2, axis=0)
    stereo = np.stack([resample_mono(Audio(channel[None, :], audio.rate), MELBAND_RATE) for channel in channels[:2]])
    return Audio(stereo, MELBAND_RATE), Audio(np.zeros_like(stereo), MELBAND_RATE)


WAV2VEC_RATE = 16000  # MultiTalkWav2VecEmbeds resamples every voice to this
MELBAND_RATE = 44100  # MelBandRoFormerSampler's output rate


@emulates("MultiTalkWav2VecEmbeds", "wav2vec_model audio_1 normalize_loudness num_frames fps audio_scale "
          "audio_cfg_scale multi_audio_type audio_2 audio_3 audio_4 ref_target_masks", "MULTITALK_EMBEDS AUDIO INT")
def _multitalk_embeds(ctx: NodeContext, audio_1: Audio, num_frames: int, fps: float = 25.0,
                      multi_audio_type: str = "para", audio_2: Audio | None = None, audio_3: Audio | None = None,
                      audio_4: Audio | None = None, **_: Any) -> tuple:
    """multitalk/nodes.py:163-320: each voice at 16 kHz cut to num_frames / fps seconds; the embedding is
    int(seconds * fps) frames a voice; the frame count is min(num_frames, int(longest or total seconds * fps))."""
    voices = [need(a, Audio, f"audio_{n}") for n, a in enumerate((audio_1, audio_2, audio_3, audio_4), 1)
              if a is not None]
    end = int(num_frames / fps * WAV2VEC_RATE)
    segments = [resample_mono(voice, WAV2VEC_RATE)[:end] for voice in voices]
    seconds = [len(segment) / WAV2VEC_RATE for segment in segments]
    lengths = [int(s * fps) for s in seconds]
    if multi_audio_type == "para":
        embedding, from_audio = max(lengths), int(max(seconds) * fps)
        mixed = np.zeros(max(len(s) for s in segments), np.float32)
        for segment in segments:
            mixed[:len(segment)] += segment
    else:
        embedding, from_audio = sum(lengths), int(sum(seconds) * fps)
        mixed = np.concatenate(segments)
    frames = min(num_frames, from_audio)
    return MultiTalkEmbeds(embedding, len(voices)), Audio(mixed[None, :], WAV2VEC_RATE), frames


def resample_mono(audio: Audio, rate: int) -> np.ndarray:
    """The first channel at ``rate`` (linear interpolation; the length torchaudio's resample gives)."""
    channel = audio.samples[0]
    if audio.rate == rate:
        return channel.astype(np.float32)
    count = math.ceil(len(channel) * rate / audio.rate)
    positions = np.arange(count) * (audio.rate / rate)
    return np.interp(positions, np.arange(len(channel)), channel).astype(np.float32)


# -- generation (WanVideoWrapper multitalk/nodes.py, nodes_sampler.py, nodes.py) --


@emulates("WanVideoImageToVideoMultiTalk", "vae width height frame_window_size motion_frame force_offload colormatch "
          "start_image tiled_vae clip_embeds mode output_path", "WANVIDIMAGE_EMBEDS STRING")
def _image_to_video_multitalk(ctx: NodeContext, width: int, height: int, frame_window_size: int, motion_frame: int,
                              start_image: Images | None = None, **_: Any) -> tuple:
    """multitalk/nodes.py:405-445: the window is rounded down to 4k+1 frames."""
    start = need(start_image, Images, "start_image") if start_image is not None else None
    window = ((frame_window_size - 1) // 4) * 4 + 1
    return ImageEmbeds(width, height, window, motion_frame, start), ""


@emulates("WanVideoEncode", "vae image enable_vae_tiling tile_x tile_y tile_stride_x tile_stride_y",
          "LATENT")
def _wan_encode(ctx: NodeContext, image: Images, **_: Any) -> tuple:
    return (Latent(need(image, Images, "image")),)


@emulates("WanVideoSampler", "model image_embeds steps cfg shift seed multitalk_embeds samples", "LATENT LATENT")
def _wan_sampler(ctx: NodeContext, image_embeds: ImageEmbeds, seed: int = 0, multitalk_embeds: Any = None,
                 samples: Latent | None = None, **_: Any) -> tuple:
    """InfiniteTalk sampling (nodes_sampler.py:2046-2466): windows of frame_window_size frames, each after the
    first adding window - motion_frame, until the audio embedding is covered; the size is width, height
    rounded down to the VAE's 8 pixels (multitalk/nodes.py:419-421)."""
    embeds = need(image_embeds, ImageEmbeds, "image_embeds")
    audio = need(multitalk_embeds, MultiTalkEmbeds, "multitalk_embeds")
    window, step = embeds.frame_window_size, embeds.frame_window_size - embeds.motion_frame
    windows = 1 if window >= audio.frames else 1 + math.ceil((audio.frames - window) / step)
    count = window + (windows - 1) * step
    width, height = embeds.width // 8 * 8, embeds.height // 8 * 8
    source = samples.images if isinstance(samples, Latent) else embeds.start_image
    if source is None:
        source = still(np.full((height, width, 3), 128, np.uint8))
    frames = Images(count, width, height, lambda index: generated(source.frame(min(index, source.count - 1)),
                                                                   index, seed, width, height))
    return Latent(frames, windows), Latent(frames, windows)


@emulates("WanVideoDecode", "vae samples enable_vae_tiling tile_x tile_y tile_stride_x tile_stride_y", "IMAGE")
def _wan_decode(ctx: NodeContext, samples: Latent, **_: Any) -> tuple:
    return (need(samples, Latent, "samples").images,)


def generated(frame: np.ndarray, index: int, seed: int, width: int, height: int) -> np.ndarray:
    """Stands in for a generated frame: the reference with a seeded colour bar sweeping down."""
    out = resize(frame, width, height).copy()
    colour = np.array([(seed * 37 + 60) % 256, (seed * 91 + 20) % 256, (seed * 53 + 140) % 256], np.uint8)
    row = (index * 2) % out.shape[0]
    out[row:row + 2] = colour
    return out


# -- output nodes (VideoHelperSuite VHS_VideoCombine; ComfyUI SaveVideo, CreateVideo, PreviewAny) --


@emulates("VHS_VideoCombine", "images audio frame_rate filename_prefix format save_output", "VHS_FILENAMES",
          widgets="save_metadata", output_node=True)
def _video_combine(ctx: NodeContext, **inputs: Any) -> tuple:
    """VideoHelperSuite nodes.py: a silent MP4, then one with the audio padded or cut to the video (580-591)."""
    need(inputs.get("images"), Images, "images")
    ui = ctx.server._render_vhs(ctx.graph, ctx.node_id, inputs)
    return ui, ((bool(inputs.get("save_output", True)), [item["fullpath"] for item in ui["gifs"]]),)


@emulates("CreateVideo", "images fps audio", "VIDEO")
def _create_video(ctx: NodeContext, images: Images, fps: float, audio: Audio | None = None) -> tuple:
    return (Video(need(images, Images, "images"), audio if isinstance(audio, Audio) else None, float(fps)),)


@emulates("SaveVideo", "video filename_prefix format codec", "", output_node=True)
def _save_video(ctx: NodeContext, **inputs: Any) -> tuple:
    need(inputs.get("video"), Video, "video")
    return ctx.server._render_native(ctx.graph, ctx.node_id, inputs), ()


@emulates("PreviewAny", "source", "", output_node=True)
def _preview_any(ctx: NodeContext, source: Any = None) -> tuple:
    return {"text": ["" if source is None else str(source)]}, ()


# ---------------------------------------------------------------------------------------------
# Media: decode the inputs, resize, encode the MP4 (PyAV; H.264 + AAC like VHS and SaveVideo).


def video_codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # a PyAV build without x264
        return "mpeg4"


def decode_audio(path: Path) -> tuple[np.ndarray, int, str]:
    """All samples as planar float32 (channels, n), the sample rate AAC will take, and the layout."""
    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise ValueError(f"{path.name} has no audio stream")
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        rate = stream.codec_context.sample_rate if stream.codec_context.sample_rate in AAC_RATES else 44100
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    channels = 1 if layout == "mono" else 2
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return samples.astype(np.float32), rate, layout


def video_audio(path: Path, start: float, duration: float) -> Audio | None:
    """VHS_LoadVideo's audio: the video's soundtrack from ``start`` for ``duration`` s (0: to the end), or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
    samples, rate, _ = decode_audio(path)
    first = int(start * rate)
    last = first + int(duration * rate) if duration > 0 else samples.shape[1]
    return Audio(samples[:, first:last], rate)


def decode_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame (RGB) and the stream's frame rate."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
    if not frames:
        raise ValueError(f"{path.name} has no frames")
    return frames, fps


def fit_audio(samples: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Trim or pad with silence to the video's length, as VHS (apad, -shortest) and SaveVideo do."""
    wanted = int(round(seconds * rate))
    if samples.shape[1] >= wanted:
        return samples[:, :wanted]
    return np.pad(samples, ((0, 0), (0, wanted - samples.shape[1])))


def muxable(audio: Audio, seconds: float) -> tuple[np.ndarray, int, str]:
    """Audio as the MP4 takes it: one or two channels at a rate AAC accepts, fitted to the video's length."""
    samples, rate = audio.samples[:2], audio.rate
    if rate not in AAC_RATES:
        resampled = [resample_mono(Audio(channel[None, :], rate), 44100) for channel in samples]
        samples, rate = np.stack(resampled), 44100
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    return np.ascontiguousarray(fit_audio(samples.astype(np.float32), rate, seconds)), rate, layout


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize((width, height), Image.BILINEAR))


def scaled(array: np.ndarray, width: int, height: int, crop: bool) -> np.ndarray:
    """Resize, first cropping the middle to the new aspect when ``crop`` (comfy.utils.common_upscale)."""
    if crop:
        old_height, old_width = array.shape[:2]
        old_aspect, new_aspect = old_width / old_height, width / height
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2) if old_aspect > new_aspect else 0
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2) if old_aspect < new_aspect else 0
        array = array[y:old_height - y, x:old_width - x]
    return resize(array, width, height)


def even(value: int) -> int:
    return value + (value % 2)  # VHS pads h264 output to even dimensions


def encode_mp4(path: Path, frames: Iterator[np.ndarray], fps: float,
               audio: tuple[np.ndarray, int, str] | None, comment: str = "") -> int:
    """Write an MP4 (H.264 yuv420p + AAC); returns the number of video frames written."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        if comment:
            container.metadata["comment"] = comment
        video = _video_stream(container, fps, first.shape[1], first.shape[0])
        sound = container.add_stream("aac", rate=audio[1], layout=audio[2]) if audio is not None else None
        for frame in itertools.chain([first], frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            _encode_audio(container, sound, audio[0], audio[1], audio[2])
    return count


def _video_stream(container, fps: float, width: int, height: int):
    codec = video_codec()
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "23"}
    return stream


def _encode_audio(container, stream, samples: np.ndarray, rate: int, layout: str) -> None:
    frame_size = 1024  # AAC's frame size
    for start in range(0, samples.shape[1], frame_size):
        chunk = np.ascontiguousarray(samples[:, start:start + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The server.


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    graph: dict
    extra_data: dict
    outputs: list[str]
    scenario: str

    def as_list(self) -> list:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


@dataclass
class Run:
    """One prompt's execution state."""
    item: QueueItem
    messages: list = field(default_factory=list)
    progress: dict[str, dict] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ui_outputs: dict[str, dict] = field(default_factory=dict)
    meta: dict[str, dict] = field(default_factory=dict)
    evaluator: GraphEvaluator | None = None
    fault_node: str | None = None
    order: list[str] = field(default_factory=list)


class FakeComfyUI:
    """The fake server. ``start()`` runs it in a background thread with its own event loop."""

    def __init__(self, root: Path | str, *, object_info_path: Path | str | None = None,
                 scenario: str = "success_vhs", host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        self.input_dir, self.output_dir, self.temp_dir = (self.root / n for n in ("input", "output", "temp"))
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.object_info_path = Path(object_info_path or os.environ.get("FAKE_COMFYUI_OBJECT_INFO")
                                     or DEFAULT_OBJECT_INFO)
        self.object_info_bytes = self.object_info_path.read_bytes()
        self.object_info: dict = json.loads(self.object_info_bytes)
        self.host, self.port = host, port
        self.scenario = scenario
        self.step_delay: float | None = None  # seconds per progress step; None: the scenario's default
        self.node_delay: float | None = None  # seconds each node takes; None: the scenario's default
        self.fault_node: str | None = None  # node id where error/hang/die/ws_drop strike; None: chosen
        self.error_type, self.error_message = "RuntimeError", None
        self.error_traceback: list[str] | None = None
        # True: queued prompts wait (ComfyUI busy elsewhere) until the first POST /interrupt or /queue,
        # and the next one starts at once after it: the worst moment for a client cancelling a prompt.
        self.start_queue_after_first_cancel_request = False
        # Set by tests: a prompt's end (execution_success, its history entry, the last `executing`) waits for
        # this event after the output node's `executed` went out, as ComfyUI's end can wait behind its deferred
        # gc.collect(). None: no wait.
        self.finish_gate: threading.Event | None = None
        self.prompts: list[dict] = []
        self.interrupts: list[dict] = []
        self.queue_deletes: list[dict] = []
        self.frees: list[dict] = []
        self.vram_total = 85_899_345_920  # bytes /system_stats reports for the GPU (80 GiB); tests change it
        self.ram_total = 270_000_000_000  # bytes of RAM /system_stats reports; tests change it
        self.requests: list[tuple[str, str]] = []
        self.history: dict[str, dict] = {}
        self.died = threading.Event()
        self._queue: list[QueueItem] = []
        self._running: QueueItem | None = None
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._transports: dict[str, asyncio.BaseTransport] = {}
        self._cache: dict[str, dict | None] = {}
        self._number = 0
        self._interrupt_requested = False
        self._last_node_id: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._worker: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing waits in the queue."""
        return self._running is None and not self._queue

    def start(self) -> FakeComfyUI:
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._thread_main, args=(ready, failure), name="fake-comfyui",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(15) or failure:
            self.stop()
            raise RuntimeError(f"fake ComfyUI did not start: {failure[0] if failure else 'timeout'}")
        return self

    def stop(self) -> None:
        """Stop the server and its thread; safe to call twice and after a 'die'."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)
        self._thread = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event, failure: list) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # report to start(), never hang it
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=1 << 30, middlewares=[self._record_request])
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]
        self._wake = asyncio.Event()
        self._worker = asyncio.ensure_future(self._work())

    async def _shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._abort_connections()
        if self._runner is not None:
            await self._runner.cleanup()

    def _abort_connections(self) -> None:
        server = self._runner.server if self._runner is not None else None
        for transport in list(getattr(server, "_connections", {}).values()):
            transport.abort()
        for transport in self._transports.values():
            transport.abort()
        self._sockets.clear()
        self._transports.clear()

    async def _die(self) -> None:
        """Like a killed process: the port closes and every open connection is dropped."""
        self.died.set()
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._abort_connections()
        raise Died()

    # -- HTTP --------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        get, post = app.router.add_get, app.router.add_post
        get("/", self._index)
        get("/ws", self._websocket)
        get("/prompt", self._get_prompt)
        post("/prompt", self._post_prompt)
        get("/history", self._get_history)
        get("/history/{prompt_id}", self._get_history_item)
        post("/history", self._post_history)
        get("/queue", self._get_queue)
        post("/queue", self._post_queue)
        post("/interrupt", self._post_interrupt)
        post("/free", self._post_free)
        get("/view", self._view)
        post("/upload/image", self._upload_image)
        get("/system_stats", self._system_stats)
        get("/object_info", self._object_info)
        get("/object_info/{node_class}", self._object_info_class)
        get("/__fake__/state", self._fake_state)
        post("/__fake__/scenario", self._fake_scenario)

    @web.middleware
    async def _record_request(self, request: web.Request, handler):
        self.requests.append((request.method, request.path_qs))
        return await handler(request)

    async def _json_body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return {}
        try:
            body = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return body if isinstance(body, dict) else {}

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>fake ComfyUI</body></html>", content_type="text/html")

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": _error("invalid_json", "The body is not JSON"), "node_errors": {}},
                                     status=400)
        self.prompts.append(body)
        if not isinstance(body, dict):
            body = {}
        number = self._next_number(body)
        if "prompt" not in body:
            error = _error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        scenario = self.scenario
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        graph = copy.deepcopy(body["prompt"])
        if scenario == "reject_400":
            error = _error("invalid_prompt", "Cannot execute because node FakeRefusal does not exist.", "Node ID '#0'")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        if not isinstance(graph, dict):
            error = _error("invalid_prompt", "The prompt must be a JSON object of nodes.", "prompt")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        valid, error, outputs, node_errors = PromptValidator(graph, self.object_info, self._input_exists).run(
            force_file_errors=scenario == "validation_400")
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        self._enqueue(QueueItem(number, prompt_id, graph, extra_data, outputs, scenario))
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _next_number(self, body: dict) -> float:
        if "number" in body:
            return float(body["number"])
        number = self._number
        self._number += 1
        return -number if body.get("front") else number

    def _enqueue(self, item: QueueItem) -> None:
        self._queue.append(item)
        self._queue.sort(key=lambda queued: queued.number)
        self._wake.set()

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.query.get("max_items")
        if max_items:
            items = items[-int(max_items):]
        return web.json_response(dict(items))

    async def _get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: copy.deepcopy(entry)} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or []:
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.as_list()] if self._running else []
        return web.json_response({"queue_running": running, "queue_pending": [q.as_list() for q in self._queue]})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        self.queue_deletes.append(body)
        if body.get("clear"):
            self._queue.clear()
        doomed = set(body.get("delete") or [])
        self._queue[:] = [q for q in self._queue if q.prompt_id not in doomed]
        await self._broadcast_status()
        await self._release_held_queue()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        self.interrupts.append(body)
        target = body.get("prompt_id")
        if not target or (self._running is not None and self._running.prompt_id == target):
            self._interrupt_requested = self._running is not None or not target
        await self._release_held_queue()
        return web.Response(status=200)

    async def _release_held_queue(self) -> None:
        """Let a held queue move on, and answer only once its next prompt runs (see the attribute)."""
        if not self.start_queue_after_first_cancel_request:
            return
        self.start_queue_after_first_cancel_request = False
        self._wake.set()
        for _ in range(200):
            if not self._queue or self._running is not None:
                return
            await asyncio.sleep(0.01)

    async def _post_free(self, request: web.Request) -> web.Response:
        self.frees.append(await self._json_body(request))
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename", "")
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        folder = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(
            request.query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        folder = folder.resolve()
        if request.query.get("subfolder"):
            wanted = (folder / request.query["subfolder"]).resolve()
            if os.path.commonpath((wanted, folder)) != str(folder):
                return web.Response(status=403)
            folder = wanted
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        content_type = "video/mp4" if path.suffix == ".mp4" else "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": content_type,
                                               "Content-Disposition": f'filename="{path.name}"'})

    async def _upload_image(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        if upload is None or not hasattr(upload, "file"):
            return web.Response(status=400)
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        folder = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(kind, self.input_dir)
        folder = folder / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(upload.filename)
        (folder / name).write_bytes(upload.file.read())
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def _system_stats(self, request: web.Request) -> web.Response:
        system = {
            "os": "posix", "ram_total": self.ram_total, "ram_free": self.ram_total * 9 // 10,
            "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.94", "required_templates_version": "0.1.94",
            "python_version": sys.version, "pytorch_version": "2.8.0+cu128", "embedded_python": False,
            "argv": ["main.py", "--listen", self.host, "--port", str(self.port)],
        }
        device = {"name": "cuda:0 Fake GPU : cudaMallocAsync", "type": "cuda", "index": 0,
                  "vram_total": self.vram_total, "vram_free": self.vram_total - 1_900_000_000, "torch_vram_total": 0,
                  "torch_vram_free": 0}
        return web.json_response({"system": system, "devices": [device]})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.Response(body=self.object_info_bytes, content_type="application/json")

    async def _object_info_class(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: self.object_info[name]} if name in self.object_info else {})

    async def _fake_state(self, request: web.Request) -> web.Response:
        return web.json_response({"scenario": self.scenario, "prompts": len(self.prompts),
                                  "interrupts": len(self.interrupts), "queue_deletes": len(self.queue_deletes),
                                  "frees": len(self.frees)})

    async def _fake_scenario(self, request: web.Request) -> web.Response:
        """Test-only: switch the scenario of a standalone fake from another process."""
        body = await self._json_body(request)
        if body.get("scenario") not in SCENARIOS:
            return web.json_response({"error": f"unknown scenario {body.get('scenario')!r}"}, status=400)
        self.scenario = body["scenario"]
        for name in ("step_delay", "node_delay", "fault_node"):
            if name in body:
                setattr(self, name, body[name])
        return web.json_response({"scenario": self.scenario})

    # -- websocket ---------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0, max_msg_size=1 << 24)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets.pop(sid, None)
        self._sockets[sid] = ws
        self._transports[sid] = request.transport
        try:
            await self._send_json(ws, "status", {"status": self._queue_info(), "sid": sid})
            if self._running is not None and self._running.client_id == sid and self._last_node_id is not None:
                await self._send_json(ws, "executing", {"node": self._last_node_id})
            first = True
            async for message in ws:
                if message.type == WSMsgType.TEXT and first:
                    await self._answer_feature_flags(ws, message.data)
                first = False
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
                self._transports.pop(sid, None)
        return ws

    async def _answer_feature_flags(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            await self._send_json(ws, "feature_flags", {"supports_preview_metadata": True,
                                                        "max_upload_size": 104857600})

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self._queue) + (1 if self._running else 0)}}

    async def _send_json(self, ws: web.WebSocketResponse, kind: str, data: dict) -> None:
        if ws.closed:
            return
        try:
            await ws.send_str(json.dumps({"type": kind, "data": data}))
        except (ConnectionError, RuntimeError):
            log.debug("websocket gone while sending %s", kind)

    async def _send(self, kind: str, data: dict, sid: str | None) -> None:
        """To one client, or to every socket when sid is None (as ComfyUI's send_sync)."""
        targets = list(self._sockets.values()) if sid is None else [self._sockets[sid]] if sid in self._sockets else []
        for ws in targets:
            await self._send_json(ws, kind, data)

    async def _send_binary(self, event: int, payload: bytes, sid: str | None) -> None:
        targets = list(self._sockets.values()) if sid is None else [self._sockets[sid]] if sid in self._sockets else []
        for ws in targets:
            if not ws.closed:
                try:
                    await ws.send_bytes(struct.pack(">I", event) + payload)
                except (ConnectionError, RuntimeError):
                    pass

    async def _broadcast_status(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    def _drop_socket(self, sid: str | None) -> None:
        self._sockets.pop(sid or "", None)
        transport = self._transports.pop(sid or "", None)
        if transport is not None:
            transport.abort()

    # -- the prompt worker -------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.start_queue_after_first_cancel_request:
                item = self._queue.pop(0)
                self._running = item
                await self._broadcast_status()
                try:
                    await self._execute(item)
                except Died:
                    return
                finally:
                    self._running = None

    async def _add_message(self, run: Run, kind: str, data: dict, broadcast: bool = False) -> None:
        run.messages.append([kind, data])
        if run.item.client_id is not None or broadcast:
            await self._send(kind, data, run.item.client_id)

    async def _execute(self, item: QueueItem) -> None:
        run = Run(item)
        run.evaluator = GraphEvaluator(self, item.graph)
        self._interrupt_requested = False
        prompt_id = item.prompt_id
        await self._add_message(run, "execution_start", {"prompt_id": prompt_id, "timestamp": now_ms()})
        signatures = node_signatures(item.graph, self.object_info, self._file_digest)
        in_prompt = set(signatures.values())
        self._cache = {key: ui for key, ui in self._cache.items() if key in in_prompt}  # ComfyUI's clean_unused
        cached = [n for n in item.graph if signatures[n] in self._cache]
        await self._add_message(run, "execution_cached", {"nodes": cached, "prompt_id": prompt_id,
                                                          "timestamp": now_ms()})
        status = await self._run_nodes(run, signatures)
        self.history[prompt_id] = {
            "prompt": item.as_list(), "outputs": run.ui_outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": run.messages},
            "meta": run.meta,
        }
        self._running = None
        self._last_node_id = None
        await self._broadcast_status()
        if item.client_id is not None:
            await self._send("executing", {"node": None, "prompt_id": prompt_id}, item.client_id)

    async def _run_nodes(self, run: Run, signatures: dict[str, str]) -> str:
        prompt_id, graph = run.item.prompt_id, run.item.graph
        try:
            order = ExecutionList(graph, run.item.outputs, lambda n: signatures[n] in self._cache, self._is_output)
            run.order = self._planned_order(graph, run.item.outputs, signatures)
            run.fault_node = self._choose_fault_node(run)
            for node_id in order:
                if signatures[node_id] in self._cache:
                    await self._replay_cached(run, node_id, self._cache[signatures[node_id]])
                else:
                    await self._run_node(run, node_id)
                    self._cache[signatures[node_id]] = run.ui_outputs.get(node_id)
        except Interrupted as stop:
            await self._add_message(run, "execution_interrupted", {
                "prompt_id": prompt_id, "node_id": stop.node_id, "node_type": graph[stop.node_id]["class_type"],
                "executed": run.executed, "timestamp": now_ms()}, broadcast=True)
            return "error"
        except NodeFailed as failure:
            await self._add_message(run, "execution_error", self._error_data(run, failure))
            return "error"
        if self.finish_gate is not None:
            await asyncio.to_thread(self.finish_gate.wait, 60)
        await self._add_message(run, "execution_success", {"prompt_id": prompt_id, "timestamp": now_ms()})
        return "success"

    def _planned_order(self, graph: dict, outputs: list[str], signatures: dict[str, str]) -> list[str]:
        return list(ExecutionList(graph, outputs, lambda n: signatures[n] in self._cache, self._is_output))

    def _choose_fault_node(self, run: Run) -> str | None:
        graph, order = run.item.graph, [n for n in run.order if n in run.item.graph]
        if self.fault_node is not None:
            return str(self.fault_node)
        samplers = [n for n in order if graph[n]["class_type"] in FAULT_CLASSES]
        if samplers:
            return samplers[0]
        if run.item.scenario == "execution_error":
            return order[1] if len(order) > 1 else (order[0] if order else None)
        stepping = [n for n in order if graph[n]["class_type"] == "VHS_VideoCombine"]
        return (stepping or order[-1:] or [None])[0]

    def _is_output(self, node_id: str) -> bool:
        graph = self._running.graph if self._running else {}
        class_type = graph.get(node_id, {}).get("class_type")
        return bool(self.object_info.get(class_type, {}).get("output_node"))

    def _delays(self, scenario: str) -> tuple[float, float]:
        node_delay, step_delay = SCENARIO_DELAYS.get(scenario, (0.0, 0.0))
        return (node_delay if self.node_delay is None else self.node_delay,
                step_delay if self.step_delay is None else self.step_delay)

    async def _progress_state(self, run: Run, node_id: str, value: float, maximum: float, state: str) -> None:
        run.progress[node_id] = {"value": value, "max": maximum, "state": state, "node_id": node_id,
                                 "prompt_id": run.item.prompt_id, "display_node_id": node_id, "parent_node_id": None,
                                 "real_node_id": node_id}
        await self._send("progress_state", {"prompt_id": run.item.prompt_id, "nodes": copy.deepcopy(run.progress)},
                         run.item.client_id)

    async def _replay_cached(self, run: Run, node_id: str, ui: dict | None) -> None:
        """A cached output node: ComfyUI re-sends its old UI output without running it."""
        if run.item.client_id is not None:
            await self._send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                          "prompt_id": run.item.prompt_id}, run.item.client_id)
        if ui:
            self._record_ui(run, node_id, ui)
        await self._progress_state(run, node_id, 1.0, 1.0, "finished")

    def _record_ui(self, run: Run, node_id: str, ui: dict) -> None:
        run.ui_outputs[node_id] = ui
        run.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                             "real_node_id": node_id}

    def _check_interrupt(self, node_id: str) -> None:
        if self._interrupt_requested:
            self._interrupt_requested = False
            raise Interrupted(node_id)

    async def _run_node(self, run: Run, node_id: str) -> None:
        prompt_id, client_id = run.item.prompt_id, run.item.client_id
        await self._progress_state(run, node_id, 0.0, 1.0, "running")
        if client_id is not None:
            self._last_node_id = node_id
            await self._send("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                             client_id)
        self._check_interrupt(node_id)
        await self._fault_at_start(run, node_id)
        node_delay, _ = self._delays(run.item.scenario)
        await asyncio.sleep(node_delay)
        steps = await self._step_count(run, node_id)
        if steps:
            await self._steps(run, node_id, steps)
        ui = await self._node_function(run, node_id)
        if ui:
            self._record_ui(run, node_id, ui)
            if client_id is not None:
                await self._send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                              "prompt_id": prompt_id}, client_id)
        finished = (steps, steps) if steps else (1.0, 1.0)
        await self._progress_state(run, node_id, *finished, "finished")
        run.executed.append(node_id)
        if run.item.scenario == "interrupt_soon" and len(run.executed) == 1:
            self._interrupt_requested = True  # someone else pressed "Cancel" in the UI

    async def _fault_at_start(self, run: Run, node_id: str) -> None:
        scenario = run.item.scenario
        if node_id != run.fault_node:
            return
        if scenario == "execution_error":
            class_type = run.item.graph[node_id]["class_type"]
            message = self.error_message or f"Simulated failure in node {node_id} ({class_type})."
            trace = self.error_traceback or [
                '  File "/comfyui/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, '
                'has_pending_tasks = await get_output_data(...)\n']
            raise NodeFailed(node_id, self.error_type, message, trace)
        if scenario == "hang":
            while True:
                await asyncio.sleep(0.02)
                self._check_interrupt(node_id)

    async def _steps(self, run: Run, node_id: str, steps: int) -> None:
        _, step_delay = self._delays(run.item.scenario)
        await self._send_binary(BINARY_PROGRESS_TEXT, self._progress_text(node_id, f"0/{steps}"), None)
        for step in range(1, steps + 1):
            await asyncio.sleep(step_delay)
            self._check_interrupt(node_id)
            await self._progress_state(run, node_id, step, steps, "running")
            await self._send("progress", {"value": step, "max": steps, "prompt_id": run.item.prompt_id,
                                          "node": node_id}, run.item.client_id)
            if step == 1 and run.item.graph[node_id]["class_type"] in SAMPLER_CLASSES:
                await self._send_binary(BINARY_PREVIEW_IMAGE, struct.pack(">I", 1) + tiny_jpeg(), run.item.client_id)
            if node_id == run.fault_node and step == max(1, steps // 2):
                await self._fault_mid_node(run)

    async def _fault_mid_node(self, run: Run) -> None:
        if run.item.scenario == "ws_drop":
            self._drop_socket(run.item.client_id)
        elif run.item.scenario == "die":
            await self._die()

    @staticmethod
    def _progress_text(node_id: str, text: str) -> bytes:
        encoded = node_id.encode()
        return struct.pack(">I", len(encoded)) + encoded + text.encode()

    async def _step_count(self, run: Run, node_id: str) -> int:
        node = run.item.graph[node_id]
        if node["class_type"] == "VHS_VideoCombine":  # VHS's progress bar counts frames
            images = await self._in_thread(run, node_id, run.evaluator.input, node_id, "images")
            return images.count if isinstance(images, Images) else 0
        if node["class_type"] in SAMPLER_CLASSES:
            await self._in_thread(run, node_id, run.evaluator.run, node_id)
            steps = run.evaluator.input(node_id, "steps")
            latent = (run.evaluator.results[node_id] or (None,))[0]
            windows = latent.windows if isinstance(latent, Latent) else 1
            return max(1, steps if isinstance(steps, int) else 1) * windows
        if node_id == run.fault_node and run.item.scenario in ("ws_drop", "die"):
            return 4  # a node with progress, so the fault strikes mid-node
        return 0

    async def _in_thread(self, run: Run, node_id: str, function, *args):
        """Media work off the event loop; an exception becomes the node's execution_error."""
        try:
            return await asyncio.to_thread(function, *args)
        except Exception as exc:
            raise NodeFailed(node_id, full_type_name(type(exc)), str(exc),
                             traceback.format_tb(exc.__traceback__)) from exc

    def _error_data(self, run: Run, failure: NodeFailed) -> dict:
        graph = run.item.graph
        inputs = graph[failure.node_id]["inputs"]
        current = {name: [f"<output {v[1]} of node {v[0]}>" if is_link(v) else v] for name, v in inputs.items()}
        return {"prompt_id": run.item.prompt_id, "node_id": failure.node_id,
                "node_type": graph[failure.node_id]["class_type"], "executed": run.executed,
                "exception_message": failure.message, "exception_type": failure.exception_type,
                "traceback": failure.trace, "current_inputs": current, "current_outputs": list(graph),
                "timestamp": now_ms()}

    # -- what nodes do -----------------------------------------------------------------------

    async def _node_function(self, run: Run, node_id: str) -> dict | None:
        """Run the node's emulation (see NODE_CLASSES); an output node answers its UI output."""
        return await self._in_thread(run, node_id, run.evaluator.run, node_id)

    def _save_folder(self, base_dir: Path, prefix: str) -> tuple[Path, str, str]:
        """ComfyUI's get_save_image_path: the prefix may carry a subfolder, never escape the base."""
        normalized = os.path.normpath(prefix)
        subfolder, name = os.path.dirname(normalized), os.path.basename(normalized)
        folder = Path(os.path.abspath(os.path.join(base_dir, subfolder)))
        if os.path.commonpath((str(base_dir.resolve()), str(folder))) != str(base_dir.resolve()):
            raise PermissionError("**** ERROR: Saving image outside the output folder is not allowed."
                                  f"\n full_output_folder: {folder}\n         output_dir: {base_dir}")
        folder.mkdir(parents=True, exist_ok=True)
        return folder, name, subfolder

    @staticmethod
    def _next_counter(folder: Path, name: str) -> int:
        pattern = re.compile(rf"{re.escape(name)}_(\d+)\D*\..+", re.IGNORECASE)
        counters = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.fullmatch(f))]
        return max(counters, default=0) + 1

    def _render_vhs(self, graph: dict, node_id: str, inputs: dict) -> dict:
        """VHS_VideoCombine's files: the first frame as PNG, a silent MP4, and one with the audio if any."""
        images: Images = inputs["images"]
        save_output = bool(inputs.get("save_output", True))
        base_dir, kind = (self.output_dir, "output") if save_output else (self.temp_dir, "temp")
        folder, name, subfolder = self._save_folder(base_dir, str(inputs.get("filename_prefix", "AnimateDiff")))
        stem = f"{name}_{self._next_counter(folder, name):05}"
        fps = float(inputs.get("frame_rate", 8.0))
        width, height = even(images.width), even(images.height)
        Image.fromarray(resize(images.frame(0), width, height)).save(folder / f"{stem}.png")
        comment = json.dumps({"prompt": graph}) if inputs.get("save_metadata") else ""
        path = folder / f"{stem}.mp4"
        encode_mp4(path, (resize(f, width, height) for f in images.frames()), fps, None, comment)
        audio = inputs.get("audio")
        if isinstance(audio, Audio):
            path = folder / f"{stem}-audio.mp4"
            encode_mp4(path, (resize(f, width, height) for f in images.frames()), fps,
                       muxable(audio, images.count / fps), comment)
        return {"gifs": [{"filename": path.name, "subfolder": subfolder, "type": kind,
                          "format": inputs.get("format", "video/h264-mp4"), "frame_rate": fps,
                          "workflow": f"{stem}.png", "fullpath": str(path)}]}

    def _render_native(self, graph: dict, node_id: str, inputs: dict) -> dict:
        """SaveVideo's file: <prefix>_<counter>_.mp4 with the VIDEO's frames and audio."""
        video: Video = inputs["video"]
        prefix = str(inputs.get("filename_prefix", "video/ComfyUI"))
        folder, name, subfolder = self._save_folder(self.output_dir, prefix)
        filename = f"{name}_{self._next_counter(folder, name):05}_.mp4"
        images = video.images
        width, height = even(images.width), even(images.height)
        audio = muxable(video.audio, images.count / video.fps) if video.audio is not None else None
        encode_mp4(folder / filename, (resize(f, width, height) for f in images.frames()), video.fps, audio)
        return {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}

    # -- files -------------------------------------------------------------------------------

    def _resolve_input(self, name: str) -> Path:
        """ComfyUI's get_annotated_filepath: 'x.png [output]' picks the folder; absolute paths stay."""
        folders = {"[input]": self.input_dir, "[output]": self.output_dir, "[temp]": self.temp_dir}
        base = self.input_dir
        for tag, folder in folders.items():
            if name.endswith(" " + tag):
                name, base = name[: -len(tag) - 1], folder
        return Path(os.path.join(base, name))

    def _input_exists(self, name: str) -> bool:
        return self._resolve_input(name).exists()

    def _file_digest(self, name: Any) -> str:
        path = self._resolve_input(str(name))
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return "missing"


# ---------------------------------------------------------------------------------------------
# Standalone: a stand-in ComfyUI process (for entrypoint.sh tests).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake ComfyUI v0.3.64 for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--root", required=True, type=Path, help="directory for input/, output/ and temp/")
    parser.add_argument("--scenario", default="success_vhs", choices=sorted(SCENARIOS))
    parser.add_argument("--object-info", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = FakeComfyUI(args.root, object_info_path=args.object_info, scenario=args.scenario, host=args.host,
                         port=args.port)
    server.start()
    while not stop.wait(0.2):
        if server.died.is_set():
            server.stop()
            return 1  # a dead ComfyUI process is gone
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
