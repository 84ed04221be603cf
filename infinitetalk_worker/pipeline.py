"""The one job path: request -> media -> graph -> ComfyUI -> delivery.

The RunPod handler, the ``render`` command and the rehearsal all go through ``Pipeline``, so
what is rehearsed and what ``render`` prints is exactly what a deployed worker does. Everything
that can be loaded once (settings, the ComfyUI client, the four graphs, the start-up findings)
is held by one ``Pipeline`` per process; a job only copies a graph and patches it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, speech
from .comfy_client import ComfyClient, PromptResult, delete_output_files
from .config import Settings, load_settings
from .constants import FPS
from .delivery import check_destination, deliver, video_metadata
from .errors import WorkerError, WorkflowError
from .frames import MAX_NODE_FRAMES, held_frame_bytes, window_count
from .graph_edits import apply_request_edits, sampling_report, separates_vocals
from .logs import current_job_id
from .media import PreparedMedia, job_directory, prepare_media
from .memory_profile import (
    GIB,
    WORKFLOW_PROFILE,
    MemoryProfile,
    choose_profile,
    frames_memory_problem,
    gpu_vram_gib,
    ram_total,
    window_settings,
)
from .presets import sampling_warnings
from .progress import ProgressReporter
from .request import JobRequest, is_probe, parse_request
from .standin_graph import StandinRun, adapt_for_standins
from .workflows import Workflow, explicit_values, graph_values, load_workflow_set, new_seed, patch_workflow

log = logging.getLogger(__name__)


@dataclass
class StartupState:
    """What the start-up checks found that jobs must know about (missing or stand-in models)."""

    missing_models: list[str] = field(default_factory=list)
    standin_models: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    memory_profile: MemoryProfile | None = None  # None: chosen from ComfyUI's /system_stats when first needed
    ram_total: int | None = None  # bytes of RAM ComfyUI's machine has (None: unknown, not checked)
    vram_gib: float | None = None  # the GPU's memory (None: unknown or no GPU, not checked)

    @classmethod
    def from_report(cls, report: Any) -> StartupState:
        """From what ``run_startup_checks`` returns (nothing when the checks were skipped)."""
        if report is None:
            return cls()
        return cls(list(getattr(report, "missing_models", [])), list(getattr(report, "standin_models", [])),
                   dict(getattr(report, "versions", {})))


@dataclass
class JobPlan:
    """Everything decided before ComfyUI runs: the graph to submit and what the result will say."""

    request: JobRequest
    workflow: Workflow
    media: PreparedMedia
    seed: int
    name: str
    graph: dict[str, Any]
    frames: int
    warnings: list[str]
    vocal_separation: bool = True
    sampling: dict[str, Any] = field(default_factory=dict)
    graph_changes: list[str] = field(default_factory=list)
    memory_profile: str = "workflow"


class Pipeline:
    """One process's job path; safe to share between jobs (per-job state lives in ``JobPlan``)."""

    def __init__(self, settings: Settings, startup: StartupState | None = None,
                 standin_run: StandinRun | None = None) -> None:
        self.settings = settings
        self.startup = startup or StartupState()
        self.standin_run = standin_run or StandinRun()
        self.client = ComfyClient(settings.comfyui_url, settings.http_timeout_s, settings.ws_idle_timeout_s,
                                  settings.comfyui_log_file)
        self.workflows = load_workflow_set(settings.workflow_dir)
        self.speech_engine = speech.warm_up(settings)  # once per process (cached), not per job
        if settings.s3_configured:  # boto3 (~0.3 s to import) only where a bucket is configured
            from . import s3_delivery

            s3_delivery.warm_up(settings)

    # -- the RunPod job --------------------------------------------------------------------------

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """One RunPod job in, one result out; every failure becomes ``{"error": sentence}``."""
        job_id = str(job.get("id") or "local")
        current_job_id.set(job_id)
        raw = job.get("input")
        try:
            if is_probe(raw):
                return await asyncio.to_thread(self.readiness)
            self._refuse_without_models()
            request = parse_request(raw, self.settings.max_prompt_chars, self.settings.max_text_chars)
            with job_directory(self.settings, job_id) as job_dir:
                return await self.run(job, request, job_dir)
        except WorkerError as exc:
            log.warning("job failed: %s", exc)
            return {"error": str(exc), "refresh_worker": True} if exc.refresh_worker else {"error": str(exc)}
        except Exception as exc:  # the worker must keep serving: report, don't crash
            log.exception("unexpected failure")
            return {"error": f"Internal worker error ({type(exc).__name__}); see the worker log for job {job_id}."}

    def readiness(self) -> dict[str, Any]:
        """The health probe: ready only when ComfyUI answers and every model file is there."""
        stats = self.client.system_stats(timeout_s=5)
        profile = self.memory_profile(stats)
        answer: dict[str, Any] = {
            "ready": not self.startup.missing_models,
            "comfyui_version": (stats.get("system") or {}).get("comfyui_version"),
            "worker_version": __version__,
            "workflow_dir": str(self.settings.workflow_dir),
            "devices": [device.get("name") for device in stats.get("devices", [])],
            "text_to_speech": self.speech_engine is not None,  # jobs with text need it; uploads do not
            "text_to_speech_device": self.speech_engine.device if self.speech_engine else None,
            "memory_profile": profile.name,
        }
        if self.startup.missing_models:
            answer["missing_models"] = list(self.startup.missing_models)
        if self.startup.standin_models:
            answer["standin_models"] = list(self.startup.standin_models)
        if self.startup.versions:
            answer["versions"] = dict(self.startup.versions)
        return answer

    def memory_profile(self, system_stats: dict[str, Any] | None = None) -> MemoryProfile:
        """The profile in use: chosen once per process, from MEMORY_PROFILE or the GPU ComfyUI reports."""
        if self.startup.memory_profile is None:
            if system_stats is None:
                system_stats = self.client.system_stats()
            self.startup.memory_profile = choose_profile(self.settings.memory_profile, system_stats)
            self.startup.ram_total = ram_total(system_stats)
            self.startup.vram_gib = gpu_vram_gib(system_stats)
        return self.startup.memory_profile

    def _refuse_without_models(self) -> None:
        missing = self.startup.missing_models
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise WorkerError(
                f"This worker has no model files for {shown}: mount a network volume holding them under "
                f"/runpod-volume/models, or run `python -m infinitetalk_worker download-models`, then restart it."
            )

    async def run(self, job: dict[str, Any], request: JobRequest, job_dir: Path) -> dict[str, Any]:
        """Prepare, run in ComfyUI, deliver: the whole job for a validated request."""
        started = time.monotonic()
        progress = ProgressReporter(job, self.settings.progress_interval_s)
        check_destination(request, self.settings)
        progress.stage("preparing inputs")
        await asyncio.to_thread(self.memory_profile)
        plan = await asyncio.to_thread(self.plan, request, job_dir, str(job.get("id") or "local"))
        inputs_done = time.monotonic()
        progress.use_graph(plan.graph, (plan.workflow.nodes_by_role.get("sampler") or [None])[0])
        progress.stage("queued in ComfyUI")
        result = await self._run_prompt(plan, progress, started + self.settings.job_deadline_s)
        comfy_done = time.monotonic()
        video = await self._fetch_video(result, plan.name, job_dir)
        progress.stage("delivering")
        timings = {"inputs_s": inputs_done - started, "comfyui_s": comfy_done - inputs_done,
                   "comfyui_execution_s": result.execution_s,
                   "tts_s": plan.media.speech.seconds_taken if plan.media.speech.tracks else None}
        output = await asyncio.to_thread(deliver, video, request, plan.name, self.settings,
                                         self._metadata(plan, video, timings))
        output["timings"]["total_s"] = round(time.monotonic() - started, 3)
        log.info("job done in %.2f s (%s, %s frames)", output["timings"]["total_s"], output["delivered_as"],
                 output["frames"])
        return output

    # -- the parts render and the rehearsal share ------------------------------------------------

    def plan(self, request: JobRequest, job_dir: Path, job_id: str = "local") -> JobPlan:
        """Inputs into the job directory, then the exact graph to submit (no ComfyUI call).

        The memory profile is the one already chosen (``run`` and ``render`` choose it); none yet means
        the workflow's own memory settings.
        """
        workflow = self.workflows[request.kind]
        separated = vocal_separation(request, workflow)  # before any download: it can refuse the job
        media = prepare_media(request, job_dir, self.settings)
        seed = request.seed if request.seed is not None else new_seed()
        name = output_name(job_id)
        values = graph_values(request, media, seed, f"infinitetalk/{name}", self.settings.attention_mode,
                              separated=separated)
        profile = self.startup.memory_profile or WORKFLOW_PROFILE  # run() chooses it before planning
        values.update(profile.graph_values(request.explicit_fields))
        graph = patch_workflow(workflow, values, explicit_values(request))
        problem = frames_memory_problem(graph, values["num_frames"], values["width"], values["height"],
                                        self.startup.ram_total, self.startup.vram_gib)
        if problem:
            raise WorkerError(problem)
        apply_request_edits(graph, request, workflow.name, separated)
        sampling = sampling_report(graph)
        warnings = (request.warnings() + media.notes + _frame_warnings(values["num_frames"], media)
                    + sampling_warnings(sampling, request.acceleration))
        changes: list[str] = []
        if self.settings.allow_standin_models:
            changes = adapt_for_standins(graph, self.settings, self.standin_run)
            warnings.append("This video was made with stand-in model weights (ALLOW_STANDIN_MODELS=true): its "
                            "picture is noise; it proves the job path, not the model.")
        return JobPlan(request, workflow, media, seed, name, graph, values["num_frames"], warnings, separated,
                       sampling, changes, profile.name)

    def _metadata(self, plan: JobPlan, video: Path, timings: dict[str, float | None]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "seed": plan.seed, "workflow": plan.workflow.name, "vocal_separation": plan.vocal_separation,
            "quality": plan.request.quality, **({"sampling": plan.sampling} if plan.sampling else {}),
            "memory_profile": plan.memory_profile,
            **video_metadata(video),
            "timings": {k: round(v, 3) for k, v in timings.items() if v is not None},
        }
        metadata.update(speaker_report(plan.media))
        if plan.media.speech.tracks:  # what was spoken: per speaker the voice and the duration
            metadata["speech"] = plan.media.speech.report()
        if plan.warnings:
            metadata["warnings"] = list(plan.warnings)
        if plan.graph_changes:  # stand-in runs only: what the graph had changed for the CPU
            metadata["graph_changes"] = list(plan.graph_changes)
        return metadata

    async def _run_prompt(self, plan: JobPlan, progress: ProgressReporter, deadline: float) -> PromptResult:
        """Run in a thread; on cancellation stop that thread and interrupt the prompt, then re-raise."""
        prompt_id, cancel = str(uuid.uuid4()), threading.Event()
        log.info("submitting %s as prompt %s", plan.workflow.name, prompt_id)
        try:
            return await asyncio.to_thread(self.client.run_prompt, plan.graph, plan.workflow.output_node,
                                           prompt_id=prompt_id, deadline=deadline, cancel=cancel,
                                           on_progress=progress.comfy_event)
        except asyncio.CancelledError:
            log.warning("job cancelled; interrupting prompt %s", prompt_id)
            cancel.set()
            await asyncio.to_thread(self.client.interrupt, prompt_id)
            raise

    async def _fetch_video(self, result: PromptResult, name: str, job_dir: Path) -> Path:
        """Copy ComfyUI's video into the job directory, then remove every file and record it left."""
        video = job_dir / "output.mp4"
        try:
            how = await asyncio.to_thread(self.client.fetch_output, result.files[-1], video, self.settings.comfyui_dir)
            log.info("took ComfyUI's video %s from %s", result.files[-1].filename, how)
        finally:
            delete_output_files(result.files, name, self.settings.comfyui_dir)
            self.client.forget_later(result.prompt_id)
        return video


