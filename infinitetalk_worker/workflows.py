"""Workflow graphs: pick one of four by job kind and write the request's values into it by role.

Graphs are loaded and checked once at start; a job only copies one and patches it. Nodes are
found by the ``role:<name>`` tokens in their titles (see ``roles.py``), never by id, so any set
that carries the roles (the production four, the CPU smoke set, a user's own) runs unchanged.
"""

from __future__ import annotations

import copy
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import MULTI_ONLY_FIELDS
from .errors import WorkflowError
from .frames import frame_count
from .media import PreparedMedia
from .node_lock import LockError, load_graph
from .presets import preset_values
from .request import JobRequest
from .roles import OUTPUT_ROLE, REQUIRED_ROLES, ROLE_INPUTS, roles_of

log = logging.getLogger(__name__)

WORKFLOW_FILES: dict[tuple[str, str], str] = {
    ("image", "single"): "i2v_single.json",
    ("image", "multi"): "i2v_multi.json",
    ("video", "single"): "v2v_single.json",
    ("video", "multi"): "v2v_multi.json",
}
# Request fields whose explicit value must land somewhere in the graph. Others are consumed by the
# worker itself: sizes, frames and files always have roles, and multi_audio_type shapes the soundtrack.
REQUEST_VALUE_FIELDS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "shift": "shift",
    "audio_scale": "audio_scale",
    "audio_cfg_scale": "audio_cfg_scale",
    "motion_frame": "motion_frame",
    "colormatch": "colormatch",
    "speaker_boxes": "speaker_mask_1_file",
}
SAMPLING_VALUES = ("steps", "cfg", "shift", "audio_cfg_scale")  # what a quality preset sets


@dataclass(frozen=True)
class Workflow:
    """One loaded graph with the index of which node carries which role."""

    name: str
    graph: dict[str, Any]
    nodes_by_role: dict[str, list[str]]

    @property
    def output_node(self) -> str:
        return self.nodes_by_role[OUTPUT_ROLE][0]


def load_workflow(path: Path) -> Workflow:
    """Read an API-format graph and index its roles, refusing roles the worker cannot write."""
    try:
        graph = load_graph(path)
    except LockError as exc:
        raise WorkflowError(str(exc)) from None
    if not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise WorkflowError(f"Workflow {path} is not an API-format graph (every node needs a class_type).")
    nodes_by_role: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        for role in roles_of(node):
            _check_role_target(path.name, node_id, node["class_type"], role)
            nodes_by_role.setdefault(role, []).append(node_id)
    outputs = nodes_by_role.get(OUTPUT_ROLE, [])
    if len(outputs) > 1:
        raise WorkflowError(f"Workflow {path.name} has {len(outputs)} nodes with role:output; exactly one is allowed.")
    return Workflow(path.name, graph, nodes_by_role)


def _check_role_target(name: str, node_id: str, class_type: str, role: str) -> None:
    if role not in ROLE_INPUTS:
        raise WorkflowError(f"Workflow {name}: node {node_id} carries unknown role:{role}.")
    if class_type not in ROLE_INPUTS[role]:
        accepted = ", ".join(sorted(ROLE_INPUTS[role]))
        raise WorkflowError(
            f"Workflow {name}: node {node_id} ({class_type}) carries role:{role}, "
            f"which the worker can only write to {accepted}."
        )


def load_workflow_set(directory: Path) -> dict[tuple[str, str], Workflow]:
    """Load all four graphs at start, so a broken file stops the worker before its first job."""
    workflows = {}
    for kind, file_name in WORKFLOW_FILES.items():
        workflow = load_workflow(directory / file_name)
        missing = [role for role in REQUIRED_ROLES[kind] if role not in workflow.nodes_by_role]
        if missing:
            raise WorkflowError(
                f"Workflow {file_name} lacks the role(s) {', '.join(missing)} that a "
                f"{kind[0]}/{kind[1]} job needs (mark the nodes with role:<name> in _meta.title)."
            )
        workflows[kind] = workflow
    return workflows


def patch_workflow(workflow: Workflow, values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """A copy of the graph with every value written where its role says.

    ``explicit`` names the values the caller chose; such a value with no place in the graph is an
    error (the caller would otherwise believe it took effect). Defaults without a place are skipped.
    """
    graph = copy.deepcopy(workflow.graph)
    placed: set[str] = set()
    for role, node_ids in workflow.nodes_by_role.items():
        for node_id in node_ids:
            node = graph[node_id]
            for value_name, input_name in ROLE_INPUTS[role][node["class_type"]].items():
                if values.get(value_name) is not None:
                    node.setdefault("inputs", {})[input_name] = values[value_name]
                    placed.add(value_name)
    unplaced = sorted(name for name in explicit if name not in placed and values.get(name) is not None)
    if unplaced:
        raise WorkflowError(
            f"Workflow {workflow.name} has no node that takes {', '.join(unplaced)}; "
            "remove the key(s) from the request or use a workflow that supports them."
        )
    return graph


def graph_values(request: JobRequest, media: PreparedMedia, seed: int, filename_prefix: str,
                 attention_mode: str | None = None, separated: bool = True) -> dict[str, Any]:
    """Every value a graph may take for this job, keyed by the names ``ROLE_INPUTS`` uses.

    ``separated``: the graph passes the voices through vocal separation (it resamples them, which
    the frame count must follow).
    """
    width, height = media.output_size
    sampling = sampling_values(request, width, height)
    tracks = [media.audio_tracks[slot] for slot in ("audio_1", "audio_2") if slot in media.audio_tracks]
    multi = request.person_count == "multi"
    values: dict[str, Any] = {f"{slot}_file": str(path) for slot, path in media.files.items()}
    values.update(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=width,
        height=height,
        num_frames=frame_count(tracks, request.audio_mode if multi else "para", request.max_frame, separated),
        seed=seed,
        **sampling,
        audio_scale=request.audio_scale,
        motion_frame=request.motion_frame,
        colormatch=request.colormatch,
        multi_audio_type=request.audio_mode if multi else None,
        force_offload=request.force_offload,
        filename_prefix=filename_prefix,
        attention_mode=attention_mode,
    )
    return values


def explicit_values(request: JobRequest) -> set[str]:
    """Value names the caller chose explicitly (single-speaker jobs ignore the multi-only keys)."""
    multi_only = set() if request.person_count == "multi" else MULTI_ONLY_FIELDS
    explicit = {REQUEST_VALUE_FIELDS[f] for f in request.explicit_fields
                if f in REQUEST_VALUE_FIELDS and f not in multi_only}
    if "quality" in request.explicit_fields:  # a preset the caller chose must take effect as a whole
        preset = preset_values(request.quality, request.input_type, *request.rounded_size)
        explicit |= {name for name, value in preset.items() if value is not None}
    return explicit


def sampling_values(request: JobRequest, width: int, height: int) -> dict[str, Any]:
    """steps, cfg, shift and audio_cfg_scale: the caller's own, else the quality preset's (None: the workflow's)."""
    preset = preset_values(request.quality, request.input_type, width, height)
    return {name: getattr(request, name) if getattr(request, name) is not None else preset[name]
            for name in SAMPLING_VALUES}


def new_seed() -> int:
    """A random seed that survives a round trip through JavaScript numbers."""
    return secrets.randbelow(2**32)
