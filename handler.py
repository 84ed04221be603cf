"""RunPod entry point: wires request -> media -> workflow -> ComfyUI -> delivery for each job.

``python handler.py`` serves RunPod; ``--rp_serve_api`` starts the SDK's local API and
``--test_input '{...}'`` runs one job. The handler is ``async`` so that RunPod's cancellation
reaches it; the prompt it started in ComfyUI is then interrupted before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from infinitetalk_worker import __version__, s3_delivery
from infinitetalk_worker.comfy_client import ComfyClient, PromptResult, delete_output_files
from infinitetalk_worker.config import Settings, load_settings
from infinitetalk_worker.delivery import check_destination, deliver, video_metadata
from infinitetalk_worker.errors import WorkerError
from infinitetalk_worker.logs import current_job_id, setup_logging
from infinitetalk_worker.media import job_directory, prepare_media
from infinitetalk_worker.progress import ProgressReporter
from infinitetalk_worker.request import JobRequest, parse_request
from infinitetalk_worker.workflows import (
    Workflow,
    explicit_values,
    graph_values,
    load_workflow_set,
    new_seed,
    patch_workflow,
)

log = logging.getLogger("infinitetalk_worker.handler")


class Worker:
    """Everything loaded once per process: settings, the ComfyUI client and the four graphs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = ComfyClient(settings.comfyui_url, settings.http_timeout_s, settings.ws_idle_timeout_s,
                                  settings.comfyui_log_file)
        self.workflows = load_workflow_set(settings.workflow_dir)
        s3_delivery.warm_up(settings)

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id") or "local")
        current_job_id.set(job_id)
        raw = job.get("input")
        try:
            if isinstance(raw, dict) and raw.get("test") in (True, "true"):
                return await asyncio.to_thread(self.readiness)
            request = parse_request(raw, self.settings.max_prompt_chars)
            with job_directory(self.settings, job_id) as job_dir:
                return await self._generate(job, request, job_dir)
        except WorkerError as exc:
            log.warning("job failed: %s", exc)
            return {"error": str(exc), "refresh_worker": True} if exc.refresh_worker else {"error": str(exc)}
        except Exception as exc:  # the worker must keep serving: report, don't crash
            log.exception("unexpected failure")
            return {"error": f"Internal worker error ({type(exc).__name__}); see the worker log for job {job_id}."}

    def readiness(self) -> dict[str, Any]:
        """The health probe: is ComfyUI answering, and which version and workflows serve jobs."""
        stats = self.client.system_stats(timeout_s=5)
        return {
            "ready": True,
            "comfyui_version": (stats.get("system") or {}).get("comfyui_version"),
            "worker_version": __version__,
            "workflow_dir": str(self.settings.workflow_dir),
            "devices": [device.get("name") for device in stats.get("devices", [])],
        }

    async def _generate(self, job: dict[str, Any], request: JobRequest, job_dir: Path) -> dict[str, Any]:
        started = time.monotonic()
        progress = ProgressReporter(job, self.settings.progress_interval_s)
        check_destination(request, self.settings)
        progress.stage("preparing inputs")
        media = await asyncio.to_thread(prepare_media, request, job_dir, self.settings)
        inputs_done = time.monotonic()
        workflow = self.workflows[request.kind]
        seed = request.seed if request.seed is not None else new_seed()
        name = output_name(str(job.get("id") or "local"))
        graph = patch_workflow(workflow, graph_values(request, media, seed, f"infinitetalk/{name}",
                                                        self.settings.attention_mode),
                               explicit_values(request))
        progress.use_graph(graph, (workflow.nodes_by_role.get("sampler") or [None])[0])
        progress.stage("queued in ComfyUI")
        result = await self._run_prompt(graph, workflow, progress, started + self.settings.job_deadline_s)
        comfy_done = time.monotonic()
        video = await self._fetch_video(result, name, job_dir)
        progress.stage("delivering")
        timings = {"inputs_s": inputs_done - started, "comfyui_s": comfy_done - inputs_done,
                   "comfyui_execution_s": result.execution_s}
        metadata = {"seed": seed, "workflow": workflow.name, **video_metadata(video),
                    "timings": {k: round(v, 3) for k, v in timings.items() if v is not None}}
        if request.warnings():
            metadata["warnings"] = request.warnings()
        output = await asyncio.to_thread(deliver, video, request, name, self.settings, metadata)
        output["timings"]["total_s"] = round(time.monotonic() - started, 3)
        log.info("job done in %.2f s (%s, %s frames)", output["timings"]["total_s"], output["delivered_as"],
                 output["frames"])
        return output

    async def _fetch_video(self, result: PromptResult, name: str, job_dir: Path) -> Path:
        """Copy ComfyUI's video into the job directory, then remove every file and record it left."""
        video = job_dir / "output.mp4"
        try:
            await asyncio.to_thread(self.client.download, result.files[-1], video)
        finally:
            delete_output_files(result.files, name, self.settings.comfyui_dir)
            self.client.forget(result.prompt_id)
        return video

    async def _run_prompt(self, graph: dict[str, Any], workflow: Workflow, progress: ProgressReporter,
                          deadline: float) -> PromptResult:
        """Run in a thread; on cancellation stop that thread and interrupt the prompt, then re-raise."""
        prompt_id, cancel = str(uuid.uuid4()), threading.Event()
        log.info("submitting %s as prompt %s", workflow.name, prompt_id)
        try:
            return await asyncio.to_thread(self.client.run_prompt, graph, workflow.output_node, prompt_id=prompt_id,
                                           deadline=deadline, cancel=cancel, on_progress=progress.comfy_event)
        except asyncio.CancelledError:
            log.warning("job cancelled; interrupting prompt %s", prompt_id)
            cancel.set()
            await asyncio.to_thread(self.client.interrupt, prompt_id)
            raise


def output_name(job_id: str) -> str:
    """A unique, filesystem-safe name: ComfyUI must never answer with an earlier job's cached file."""
    safe = re.sub(r"[^A-Za-z0-9-]", "", job_id)[:40] or "job"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{uuid.uuid4().hex[:8]}"


_worker: Worker | None = None


def get_worker() -> Worker:
    """The process's worker, created from the environment on first use (eagerly under __main__)."""
    global _worker
    if _worker is None:
        _worker = Worker(load_settings())
    return _worker


def reset_worker(settings: Settings | None = None) -> None:
    """Replace the worker (tests and tools that change settings between runs)."""
    global _worker
    _worker = Worker(settings) if settings is not None else None


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod's entry: one job in, one result dict out (``error`` marks it FAILED)."""
    return await get_worker().handle(job)


def main() -> None:
    import runpod

    from infinitetalk_worker.startup_checks import run_startup_checks

    setup_logging()
    settings = load_settings()
    if settings.run_startup_checks:
        run_startup_checks(settings)
    reset_worker(settings)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