def vocal_separation(request: JobRequest, workflow: Workflow) -> bool:
    """Whether this job's voices go through vocal separation: the request's choice, where the graph can.

    ``auto`` keeps it for uploaded audio (which may carry music or noise) and drops it when every voice is
    synthesized from text: clean speech has nothing to separate, and the detour only costs time.
    """
    available = separates_vocals(workflow.graph)
    if request.separate_vocals is True and not available:
        raise WorkflowError(f"Workflow {workflow.name} has no vocal separation node; remove separate_vocals "
                            "from the request or use a workflow that has one.")
    if request.separate_vocals == "auto":
        return available and not request.all_speech_synthesized
    return available and request.separate_vocals is True


def _frame_warnings(frames: int, media: PreparedMedia) -> list[str]:
    """Say so when the pinned nodes' frame maximum, not the audio, sets the video's length."""
    seconds = max(media.audio_seconds.values(), default=0.0)
    if frames < MAX_NODE_FRAMES or seconds * FPS <= MAX_NODE_FRAMES:
        return []
    return [f"The video stops after {MAX_NODE_FRAMES} frames ({MAX_NODE_FRAMES / FPS:g} s), the most the pinned "
            f"audio-embedding node makes; the rest of the {seconds:.1f} s of audio is not in it."]


