"""A fake ComfyUI v0.3.64 for tests: the real HTTP + websocket protocol, and a real MP4 at the end.

Why it exists: the worker's ComfyUI client, handler and entrypoint must be tested without a GPU, models
or a real ComfyUI, yet against the protocol as it really is. Everything observable here copies the
recorded traces in ``shared/comfyui/traces`` (message order, field names, history shape, 400 bodies,
caching across prompts, interrupt at the next node boundary or progress tick), and success renders a
genuine H.264/AAC MP4 from the graph's role-marked nodes so the worker's output handling is exercised
on real files. Test infrastructure only: nothing in the product may import it.

Use it as a context manager or through the ``fake_comfy`` pytest fixture, or standalone::

    python testsupport/fake_comfyui.py --port 8188 --root DIR [--scenario success_vhs]

Scenarios (``server.scenario``, read when a prompt is POSTed): see ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
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
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    from infinitetalk_worker.roles import ROLE_INPUTS, roles_of
except ModuleNotFoundError:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))
    from infinitetalk_worker.roles import ROLE_INPUTS, roles_of

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
CONSTANT_CLASSES = {"INTConstant", "FloatConstant", "StringConstant", "PrimitiveInt", "PrimitiveFloat",
                    "PrimitiveString", "PrimitiveBoolean"}
SAMPLER_CLASSES = {"WanVideoSampler", "KSampler", "KSamplerAdvanced"}
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
# What to render: read from the role-marked nodes of the submitted graph.


@dataclass
class RenderPlan:
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    seed: int = 0
    image_path: Path | None = None
    video: dict | None = None  # the VHS_LoadVideo node's inputs, with "path"
    audio_path: Path | None = None
    audio_seconds: float | None = None


def literal(graph: dict, value: Any, depth: int = 0) -> Any:
    """The value of an input, following links through constant nodes (INTConstant, Primitive*)."""
    if is_link(value) and depth < 8:
        source = graph.get(str(value[0])) or {}
        if source.get("class_type") in CONSTANT_CLASSES:
            return literal(graph, source.get("inputs", {}).get("value"), depth + 1)
        return None
    return value


class RolePlanner:
    """Finds nodes by role (or, for a graph with no roles at all, by unambiguous class) and reads values."""

    def __init__(self, graph: dict, resolve_input) -> None:
        self.graph, self.resolve_input = graph, resolve_input
        self.annotated = any(roles_of(node) for node in graph.values())

    def nodes(self, role: str) -> list[tuple[str, dict]]:
        classes = ROLE_INPUTS.get(role, {})
        if self.annotated:
            return [(i, n) for i, n in self.graph.items() if role in roles_of(n) and n["class_type"] in classes]
        return [(i, n) for i, n in self.graph.items() if n["class_type"] in classes and self._unambiguous(role, n)]

    def _unambiguous(self, role: str, node: dict) -> bool:
        mapped = set(ROLE_INPUTS[role][node["class_type"]].values())
        others = {v for r, c in ROLE_INPUTS.items() if r != role for v in c.get(node["class_type"], {}).values()}
        return not mapped & others

    def value(self, role: str, name: str) -> tuple[Any, dict | None]:
        for _, node in self.nodes(role):
            input_name = ROLE_INPUTS[role][node["class_type"]].get(name)
            found = literal(self.graph, node["inputs"].get(input_name)) if input_name else None
            if found is not None:
                return found, node
        return None, None

    def file(self, role: str, key: str) -> Path | None:
        for _, node in self.nodes(role):
            value = node["inputs"].get(key)
            if isinstance(value, str):
                return self.resolve_input(value)
        return None

    def plan(self, audio_node_id: str | None) -> RenderPlan:
        plan = RenderPlan()
        plan.width, _ = self.value("width", "width")
        plan.height, _ = self.value("height", "height")
        plan.seed = int(self.value("sampler", "seed")[0] or 0)
        plan.image_path = self.file("image", "image")
        for _, node in self.nodes("video"):
            plan.video = {**node["inputs"], "path": self.resolve_input(str(node["inputs"].get("video")))}
        plan.audio_path = self._audio_path(audio_node_id)
        if plan.audio_path is not None:
            plan.audio_seconds = audio_duration(plan.audio_path)
        plan.frames = self._frames(plan)
        return plan

    def _audio_path(self, node_id: str | None) -> Path | None:
        source = self.graph.get(node_id or "") or {}
        if source.get("class_type") == "LoadAudio":
            return self.resolve_input(str(source["inputs"].get("audio")))
        if source.get("class_type") == "VHS_LoadVideo":
            return self.resolve_input(str(source["inputs"].get("video")))
        return self.file("soundtrack", "audio") or self.file("audio_1", "audio")

    def _frames(self, plan: RenderPlan) -> int:
        count, node = self.value("num_frames", "num_frames")
        class_type = (node or {}).get("class_type")
        if class_type == "MultiTalkWav2VecEmbeds" and count and plan.audio_seconds is not None:
            fps = float(literal(self.graph, node["inputs"].get("fps")) or 25.0)
            count = min(int(count), int(plan.audio_seconds * fps))
        if class_type == "VHS_LoadVideo" and not count:
            count = None
        if plan.video is not None:
            available = len(load_video_frames(plan.video, None, None, None))
            count = min(int(count), available) if count else available
        if not count:
            count = int(plan.audio_seconds * 25) if plan.audio_seconds else 81
        return max(1, int(count))


# ---------------------------------------------------------------------------------------------
# Media: decode the inputs, make the frames, encode the MP4 (PyAV; H.264 + AAC like VHS and SaveVideo).


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


def audio_duration(path: Path) -> float:
    samples, rate, _ = decode_audio(path)
    return samples.shape[1] / rate


def fit_audio(samples: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Trim or pad with silence to the video's length, as VHS and SaveVideo do."""
    wanted = int(round(seconds * rate))
    if samples.shape[1] >= wanted:
        return samples[:, :wanted]
    return np.pad(samples, ((0, 0), (0, wanted - samples.shape[1])))


