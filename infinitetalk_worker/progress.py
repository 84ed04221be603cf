"""Progress reports to RunPod: stage, sampler step and window, sent at most every few seconds.

The SDK posts each update from a new thread, so updates can overtake each other; sending few,
and only on change, keeps the client's view calm and ordered enough.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

STAGES_BY_CLASS = {
    "WanVideoSampler": "sampling",
    "MultiTalkWav2VecEmbeds": "encoding audio",
    "WanVideoTextEncodeCached": "encoding prompt",
    "WanVideoDecode": "decoding frames",
    "VHS_VideoCombine": "writing video",
    "SaveVideo": "writing video",
}
Sender = Callable[[dict[str, Any], Any], None]


def _runpod_sender(job: dict[str, Any], payload: Any) -> None:
    """Send through the SDK, but only on RunPod: run locally (``--test_input``, ``--rp_serve_api``)
    the SDK has no address for updates and logs every one as "Failed to return job results"."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        log.debug("progress (not on RunPod, not sent): %s", payload)
        return
    from .runpod_sdk import runpod

    runpod.serverless.progress_update(job, payload)


class ProgressReporter:
    """Turns ComfyUI events into throttled ``progress_update`` calls for one job."""

    def __init__(self, job: dict[str, Any], interval_s: float, send: Sender | None = None) -> None:
        self.job, self.interval_s, self.send = job, interval_s, send or _runpod_sender
        self.node_classes: dict[str, str] = {}
        self.sampler_steps: int | None = None
        self.last_payload: dict[str, Any] | None = None
        self.last_sent = float("-inf")
        self.lock = threading.Lock()

    def use_graph(self, graph: dict[str, Any], sampler_node: str | None) -> None:
        """Learn node classes (for stage names) and the step count (to tell windows apart)."""
        self.node_classes = {node_id: node.get("class_type", "") for node_id, node in graph.items()}
        steps = (graph.get(sampler_node or "", {}).get("inputs") or {}).get("steps")
        self.sampler_steps = steps if isinstance(steps, int) and steps > 0 else None

    def stage(self, name: str) -> None:
        self._offer({"stage": name}, force=True)

    def comfy_event(self, event: dict[str, Any]) -> None:
        """Called from the ComfyUI client's thread for executing/progress events."""
        class_type = self.node_classes.get(str(event.get("node")), "")
        payload: dict[str, Any] = {"stage": STAGES_BY_CLASS.get(class_type, "generating")}
        value, maximum = event.get("value"), event.get("max")
        if isinstance(value, int) and isinstance(maximum, int) and maximum > 0:
            payload.update(self._steps(class_type, value, maximum))
        self._offer(payload)

    def _steps(self, class_type: str, value: int, maximum: int) -> dict[str, Any]:
        steps = self.sampler_steps
        if class_type != "WanVideoSampler" or not steps or maximum % steps:
            return {"progress": round(value / maximum, 3)}
        return {
            "window": min((value - 1) // steps + 1, maximum // steps),
            "windows": maximum // steps,
            "step": (value - 1) % steps + 1,
            "steps": steps,
            "progress": round(value / maximum, 3),
        }

    def _offer(self, payload: dict[str, Any], force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if payload == self.last_payload:
                return
            if not force and now - self.last_sent < self.interval_s:
                return
            self.last_payload, self.last_sent = payload, now
        try:
            self.send(self.job, payload)
        except Exception:  # a progress report must never fail the job
            log.warning("progress update failed", exc_info=True)