def speaker_report(media: PreparedMedia) -> dict[str, Any]:
    """Two-speaker jobs: the regions as used (speaker 1 first, 0..1) and where they came from, to check and correct."""
    if media.speakers is None:
        return {}
    return {"speaker_boxes": media.speakers.reported(), "speaker_boxes_source": media.speakers.source}


def output_name(job_id: str) -> str:
    """A unique, filesystem-safe name: ComfyUI must never answer with an earlier job's cached file."""
    safe = re.sub(r"[^A-Za-z0-9-]", "", job_id)[:40] or "job"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{uuid.uuid4().hex[:8]}"


def render(raw_input: Any, settings: Settings, job_dir: Path, vram_gib: float | None = None) -> JobPlan:
    """The plan (and graph) the worker would submit for a job input; media files stay in ``job_dir``.

    ``vram_gib``: the card to render for (without it, and with MEMORY_PROFILE=auto, no ComfyUI is asked
    and the graph keeps the workflow's own memory settings).
    """
    request = parse_request(raw_input, settings.max_prompt_chars, settings.max_text_chars)
    stats = {"devices": [{"type": "cuda", "vram_total": vram_gib * GIB}]} if vram_gib is not None else None
    startup = StartupState(memory_profile=choose_profile(settings.memory_profile, stats), vram_gib=vram_gib)
    return Pipeline(settings, startup).plan(request, job_dir, "render")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="print the exact graph the worker would submit for a request")
    parser.add_argument("request", type=Path, help="a JSON file: the job input, or {'input': {...}}")
    parser.add_argument("--vram-gb", type=_vram_gb, default=None, metavar="N",
                        help="render for a GPU with N GiB of memory (the memory profile it gets)")
    parser.set_defaults(func=_render_command)