def load_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def load_video_frames(video: dict, width: int | None, height: int | None, limit: int | None) -> list[np.ndarray]:
    """VHS_LoadVideo's frames: force_rate resampling, skip_first_frames, select_every_nth, the cap."""
    with av.open(str(video["path"])) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.time or 0.0), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    rate = float(video.get("force_rate") or 0)
    if rate > 0 and decoded:
        duration = decoded[-1][0] + 1.0 / float(stream.average_rate or rate)
        frames = [_frame_at(decoded, k / rate) for k in range(int(duration * rate + 1e-6))]
    else:
        frames = [array for _, array in decoded]
    frames = frames[int(video.get("skip_first_frames") or 0):][::max(1, int(video.get("select_every_nth") or 1))]
    frames = frames[:limit] if limit else frames
    return [resize(f, width, height) for f in frames] if width and height else frames


def _frame_at(decoded: list[tuple[float, np.ndarray]], t: float) -> np.ndarray:
    chosen = decoded[0][1]
    for time_s, array in decoded:
        if time_s > t + 1e-6:
            break
        chosen = array
    return chosen


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))


def even(value: int) -> int:
    return value + (value % 2)  # VHS pads h264 output to even dimensions


def source_frames(plan: RenderPlan) -> list[np.ndarray]:
    """The picture(s) the 'generation' starts from, at the output size."""
    if plan.video is not None:
        frames = load_video_frames(plan.video, None, None, plan.frames)
    elif plan.image_path is not None:
        frames = [load_image(plan.image_path)]
    else:
        frames = [np.full((plan.height or 512, plan.width or 512, 3), 128, np.uint8)]
    width = even(int(plan.width or frames[0].shape[1]))
    height = even(int(plan.height or frames[0].shape[0]))
    return [resize(f, width, height) for f in frames]


