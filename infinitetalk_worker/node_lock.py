"""The node lock: the interfaces of the node classes the workflows use, and graph validation against it.

``workflows/node_lock.json`` is written from a real ``GET /object_info`` of the pinned stack by
``python -m infinitetalk_worker lock``. It keeps what a graph depends on (input names, types, defaults,
ranges, fixed choices, output types) and leaves out what depends on one installation (the lists of
model files and of input files), so that CI can check every graph without a GPU, models or ComfyUI:
``python -m infinitetalk_worker validate``. Model-file inputs are checked against ``models.json`` instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from .config import REPO_ROOT
from .model_download import ModelDownloadError, load_manifest

log = logging.getLogger(__name__)

WORKFLOW_ROOT = REPO_ROOT / "workflows"
LOCK_FILE_NAME = "node_lock.json"
MANIFEST_FILE_NAME = "models.json"
DEFAULT_LOCK_PATH = WORKFLOW_ROOT / LOCK_FILE_NAME
DEFAULT_MANIFEST_PATH = WORKFLOW_ROOT / MANIFEST_FILE_NAME
NOT_GRAPHS = {LOCK_FILE_NAME, MANIFEST_FILE_NAME}
LOCK_FORMAT = 1

# Classes the CPU smoke set may use besides those found in the workflow files at lock time.
SMOKE_CLASSES = (
    "LoadImage", "LoadAudio", "ImageScale", "ImageAddNoise", "RepeatImageBatch", "VHS_VideoCombine",
    "VHS_LoadVideo", "PrimitiveString", "LoadImageMask", "ImageCompositeMasked", "EmptyImage",
    "MaskBatchMulti", "SaveVideo", "CreateVideo",
)

# Classes the worker adds to a graph at job time (graph_edits.add_step_cache, for ``acceleration``).
JOB_TIME_CLASSES = ("WanVideoTeaCache", "WanVideoMagCache", "WanVideoEasyCache")

# Combo inputs whose choices are the files of a ComfyUI model folder: installation-dependent, so the
# lock records the folder(s) and a graph's value is checked against models.json instead.
MODEL_FILE_INPUTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("WanVideoModelLoader", "model"): ("diffusion_models", "unet_gguf"),
    ("MultiTalkModelLoader", "model"): ("diffusion_models", "unet_gguf"),
    ("WanVideoVAELoader", "model_name"): ("vae",),
    ("WanVideoLoraSelect", "lora"): ("loras",),
    ("WanVideoTextEncodeCached", "model_name"): ("text_encoders",),
    ("Wav2VecModelLoader", "model"): ("wav2vec2",),
    ("MelBandRoFormerModelLoader", "model_name"): ("diffusion_models",),
    ("CLIPVisionLoader", "clip_name"): ("clip_vision",),
    ("CheckpointLoaderSimple", "ckpt_name"): ("checkpoints",),
    ("UNETLoader", "unet_name"): ("diffusion_models",),
    ("VAELoader", "vae_name"): ("vae",),
    ("CLIPLoader", "clip_name"): ("text_encoders",),
    ("LoraLoader", "lora_name"): ("loras",),
    ("LoraLoaderModelOnly", "lora_name"): ("loras",),
    ("AudioEncoderLoader", "audio_encoder_name"): ("audio_encoders",),
    ("ModelPatchLoader", "name"): ("model_patches",),
}
# Combo inputs listing ComfyUI's input directory: the worker writes absolute paths there, which these
# loaders accept (their VALIDATE_INPUTS skips the list), so any non-empty string is valid.
INPUT_FILE_INPUTS = {("VHS_LoadVideo", "video")}
UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload")
KEPT_OPTIONS = ("default", "min", "max")
NUMBERED_INPUT = re.compile(r"(?P<prefix>.+)_1")


class LockError(Exception):
    """The lock, the manifest or the /object_info document cannot be read or does not fit."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph, located as precisely as possible."""

    file: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    input_name: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.node_id is not None:
            where += f": node {self.node_id}" + (f" ({self.class_type})" if self.class_type else "")
        if self.input_name is not None:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message}"


# ---------------------------------------------------------------- reading /object_info