def _vram_gb(text: str) -> float:
    """--vram-gb: a positive number of GiB."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--vram-gb must be a positive number of GiB, not {text!r}")
    return value


def _render_command(args: argparse.Namespace) -> int:
    document = json.loads(args.request.read_text())
    raw_input = document.get("input", document) if isinstance(document, dict) else document
    job_dir = Path(tempfile.mkdtemp(prefix="infinitetalk-render-"))
    try:
        plan = render(raw_input, load_settings(), job_dir, args.vram_gb)
    except WorkerError as exc:
        shutil.rmtree(job_dir, ignore_errors=True)
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(plan.graph, indent=1) + "\n")
    width, height = plan.media.output_size
    sys.stderr.write(f"{plan.workflow.name}: {width}x{height}, {plan.frames} frames, seed {plan.seed}, "
                     f"quality {plan.request.quality}, memory profile {plan.memory_profile}\n")
    speakers = speaker_report(plan.media)
    if speakers:
        sys.stderr.write(f"  speaker_boxes ({speakers['speaker_boxes_source']}): {speakers['speaker_boxes']}\n")
    if plan.sampling:
        sys.stderr.write("  sampling: " + ", ".join(f"{k} {v}" for k, v in plan.sampling.items()) + "\n")
    windows = window_settings(plan.graph)
    if windows:
        source = plan.frames if plan.request.input_type == "video" else 0
        held = held_frame_bytes(plan.frames, width, height, *windows, source_frames=source)
        sys.stderr.write(f"  {window_count(plan.frames, *windows)} window(s) of {windows[0]} frames; the frames "
                         f"take about {held / 1e9:.2f} GB of RAM at once\n")
    for line in plan.warnings + plan.graph_changes:
        sys.stderr.write(f"  {line}\n")
    sys.stderr.write(f"(derived media files kept in {job_dir})\n")
    return 0