def animated(frames: list[np.ndarray], count: int, seed: int) -> Iterator[np.ndarray]:
    """Frames that differ from each other (a seeded colour bar sweeping down), standing in for generation."""
    colour = np.array([(seed * 37 + 60) % 256, (seed * 91 + 20) % 256, (seed * 53 + 140) % 256], np.uint8)
    for index in range(count):
        frame = frames[index % len(frames)].copy()
        row = (index * 2) % frame.shape[0]
        frame[row:row + 2] = colour
        yield frame


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
    plan: RenderPlan | None = None
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
        self.prompts: list[dict] = []
        self.interrupts: list[dict] = []
        self.queue_deletes: list[dict] = []
        self.frees: list[dict] = []
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

    def start(self) -> "FakeComfyUI":
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

    def __enter__(self) -> "FakeComfyUI":
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
            "os": "posix", "ram_total": 270_000_000_000, "ram_free": 250_000_000_000,
            "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.94", "required_templates_version": "0.1.94",
            "python_version": sys.version, "pytorch_version": "2.8.0+cu128", "embedded_python": False,
            "argv": ["main.py", "--listen", self.host, "--port", str(self.port)],
        }
        device = {"name": "cuda:0 Fake GPU : cudaMallocAsync", "type": "cuda", "index": 0,
                  "vram_total": 85_899_345_920, "vram_free": 84_000_000_000, "torch_vram_total": 0,
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
        await self._add_message(run, "execution_success", {"prompt_id": prompt_id, "timestamp": now_ms()})
        return "success"

    def _planned_order(self, graph: dict, outputs: list[str], signatures: dict[str, str]) -> list[str]:
        return list(ExecutionList(graph, outputs, lambda n: signatures[n] in self._cache, self._is_output))

    def _choose_fault_node(self, run: Run) -> str | None:
        graph, order = run.item.graph, [n for n in run.order if n in run.item.graph]
        if self.fault_node is not None:
            return str(self.fault_node)
        samplers = [n for n in order if graph[n]["class_type"] in SAMPLER_CLASSES or "sampler" in roles_of(graph[n])]
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
        if node["class_type"] == "VHS_VideoCombine":
            return (await self._plan(run, node_id)).frames or 0
        if node["class_type"] in SAMPLER_CLASSES:
            steps = int(literal(run.item.graph, node["inputs"].get("steps")) or 1)
            return steps * await self._windows(run, node_id)
        if node_id == run.fault_node and run.item.scenario in ("ws_drop", "die"):
            return 4  # a node with progress, so the fault strikes mid-node
        return 0

    async def _windows(self, run: Run, node_id: str) -> int:
        """InfiniteTalk renders windows of frame_window_size frames overlapping by motion_frame."""
        graph = run.item.graph
        i2v = next((n for n in graph.values() if n["class_type"] == "WanVideoImageToVideoMultiTalk"), None)
        if i2v is None:
            return 1
        window = int(literal(graph, i2v["inputs"].get("frame_window_size")) or 81)
        motion = int(literal(graph, i2v["inputs"].get("motion_frame")) or 9)
        frames = (await self._plan(run, node_id)).frames or window
        return 1 + max(0, math.ceil((frames - window) / max(1, window - motion)))

    async def _plan(self, run: Run, node_id: str) -> RenderPlan:
        if run.plan is None:
            output = next((n for n in run.item.outputs if run.item.graph[n]["class_type"] in
                           ("VHS_VideoCombine", "SaveVideo")), None)
            audio_link = self._audio_link(run.item.graph, output) if output else None
            planner = RolePlanner(run.item.graph, self._resolve_input)
            run.plan = await self._in_thread(run, node_id, planner.plan, audio_link)
        return run.plan

    async def _in_thread(self, run: Run, node_id: str, function, *args):
        """Media work off the event loop; an exception becomes the node's execution_error."""
        try:
            return await asyncio.to_thread(function, *args)
        except Exception as exc:
            raise NodeFailed(node_id, full_type_name(type(exc)), str(exc),
                             traceback.format_tb(exc.__traceback__)) from exc

    @staticmethod
    def _audio_link(graph: dict, output_id: str) -> str | None:
        """The node whose AUDIO reaches the output (through CreateVideo for SaveVideo), or None."""
        node = graph[output_id]
        if node["class_type"] == "SaveVideo":
            video = node["inputs"].get("video")
            node = graph.get(str(video[0])) if is_link(video) else None
            if node is None:
                return None
        audio = node["inputs"].get("audio")
        return str(audio[0]) if is_link(audio) else None

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
        node = run.item.graph[node_id]
        class_type = node["class_type"]
        if class_type in FILE_INPUTS:
            path = self._resolve_input(str(node["inputs"].get(FILE_INPUTS[class_type][0])))
            await self._in_thread(run, node_id, self._check_decodable, class_type, path)
        elif class_type == "VHS_VideoCombine":
            plan = await self._plan(run, node_id)
            return await self._in_thread(run, node_id, self._render_vhs, run.item.graph, node_id, plan)
        elif class_type == "SaveVideo":
            plan = await self._plan(run, node_id)
            return await self._in_thread(run, node_id, self._render_native, run.item.graph, node_id, plan)
        elif class_type == "PreviewAny":
            return {"text": [await self._preview_text(run, node_id)]}
        return None

    @staticmethod
    def _check_decodable(class_type: str, path: Path) -> None:
        if class_type in ("LoadImage", "LoadImageMask"):
            with Image.open(path) as image:
                image.load()
        elif class_type == "LoadAudio":
            decode_audio(path)
        else:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path.name} has no video stream")

    async def _preview_text(self, run: Run, node_id: str) -> str:
        graph = run.item.graph
        source = graph[node_id]["inputs"].get("source")
        value = literal(graph, source)
        if value is None and is_link(source):
            origin = graph.get(str(source[0]), {})
            plan = await self._plan(run, node_id)
            if origin.get("class_type") == "MultiTalkWav2VecEmbeds" and source[1] == 2:
                value = plan.frames
            elif origin.get("class_type") == "GetImageSizeAndCount" and source[1] in (1, 2, 3):
                value = [None, plan.width, plan.height, plan.frames][source[1]]
        return "" if value is None else str(value)

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

    def _frames_and_audio(self, graph: dict, audio_node: str | None, plan: RenderPlan, fps: float):
        frames = animated(source_frames(plan), plan.frames, plan.seed)
        if audio_node is None or plan.audio_path is None:
            return frames, None
        samples, rate, layout = decode_audio(plan.audio_path)
        return frames, (fit_audio(samples, rate, plan.frames / fps), rate, layout)

    def _render_vhs(self, graph: dict, node_id: str, plan: RenderPlan) -> dict:
        inputs = graph[node_id]["inputs"]
        save_output = bool(inputs.get("save_output", True))
        base_dir, kind = (self.output_dir, "output") if save_output else (self.temp_dir, "temp")
        folder, name, subfolder = self._save_folder(base_dir, str(inputs.get("filename_prefix", "AnimateDiff")))
        counter = self._next_counter(folder, name)
        fps = float(literal(graph, inputs.get("frame_rate")) or 25.0)
        stem = f"{name}_{counter:05}"
        first = next(animated(source_frames(plan), 1, plan.seed))
        Image.fromarray(first).save(folder / f"{stem}.png")
        comment = json.dumps({"prompt": graph}) if inputs.get("save_metadata") else ""
        frames, _ = self._frames_and_audio(graph, None, plan, fps)
        encode_mp4(folder / f"{stem}.mp4", frames, fps, None, comment)
        filename = f"{stem}.mp4"
        audio_node = self._audio_link(graph, node_id)
        if audio_node is not None and plan.audio_path is not None:
            frames, audio = self._frames_and_audio(graph, audio_node, plan, fps)
            filename = f"{stem}-audio.mp4"
            encode_mp4(folder / filename, frames, fps, audio, comment)
        return {"gifs": [{"filename": filename, "subfolder": subfolder, "type": kind,
                          "format": inputs.get("format", "video/h264-mp4"), "frame_rate": fps,
                          "workflow": f"{stem}.png", "fullpath": str(folder / filename)}]}

    def _render_native(self, graph: dict, node_id: str, plan: RenderPlan) -> dict:
        inputs = graph[node_id]["inputs"]
        prefix = str(inputs.get("filename_prefix", "video/ComfyUI"))
        folder, name, subfolder = self._save_folder(self.output_dir, prefix)
        video = inputs.get("video")
        creator = graph.get(str(video[0]), {}) if is_link(video) else {}
        fps = float(literal(graph, creator.get("inputs", {}).get("fps")) or 25.0)
        filename = f"{name}_{self._next_counter(folder, name):05}_.mp4"
        frames, audio = self._frames_and_audio(graph, self._audio_link(graph, node_id), plan, fps)
        encode_mp4(folder / filename, frames, fps, audio)
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
