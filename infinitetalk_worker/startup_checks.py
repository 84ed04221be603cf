"""Start-up checks: the live ComfyUI must match the node lock, and every model file must be installed.

Missing model files do not stop the worker: ``run_startup_checks`` returns them in its report, and the
worker then answers ``{"test": true}`` with ``ready: false`` and fails each job with one sentence
instead of exiting (RunPod would restart it forever; the Hub builds the image without models).

Run once before the worker takes jobs (and by ``python -m infinitetalk_worker check``), so that a node
pack that drifted or a model that is missing stops the worker at start with one message listing every
problem, instead of failing the first customer's job minutes into it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .comfyui_process import ComfyUIStartError, StartedComfyUI
from .config import Settings, load_settings
from .node_lock import (
    LockError,
    class_interface,
    load_graph,
    load_lock,
    load_model_index,
    lock_path_for,
    manifest_path_for,
    read_object_info,
    validate_graph,
)
from .standins import StandinError, standin_files, standin_problem

log = logging.getLogger(__name__)

# Where a value is used: (class, input, value) -> ["i2v_single.json node 27", ...]
Usages = dict[tuple[str, str, Any], list[str]]


# The packages WanVideoWrapper's audio embedding depends on (scripts/check_audio_embeddings.py runs it at build).
AUDIO_STACK = ("torch", "transformers", "diffusers", "peft", "accelerate")
# `python -m infinitetalk_worker check`: only model files are missing (the worker still starts, not ready).
EXIT_MODELS_MISSING = 3


class StartupCheckError(RuntimeError):
    """The worker must not take jobs: the message lists every problem found."""


@dataclass
class StartupReport:
    """What checks that passed leave for the jobs (the pipeline's StartupState reads it)."""

    standin_models: list[str] = field(default_factory=list)  # "folder/file" of stand-ins in use (when allowed)
    missing_models: list[str] = field(default_factory=list)  # "folder/file" the workflows need but ComfyUI lacks
    missing_details: list[str] = field(default_factory=list)  # one sentence each: what is missing, where it is used
    versions: dict[str, str] = field(default_factory=dict)  # AUDIO_STACK as installed

    @property
    def ready(self) -> bool:
        return not self.missing_models


def run_startup_checks(settings: Settings) -> StartupReport:
    """Raise ``StartupCheckError`` naming every problem; return what jobs must know when all is well."""
    report = StartupReport(versions=installed_versions())
    problems = startup_problems(settings, report)
    log.info("Installed versions: %s.", ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    if problems and problems == report.missing_details:
        log.warning("ComfyUI at %s matches the node lock, but %d model file(s) are missing; the worker answers "
                    "ready: false and fails jobs until they are installed:\n%s", settings.comfyui_url,
                    len(problems), "\n".join(f"- {p}" for p in problems))
        return report
    if problems:
        raise StartupCheckError(
            f"Start-up checks failed ({len(problems)} problem(s)) for the workflows in {settings.workflow_dir} "
            f"against ComfyUI at {settings.comfyui_url}:\n" + "\n".join(f"- {p}" for p in problems)
        )
    log.info("Start-up checks passed: ComfyUI at %s matches the node lock and has every model file.",
             settings.comfyui_url)
    return report


def checks_before_serving(settings: Settings) -> StartupReport | None:
    """The handler's start: wait for the entrypoint's ComfyUI, then run the checks (when enabled).

    A failure ends the process with status 1 and stops that ComfyUI; no job is taken.
    """
    comfyui = StartedComfyUI.from_environment(settings.comfyui_url)
    try:
        if comfyui is not None:
            comfyui.wait_until_answering()
        return run_startup_checks(settings) if settings.run_startup_checks else None
    except (ComfyUIStartError, StartupCheckError) as exc:
        log.error("%s", exc)
        if comfyui is not None:
            comfyui.stop()
        raise SystemExit(1) from None


def startup_problems(settings: Settings, report: StartupReport | None = None) -> list[str]:
    """Every problem, as one sentence each; reads /object_info once."""
    workflow_dir = settings.workflow_dir
    try:
        lock = load_lock(lock_path_for(workflow_dir))
        models = load_model_index(manifest_path_for(workflow_dir))
    except LockError as exc:
        raise StartupCheckError(str(exc)) from None
    graphs, problems = _configured_graphs(workflow_dir)
    for name, graph in graphs.items():
        problems += [str(p) for p in validate_graph(graph, lock, models, name)]
    live = _live_object_info(settings)
    usages = _constant_usages(graphs)
    for class_type in sorted({node["class_type"] for graph in graphs.values() for node in _nodes(graph)}):
        if class_type in lock["classes"]:
            problems += interface_drift(class_type, lock["classes"][class_type], live.get(class_type), usages)
    missing = _missing_model_places(graphs, lock, models, live)
    if report is not None:
        report.missing_models = [f"{folder}/{value}" for folder, value in sorted(missing)]
        report.missing_details = _missing_sentences(missing)
    problems += _missing_sentences(missing)
    problems += standin_models(settings, graphs, lock, models, live, report or StartupReport())
    return problems


def _configured_graphs(workflow_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    from .workflows import WORKFLOW_FILES  # the worker's own file names; imported late to keep this module light

    graphs, problems = {}, []
    for file_name in WORKFLOW_FILES.values():
        try:
            graphs[file_name] = load_graph(workflow_dir / file_name)
        except LockError as exc:
            problems.append(str(exc))
    return graphs, problems


def _nodes(graph: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in graph.values() if isinstance(node, dict) and isinstance(node.get("class_type"), str)]


def _live_object_info(settings: Settings) -> dict[str, Any]:
    try:
        return read_object_info(settings.comfyui_url.rstrip("/") + "/object_info", settings.http_timeout_s)
    except LockError as exc:
        raise StartupCheckError(f"{exc}. Is ComfyUI running at {settings.comfyui_url} (setting COMFYUI_URL)?") from None


def _constant_usages(graphs: dict[str, dict[str, Any]]) -> Usages:
    usages: Usages = defaultdict(list)
    for file_name, graph in graphs.items():
        for node_id, node in graph.items():
            if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
                continue
            for name, value in node["inputs"].items():
                if isinstance(value, (str, int, float, bool)):
                    usages[(node.get("class_type"), name, value)].append(f"{file_name} node {node_id}")
    return usages


# ---------------------------------------------------------------- interface drift


def interface_drift(class_type: str, locked: dict[str, Any], live_info: dict[str, Any] | None,
                    usages: Usages) -> list[str]:
    """How the live class differs from the lock in ways that can break a locked graph."""
    if live_info is None:
        return [f"{class_type}: node class is missing from ComfyUI (custom node not installed, or it failed to "
                "import; see ComfyUI's log)."]
    live = class_interface(class_type, live_info)
    problems = []
    if [o["type"] for o in live["outputs"]] != [o["type"] for o in locked["outputs"]]:
        problems.append(f"{class_type}: outputs changed from {_types(locked)} to {_types(live)}.")
    if live["output_node"] != locked["output_node"]:
        problems.append(f"{class_type}: output_node changed to {live['output_node']}.")
    for name, spec in locked["inputs"].items():
        problems += _input_drift(class_type, name, spec, live["inputs"].get(name), usages)
    for name, spec in live["inputs"].items():
        if name not in locked["inputs"] and spec["required"]:
            problems.append(f"{class_type}: new required input '{name}' that the lock (and the workflows) lack.")
    return problems


def _types(interface: dict[str, Any]) -> str:
    return "(" + ", ".join(o["type"] for o in interface["outputs"]) + ")"


def _input_drift(class_type: str, name: str, locked: dict[str, Any], live: dict[str, Any] | None,
                 usages: Usages, label: str | None = None) -> list[str]:
    label = label or f"{class_type}: input '{name}'"
    if live is None:
        return [f"{label} is gone{_used_in(usages, class_type, name)}."]
    if live["type"] != locked["type"]:
        return [f"{label} changed type from {locked['type']} to {live['type']}."]
    problems = []
    if live["required"] and not locked["required"]:
        problems.append(f"{label} became required.")
    if "choices" in locked:
        for choice in locked["choices"]:
            if choice not in live.get("choices", [choice]):
                problems.append(f"{label} no longer accepts {choice!r}{_used_in(usages, class_type, name, choice)}.")
    problems += _range_drift(label, locked, live)
    for fmt, widgets in (locked.get("format_widgets") or {}).items():
        live_widgets = (live.get("format_widgets") or {}).get(fmt)
        if live_widgets is None:
            continue  # the format itself is gone: reported as a removed choice above
        for widget, spec in widgets.items():
            widget_label = f"{class_type}: input '{widget}' (format {fmt})"
            problems += _input_drift(class_type, widget, spec, live_widgets.get(widget), usages, widget_label)
    return problems


def _range_drift(label: str, locked: dict[str, Any], live: dict[str, Any]) -> list[str]:
    low, high = locked.get("min"), locked.get("max")
    new_low, new_high = live.get("min"), live.get("max")
    narrower = (new_low is not None and (low is None or new_low > low)) or \
               (new_high is not None and (high is None or new_high < high))
    return [f"{label} range narrowed from [{low}, {high}] to [{new_low}, {new_high}]."] if narrower else []


def _used_in(usages: Usages, class_type: str, name: str, value: Any = None) -> str:
    if value is None:
        places = [place for (cls, inp, _), found in usages.items() if (cls, inp) == (class_type, name)
                  for place in found]
    else:
        places = usages.get((class_type, name, value), [])
    if not places:
        return ""
    label = "workflow" if len(places) == 1 else "workflows"
    return f" ({label} {', '.join(sorted(places))})"


# ---------------------------------------------------------------- model presence


def missing_models(graphs: dict[str, dict[str, Any]], lock: dict[str, Any], models: set[tuple[str, str]],
                   live: dict[str, Any]) -> list[str]:
    """Model files the graphs name that ComfyUI does not list (each reported once, with where it is used)."""
    return _missing_sentences(_missing_model_places(graphs, lock, models, live))


def _missing_model_places(graphs: dict[str, dict[str, Any]], lock: dict[str, Any], models: set[tuple[str, str]],
                          live: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    missing: dict[tuple[str, str], list[str]] = defaultdict(list)
    for file_name, graph in graphs.items():
        for node_id, node in graph.items():
            for folder, value, installed in _model_inputs(node, lock, models, live):
                if value not in installed:
                    missing[(folder, value)].append(f"{file_name} node {node_id}")
    return missing


def installed_versions() -> dict[str, str]:
    """The audio stack as this Python has it (the image has one environment for ComfyUI and the worker)."""
    found = {}
    for name in AUDIO_STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _missing_sentences(missing: dict[tuple[str, str], list[str]]) -> list[str]:
    return [
        f"Model file {value} (folder {folder}) is not installed; run python -m infinitetalk_worker download-models "
        f"or mount a volume with models/{folder}/{value} (used by {', '.join(sorted(places))})."
        for (folder, value), places in sorted(missing.items())
    ]


def standin_models(settings: Settings, graphs: dict[str, dict[str, Any]], lock: dict[str, Any],
                   models: set[tuple[str, str]], live: dict[str, Any], report: StartupReport) -> list[str]:
    """Installed model files the graphs use that are stand-ins: a problem unless ALLOW_STANDIN_MODELS."""
    used = {(folder, value) for graph in graphs.values() for node in graph.values()
            for folder, value, installed in _model_inputs(node, lock, models, live) if value in installed}
    try:
        report.standin_models = standin_files(settings.comfyui_url, used, settings.http_timeout_s)
    except StandinError as exc:
        return [f"{exc}, so whether the model files are stand-ins is unknown."]
    problem = standin_problem(report.standin_models, settings.allow_standin_models)
    return [problem] if problem else []


def _model_inputs(node: Any, lock: dict[str, Any], models: set[tuple[str, str]], live: dict[str, Any]):
    """(folder, file, files ComfyUI lists) for each model-file input of a node."""
    if not isinstance(node, dict):
        return
    interface = lock["classes"].get(node.get("class_type"))
    live_inputs = _raw_inputs(live.get(node.get("class_type")))
    for name, spec in (interface or {}).get("inputs", {}).items():
        value = (node.get("inputs") or {}).get(name)
        if not spec.get("model_folders") or not isinstance(value, str) or name not in live_inputs:
            continue
        folder = next((f for f in spec["model_folders"] if (f, value) in models), spec["model_folders"][0])
        yield folder, value.replace("\\", "/"), {str(c).replace("\\", "/") for c in _choices(live_inputs[name])}


def _raw_inputs(info: dict[str, Any] | None) -> dict[str, Any]:
    sections = (info or {}).get("input") or {}
    return {**(sections.get("required") or {}), **(sections.get("optional") or {})}


def _choices(raw: Any) -> list:
    if isinstance(raw, (list, tuple)) and raw:
        if isinstance(raw[0], list):
            return raw[0]
        if raw[0] == "COMBO" and len(raw) > 1 and isinstance(raw[1], dict):
            return raw[1].get("options", [])
    return []


# ---------------------------------------------------------------- command


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="run the start-up checks against a live ComfyUI")
    parser.add_argument("--comfyui-url", default=None, help="ComfyUI address (default: COMFYUI_URL)")
    parser.add_argument("--workflow-dir", type=Path, default=None, help="workflow set (default: WORKFLOW_DIR)")
    parser.set_defaults(func=_check_command)


def _check_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.comfyui_url:
        settings = dataclasses.replace(settings, comfyui_url=args.comfyui_url.rstrip("/"))
    if args.workflow_dir:
        settings = dataclasses.replace(settings, workflow_dir=args.workflow_dir.resolve())
    try:
        report = run_startup_checks(settings)
    except StartupCheckError as exc:
        sys.stdout.write(f"{exc}\n")
        return 1
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    if report.missing_models:
        sys.stdout.write(
            f"Start-up checks: {len(report.missing_models)} model file(s) missing for the workflows in "
            f"{settings.workflow_dir}; otherwise ComfyUI at {settings.comfyui_url} passes ({versions}):\n"
            + "".join(f"- {sentence}\n" for sentence in report.missing_details))
        return EXIT_MODELS_MISSING
    sys.stdout.write(f"Start-up checks passed for {settings.workflow_dir} against {settings.comfyui_url} "
                     f"({versions}).\n")
    return 0
