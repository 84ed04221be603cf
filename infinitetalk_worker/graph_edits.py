"""Changes to a graph's shape that a request asks for: nodes taken out or added, found by class or role.

Values are written by ``workflows.patch_workflow``; what cannot be a value (a step the job skips, a node
the job adds) happens here, on the patched copy, and is refused with a clear error where the workflow
has no place for it rather than silently left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .request import JobRequest

from .errors import WorkflowError
from .presets import ACCELERATORS, QUALITY, cache_node
from .roles import roles_of

VOCAL_SEPARATOR = "MelBandRoFormerSampler"
VOCAL_SEPARATOR_LOADER = "MelBandRoFormerModelLoader"
DISTILL_LORA_ROLE = "distill_lora"
SAMPLER_CLASS = "WanVideoSampler"


def separates_vocals(graph: dict[str, Any]) -> bool:
    """Whether the voices pass through vocal separation (which resamples them) before the embedding."""
    return any(node.get("class_type") == VOCAL_SEPARATOR for node in graph.values())


def remove_vocal_separation(graph: dict[str, Any]) -> list[str]:
    """Feed each voice straight to its consumers and drop the separation nodes; returns the removed ids.

    Only the separator's first output (vocals) may be in use: a graph that mixes in the instruments
    cannot run without it, and is refused rather than silently changed.
    """
    separators = [node_id for node_id, node in graph.items() if node.get("class_type") == VOCAL_SEPARATOR]
    for node_id in separators:
        source = graph[node_id]["inputs"].get("audio")
        for consumer in graph.values():
            for name, value in consumer.get("inputs", {}).items():
                if _links_to(value, node_id):
                    if value[1] != 0:
                        raise WorkflowError(f"node {node_id} ({VOCAL_SEPARATOR}): its output {value[1]} is used, "
                                            "so vocal separation cannot be switched off in this workflow.")
                    consumer["inputs"][name] = list(source)
        del graph[node_id]
    return separators + _drop_unused(graph, VOCAL_SEPARATOR_LOADER)


def remove_distill_lora(graph: dict[str, Any], workflow_name: str) -> list[str]:
    """Run the model without the step-distillation LoRA: drop the node marked ``role:distill_lora``.

    Its consumers take it on an optional input (WanVideoModelLoader's ``lora``), which is left unset.
    """
    marked = [node_id for node_id, node in graph.items() if DISTILL_LORA_ROLE in roles_of(node)]
    if not marked:
        raise WorkflowError(f"Workflow {workflow_name} has no node marked role:{DISTILL_LORA_ROLE}, so it cannot "
                            "run without the distillation LoRA that quality 'reference' needs.")
    for node_id in marked:
        for consumer in graph.values():
            inputs = consumer.get("inputs", {})
            for name in [name for name, value in inputs.items() if _links_to(value, node_id)]:
                del inputs[name]
        del graph[node_id]
    return marked


def add_step_cache(graph: dict[str, Any], cache: dict[str, Any], workflow_name: str, label: str) -> str:
    """Add a cache node (TeaCache, MagCache, EasyCache) and link it to every sampler's ``cache_args``."""
    samplers = [node_id for node_id, node in graph.items()
                if node.get("class_type") == SAMPLER_CLASS and "sampler" in roles_of(node)]
    if not samplers:
        raise WorkflowError(f"Workflow {workflow_name} has no {SAMPLER_CLASS} marked role:sampler, so acceleration "
                            f"{label!r} has nowhere to go; remove acceleration from the request.")
    node_id = str(max((int(key) for key in graph if str(key).isdigit()), default=0) + 1)
    graph[node_id] = cache
    for sampler in samplers:
        graph[sampler]["inputs"]["cache_args"] = [node_id, 0]
    return node_id


def _drop_unused(graph: dict[str, Any], class_type: str) -> list[str]:
    used = {value[0] for node in graph.values() for value in node.get("inputs", {}).values() if _is_link(value)}
    unused = [node_id for node_id, node in graph.items()
              if node.get("class_type") == class_type and node_id not in used]
    for node_id in unused:
        del graph[node_id]
    return unused


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _links_to(value: Any, node_id: str) -> bool:
    return _is_link(value) and value[0] == node_id


def apply_request_edits(graph: dict[str, Any], request: JobRequest, workflow_name: str, separated: bool) -> None:
    """The shape changes the request asks for: no vocal separation, no distillation LoRA, a step cache."""
    if not separated:
        remove_vocal_separation(graph)
    if not QUALITY[request.quality].distill_lora:
        remove_distill_lora(graph, workflow_name)
    if request.acceleration in ACCELERATORS:
        add_step_cache(graph, cache_node(request.acceleration, request.acceleration_threshold), workflow_name,
                       request.acceleration)


#: (role, class, input) -> the result's name for what the graph was given
REPORTED_INPUTS = {
    ("sampler", SAMPLER_CLASS, "steps"): "steps", ("sampler", SAMPLER_CLASS, "cfg"): "cfg",
    ("sampler", SAMPLER_CLASS, "shift"): "shift",
    ("audio_embeds", "MultiTalkWav2VecEmbeds", "audio_cfg_scale"): "audio_cfg_scale",
    ("audio_embeds", "MultiTalkWav2VecEmbeds", "audio_scale"): "audio_scale",
    ("image_embeds", "WanVideoImageToVideoMultiTalk", "motion_frame"): "motion_frame",
    ("image_embeds", "WanVideoImageToVideoMultiTalk", "colormatch"): "colormatch",
}


def sampling_report(graph: dict[str, Any]) -> dict[str, Any]:
    """What the submitted graph samples with, read back from it: the result says what was made."""
    report: dict[str, Any] = {}
    for node in graph.values():
        for role in roles_of(node):
            for (want_role, class_type, name), key in REPORTED_INPUTS.items():
                value = node.get("inputs", {}).get(name)
                if role == want_role and node.get("class_type") == class_type and not _is_link(value):
                    report.setdefault(key, value)
    if report:
        report["distill_lora"] = any(DISTILL_LORA_ROLE in roles_of(node) for node in graph.values())
        by_class = {accelerator.class_type: name for name, accelerator in ACCELERATORS.items()}
        caches = [graph[link[0]] for node in graph.values()
                  if _is_link(link := node.get("inputs", {}).get("cache_args")) and link[0] in graph]
        report["acceleration"] = by_class.get(caches[0]["class_type"], caches[0]["class_type"]) if caches else "none"
    return report
