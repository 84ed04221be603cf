"""The only changes a graph gets when it runs on stand-in weights on a CPU (ALLOW_STANDIN_MODELS=true).

A rehearsal must execute the production graphs as they are; two of their settings make a CPU run
take hours, so exactly these change, and every change is listed in the job's output:

- ``WanVideoVAELoader`` precision bf16 -> fp32: bf16 convolutions run ~80x slower on a CPU
  without bf16 instructions (a Conv3d ran at 0.15 GFLOPS in bf16, 11.6 in fp32, on this machine).
- ``WanVideoTextEncodeCached`` reads the prompt embeddings from its disk cache (stand-in
  embeddings written for the job's prompts), because the fixed-size umt5-xxl takes 11-14 minutes
  per graph on a CPU. ``full_text_encoder`` keeps the real encoder run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import WorkerError


@dataclass(frozen=True)
class StandinRun:
    """How a stand-in run treats the text encoder (the rehearsal's ``--full-text-encoder``)."""

    full_text_encoder: bool = False


def adapt_for_standins(graph: dict[str, Any], settings: Settings, run: StandinRun) -> list[str]:
    """Apply the CPU changes to ``graph`` in place; return one line per change made."""
    changes: list[str] = []
    for node_id, node in graph.items():
        inputs = node.setdefault("inputs", {})
        if node.get("class_type") == "WanVideoVAELoader" and inputs.get("precision") != "fp32":
            changes.append(f"node {node_id} WanVideoVAELoader: precision {inputs.get('precision')} -> fp32")
            inputs["precision"] = "fp32"
        if node.get("class_type") == "WanVideoTextEncodeCached" and not run.full_text_encoder:
            written = _cache_prompts(inputs, settings)
            changes.append(f"node {node_id} WanVideoTextEncodeCached: use_disk_cache {inputs.get('use_disk_cache')} "
                           f"-> true, stand-in embeddings for its two prompts ({len(written)} cache file(s) written)")
            inputs["use_disk_cache"] = True
    return changes


def _cache_prompts(inputs: dict[str, Any], settings: Settings) -> list[Path]:
    """Write stand-in embeddings for the node's prompts into ComfyUI's text-embedding cache."""
    if settings.comfyui_dir is None:
        raise WorkerError(
            "ALLOW_STANDIN_MODELS=true needs COMFYUI_DIR (the ComfyUI folder) to write stand-in prompt "
            "embeddings into WanVideoWrapper's text-embedding cache."
        )
    from .standins import write_text_embed_cache  # torch/safetensors only where stand-ins are used

    return write_text_embed_cache(settings.comfyui_dir, str(inputs.get("positive_prompt", "")),
                                  str(inputs.get("negative_prompt", "")))