def read_object_info(source: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """An /object_info document from a file or an http(s) URL (a bare ComfyUI address gets /object_info)."""
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/object_info" if urlsplit(source).path in ("", "/") else source
        try:
            response = requests.get(url, timeout=timeout_s)
            response.raise_for_status()
            document = response.json()
        except requests.Timeout:
            raise LockError(f"Could not read {url}: no answer within {timeout_s:g} s") from None
        except requests.ConnectionError:
            raise LockError(f"Could not read {url}: the connection failed") from None
        except requests.HTTPError as exc:
            raise LockError(f"Could not read {url}: HTTP {exc.response.status_code}") from None
        except (requests.RequestException, ValueError) as exc:
            raise LockError(f"Could not read {url}: {type(exc).__name__}: {exc}") from None
    else:
        try:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LockError(f"Could not read the /object_info document {source}: {exc}") from None
    if not isinstance(document, dict):
        raise LockError(f"{source} is not an /object_info document (expected a JSON object of node classes).")
    return document


def class_interface(class_name: str, info: dict[str, Any]) -> dict[str, Any]:
    """The installation-independent interface of one class, as the lock stores it."""
    sections = info.get("input") or {}
    inputs: dict[str, Any] = {}
    for section in ("required", "optional"):
        for name, raw in (sections.get(section) or {}).items():
            inputs[name] = input_spec(class_name, name, raw, required=section == "required")
    outputs = [
        {"name": name, "type": _type_name(kind), "is_list": bool(is_list)}
        for kind, name, is_list in zip(info.get("output") or [], info.get("output_name") or [],
                                       info.get("output_is_list") or [])
    ]
    interface = {
        "python_module": info.get("python_module"),
        "output_node": bool(info.get("output_node")),
        "inputs": inputs,
        "hidden": sorted((sections.get("hidden") or {}).keys()),
        "outputs": outputs,
    }
    numbered = _numbered_inputs(inputs)
    if numbered:
        interface["numbered_inputs"] = numbered
    return interface


def input_spec(class_name: str, name: str, raw: Any, required: bool) -> dict[str, Any]:
    """One input: its type, and defaults, range and choices where they are not installation-dependent."""
    raw = raw if isinstance(raw, (list, tuple)) else [raw]
    kind = raw[0] if raw else "*"
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    spec: dict[str, Any] = {"required": required}
    if isinstance(kind, list) or kind == "COMBO":
        spec["type"] = "COMBO"
        spec.update(_combo_kind(class_name, name, kind if isinstance(kind, list) else options.get("options", []),
                                options))
    else:
        spec["type"] = str(kind)
    spec.update({key: options[key] for key in KEPT_OPTIONS if key in options})
    formats = options.get("formats")
    if isinstance(formats, dict) and formats and all(isinstance(w, list) for w in formats.values()):
        spec["format_widgets"] = {
            fmt: {widget[0]: _widget_spec(class_name, widget) for widget in widgets}
            for fmt, widgets in formats.items()
        }
    return spec


def _combo_kind(class_name: str, name: str, choices: list, options: dict[str, Any]) -> dict[str, Any]:
    folders = MODEL_FILE_INPUTS.get((class_name, name))
    if folders:
        return {"model_folders": list(folders)}
    if (class_name, name) in INPUT_FILE_INPUTS or any(options.get(flag) for flag in UPLOAD_FLAGS):
        return {"input_file": True}
    if not choices:
        log.warning("%s.%s has an empty choice list (installation-dependent?); the lock accepts any "
                    "string there. Add it to MODEL_FILE_INPUTS if it lists model files.", class_name, name)
        return {"any_string": True}
    return {"choices": list(choices)}


def _widget_spec(class_name: str, widget: list) -> dict[str, Any]:
    """A per-format widget of VHS_VideoCombine: ``[name, type or choices, options?, ...]``."""
    options = widget[2] if len(widget) > 2 and isinstance(widget[2], dict) else {}
    return input_spec(class_name, widget[0], [widget[1], options], required=False)


def _numbered_inputs(inputs: dict[str, Any]) -> dict[str, Any] | None:
    """KJNodes' ``inputcount`` nodes take ``x_3 .. x_N`` beyond the declared ``x_1, x_2``."""
    count = inputs.get("inputcount")
    if not count or count["type"] != "INT":
        return None
    for name in inputs:
        match = NUMBERED_INPUT.fullmatch(name)
        if match and f"{match['prefix']}_2" in inputs:
            prefix = match["prefix"]
            return {"count_input": "inputcount", "prefix": prefix, "type": inputs[f"{prefix}_2"]["type"], "first": 3}
    return None


def _type_name(kind: Any) -> str:
    """Output types as strings; a list (a combo passed on by a node) is the COMBO type."""
    return "COMBO" if isinstance(kind, list) else str(kind)


def build_lock(object_info: dict[str, Any], class_names: Iterable[str], source: str) -> dict[str, Any]:
    """The lock document for ``class_names``; every class must be in the /object_info document."""
    names = sorted(set(class_names))
    missing = [name for name in names if name not in object_info]
    if missing:
        raise LockError(f"{source} has no node class {', '.join(missing)}; is the custom node installed?")
    return {
        "format": LOCK_FORMAT,
        "comment": "Interfaces of the node classes the workflows use, from GET /object_info of the pinned stack "
        "(tests/data/comfyui/README.md). Regenerate with: python -m infinitetalk_worker lock --object-info FILE|URL",
        "source": source,
        "classes": {name: class_interface(name, object_info[name]) for name in names},
    }


def graph_files(root: Path) -> list[Path]:
    """Every workflow graph under ``root`` (recursively), leaving out the lock and the manifest."""
    return sorted(p for p in root.rglob("*.json") if p.name not in NOT_GRAPHS)


def classes_used(paths: Iterable[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        graph = load_graph(path)
        names.update(node["class_type"] for node in graph.values()
                     if isinstance(node, dict) and isinstance(node.get("class_type"), str))
    return names


def load_graph(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LockError(f"Workflow {path} cannot be read as JSON: {exc}") from None
    if not isinstance(graph, dict):
        raise LockError(f"Workflow {path} is not an API-format graph (a JSON object of nodes).")
    return graph


# ---------------------------------------------------------------- lock and manifest files


def lock_path_for(workflow_dir: Path) -> Path:
    """A workflow directory may carry its own lock; otherwise the repository's applies (smoke set included)."""
    own = workflow_dir / LOCK_FILE_NAME
    return own if own.is_file() else DEFAULT_LOCK_PATH


def manifest_path_for(workflow_dir: Path) -> Path:
    own = workflow_dir / MANIFEST_FILE_NAME
    return own if own.is_file() else DEFAULT_MANIFEST_PATH


def load_lock(path: Path) -> dict[str, Any]:
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LockError(f"Node lock {path} cannot be read: {exc}") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("classes"), dict):
        raise LockError(f"Node lock {path} has no 'classes' object; regenerate it with the lock command.")
    return lock


def load_model_index(path: Path) -> set[tuple[str, str]]:
    """(folder, file) of every manifest entry: what model-file inputs may name (read by the one manifest reader)."""
    try:
        entries = load_manifest(path)
    except ModelDownloadError as exc:
        raise LockError(str(exc)) from None
    return {(entry.folder, entry.file) for entry in entries}


# ---------------------------------------------------------------- validation


def validate_graph(graph: Any, lock: dict[str, Any], models: set[tuple[str, str]], file_name: str) -> list[Problem]:
    """Every problem ComfyUI would raise at POST /prompt, and more: found before any job runs."""
    if not isinstance(graph, dict) or not graph:
        return [Problem(file_name, "is not an API-format graph (a non-empty JSON object of nodes).")]
    problems: list[Problem] = []
    for node_id, node in graph.items():
        problems += _validate_node(str(node_id), node, graph, lock, models, file_name)
    outputs = output_nodes(graph, lock)
    if not outputs:
        problems.append(Problem(file_name, "has no output node; ComfyUI would refuse it (prompt_no_outputs)."))
    elif len(outputs) > 1:
        problems.append(Problem(file_name, f"has {len(outputs)} output nodes ({', '.join(outputs)}); exactly one "
                                "is allowed, or ComfyUI may run only part of the graph and still answer 200."))
    return problems


def output_nodes(graph: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    classes = lock["classes"]
    return [node_id for node_id, node in graph.items()
            if isinstance(node, dict) and classes.get(node.get("class_type"), {}).get("output_node")]


def unreachable_nodes(graph: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    """Nodes no output node depends on: ComfyUI never runs them, so values written there have no effect."""
    seen: set[str] = set()
    pending = output_nodes(graph, lock)
    while pending:
        node_id = pending.pop()
        if node_id in seen or not isinstance(graph.get(node_id), dict):
            continue
        seen.add(node_id)
        pending += [value[0] for value in (graph[node_id].get("inputs") or {}).values() if _is_link(value)]
    return [node_id for node_id in graph if node_id not in seen]


def _validate_node(node_id: str, node: Any, graph: dict[str, Any], lock: dict[str, Any],
                   models: set[tuple[str, str]], file_name: str) -> list[Problem]:
    if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
        return [Problem(file_name, "is not a node (it needs a class_type and inputs).", node_id)]
    class_type = node["class_type"]
    interface = lock["classes"].get(class_type)
    if interface is None:
        return [Problem(file_name, f"node class {class_type} is not in the node lock: it is not installed in the "
                        "pinned stack, or the lock needs regenerating (python -m infinitetalk_worker lock).",
                        node_id, class_type)]
    inputs = node.get("inputs", {})
    if not isinstance(inputs, dict):
        return [Problem(file_name, "has 'inputs' that is not a JSON object.", node_id, class_type)]

    def problem(name: str, message: str) -> Problem:
        return Problem(file_name, message, node_id, class_type, name)

    specs = accepted_inputs(interface, inputs)
    problems = [problem(name, "is required but missing.")
                for name, spec in specs.items() if spec["required"] and name not in inputs]
    for name, value in inputs.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(problem(name, _undeclared_reason(interface, class_type, name, inputs)))
            continue
        message = check_value(value, spec, graph, lock, models)
        if message:
            problems.append(problem(name, message))
    return problems


def accepted_inputs(interface: dict[str, Any], inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Declared inputs plus those a node takes beyond its declaration (per-format widgets, numbered inputs)."""
    specs = dict(interface["inputs"])
    for name, spec in interface["inputs"].items():
        widgets = spec.get("format_widgets")
        if not widgets:
            continue
        chosen = inputs.get(name, spec.get("default"))
        if isinstance(chosen, str) and chosen in widgets:
            specs.update(widgets[chosen])
        elif chosen not in spec.get("choices", []):  # linked or unknown: the format itself is what to fix
            for per_format in widgets.values():
                specs.update(per_format)
    numbered = interface.get("numbered_inputs")
    if numbered:
        count = inputs.get(numbered["count_input"], interface["inputs"][numbered["count_input"]].get("default", 0))
        prefix, kind = numbered["prefix"], numbered["type"]
        if isinstance(count, int) and not isinstance(count, bool):
            numbers = range(numbered["first"], count + 1)
            specs.update({f"{prefix}_{k}": {"type": kind, "required": True} for k in numbers})
        else:
            specs.update({name: {"type": kind, "required": False} for name in inputs
                          if re.fullmatch(rf"{re.escape(prefix)}_\d+", name)})
    return specs


def _undeclared_reason(interface: dict[str, Any], class_type: str, name: str, inputs: dict[str, Any]) -> str:
    if name in interface["hidden"]:
        return "is a hidden input that ComfyUI fills in itself; remove it."
    for spec_name, spec in interface["inputs"].items():
        owners = [fmt for fmt, widgets in (spec.get("format_widgets") or {}).items() if name in widgets]
        if owners:
            return (f"is not a setting of {spec_name} {inputs.get(spec_name)!r} "
                    f"(only of {', '.join(owners[:4])}{'…' if len(owners) > 4 else ''}).")
    numbered = interface.get("numbered_inputs")
    if numbered and re.fullmatch(rf"{re.escape(numbered['prefix'])}_\d+", name):
        return f"is beyond {numbered['count_input']}={inputs.get(numbered['count_input'])!r}."
    return f"is not an input of {class_type} (the node would ignore it)."


def check_value(value: Any, spec: dict[str, Any], graph: dict[str, Any], lock: dict[str, Any],
                models: set[tuple[str, str]]) -> str | None:
    """Why ``value`` does not fit the input ``spec``, or None when it does."""
    if isinstance(value, list):
        return _check_link(value, spec, graph, lock)
    return _check_constant(value, spec, models)


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _check_link(value: list, spec: dict[str, Any], graph: dict[str, Any], lock: dict[str, Any]) -> str | None:
    if not _is_link(value):
        return f"is a list but not a link [\"node id\", output index]: {value!r}."
    source_id, index = value
    source = graph.get(source_id)
    if not isinstance(source, dict):
        return f"links to node {source_id}, which does not exist."
    source_class = source.get("class_type")
    interface = lock["classes"].get(source_class)
    if interface is None:
        return None  # reported at the source node itself
    outputs = interface["outputs"]
    if not 0 <= index < len(outputs):
        return f"links to output {index} of node {source_id} ({source_class}), which has {len(outputs)} output(s)."
    output = outputs[index]
    if not types_compatible(output["type"], spec["type"]):
        return (f"links to output {index} ({output['name']}: {output['type']}) of node {source_id} "
                f"({source_class}), but accepts {spec['type']}.")
    return None


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: '*' matches anything; 'A,B' lists alternatives, and any shared type links."""
    if "*" in (output_type, input_type):
        return True
    given = {t.strip() for t in output_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    return bool(given & accepted)


def _check_constant(value: Any, spec: dict[str, Any], models: set[tuple[str, str]]) -> str | None:
    kind = spec["type"]
    if kind == "COMBO":
        return _check_choice(value, spec, models)
    if kind in ("INT", "FLOAT"):
        whole = kind == "INT"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            return f"must be {'a whole number' if whole else 'a number'}, not {value!r}."
        return _check_range(value, spec)
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"must be true or false, not {value!r}."
    if kind == "STRING" and not isinstance(value, str):
        return f"must be a string, not {value!r}."
    if kind not in ("BOOLEAN", "STRING", "*"):
        return f"must be a link to a {kind} output, not the constant {value!r}."
    return None


def _check_range(value: float, spec: dict[str, Any]) -> str | None:
    low, high = spec.get("min"), spec.get("max")
    if low is not None and value < low:
        return f"{value!r} is below the minimum {low!r}."
    if high is not None and value > high:
        return f"{value!r} is above the maximum {high!r}."
    return None


def _check_choice(value: Any, spec: dict[str, Any], models: set[tuple[str, str]]) -> str | None:
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, not {value!r}."
    folders = spec.get("model_folders")
    if folders:
        if any((folder, value) in models for folder in folders):
            return None
        return (f"model file {value!r} (folder {folders[0]}) is not in models.json; add it to the manifest so it "
                "is downloaded and checked at start-up.")
    if spec.get("input_file") or spec.get("any_string"):
        return None
    choices = spec.get("choices", [])
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices[:12]) + (", …" if len(choices) > 12 else "")
        return f"{value!r} is not one of the accepted values ({shown})."
    return None


# ---------------------------------------------------------------- commands


def default_validation_targets() -> list[Path]:
    """The production four and the smoke four."""
    from .workflows import WORKFLOW_FILES  # the worker's own list of file names; imported late on purpose

    return [directory / name for directory in (WORKFLOW_ROOT, WORKFLOW_ROOT / "smoke")
            for name in WORKFLOW_FILES.values()]


def validate_files(paths: list[Path], lock_path: Path | None = None,
                   manifest_path: Path | None = None) -> list[Problem]:
    """Validate each file against the lock and manifest beside it (or the repository's, or the given ones)."""
    problems: list[Problem] = []
    for path in paths:
        try:
            lock = load_lock(lock_path or lock_path_for(path.parent))
            models = load_model_index(manifest_path or manifest_path_for(path.parent))
            graph = load_graph(path)
        except LockError as exc:
            problems.append(Problem(str(path), str(exc)))
            continue
        problems += validate_graph(graph, lock, models, _shown(path))
    return problems


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def write_lock(object_info_source: str, output: Path, workflow_root: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    """Regenerate the lock for every class the graphs under ``workflow_root`` use, plus the smoke classes."""
    object_info = read_object_info(object_info_source, timeout_s)
    names = classes_used(graph_files(workflow_root)) | set(SMOKE_CLASSES) | set(JOB_TIME_CLASSES)
    lock = build_lock(object_info, names, object_info_source)
    output.write_text(json.dumps(lock, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return lock


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    lock = subparsers.add_parser("lock", help="regenerate the node lock from an /object_info document")
    lock.add_argument("--object-info", required=True, metavar="FILE|URL",
                      help="a saved GET /object_info, or a ComfyUI address such as http://127.0.0.1:8188")
    lock.add_argument("--output", type=Path, default=DEFAULT_LOCK_PATH, help="where to write (default: %(default)s)")
    lock.add_argument("--workflows", type=Path, default=None,
                      help="directory whose graphs (recursively) name the classes to lock (default: the output's)")
    lock.set_defaults(func=_lock_command)

    validate = subparsers.add_parser("validate", help="check workflow graphs against the node lock and manifest")
    validate.add_argument("files", nargs="*", type=Path, help="graphs to check (default: workflows/ and smoke/)")
    validate.add_argument("--lock", type=Path, default=None,
                          help="node lock (default: the one beside each file, else the repository's)")
    validate.add_argument("--models", type=Path, default=None,
                          help="model manifest (default: the one beside each file, else the repository's)")
    validate.set_defaults(func=_validate_command)


def _lock_command(args: argparse.Namespace) -> int:
    root = args.workflows or args.output.parent
    try:
        lock = write_lock(args.object_info, args.output, root)
    except LockError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"Wrote {args.output} with {len(lock['classes'])} node classes.\n")
    return 0


def _validate_command(args: argparse.Namespace) -> int:
    paths = args.files or default_validation_targets()
    problems = validate_files(paths, args.lock, args.models)
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        sys.stdout.write(f"{len(problems)} problem(s) found.\n")
        return 1
    sys.stdout.write(f"All {len(paths)} workflow file(s) are valid.\n")
    return 0
