"""RunPod entry point: hands each job to the worker's one pipeline (``infinitetalk_worker.pipeline``).

``python handler.py`` serves RunPod; ``--rp_serve_api`` starts the SDK's local API and
``--test_input '{...}'`` runs one job. The handler is ``async`` so that RunPod's cancellation
reaches it; the pipeline then interrupts its prompt in ComfyUI before the cancellation goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from infinitetalk_worker.config import Settings, load_settings
from infinitetalk_worker.errors import WorkerError
from infinitetalk_worker.logs import setup_logging
from infinitetalk_worker.pipeline import Pipeline, StartupState

_worker: Pipeline | None = None


def get_worker() -> Pipeline:
    """The process's pipeline, built from the environment on first use (eagerly under __main__)."""
    global _worker
    if _worker is None:
        _worker = Pipeline(load_settings())
    return _worker


def reset_worker(settings: Settings | None = None, startup: StartupState | None = None) -> None:
    """Replace the pipeline (tests and tools that change settings between runs)."""
    global _worker
    if _worker is not None:
        _worker.client.close()
    _worker = Pipeline(settings, startup) if settings is not None else None


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod's entry: one job in, one result dict out (``error`` marks it FAILED)."""
    return await get_worker().handle(job)


def main() -> None:
    from infinitetalk_worker.runpod_sdk import runpod
    from infinitetalk_worker.startup_checks import checks_before_serving

    setup_logging()
    settings = load_settings()
    startup = checks_before_serving(settings)
    reset_worker(settings, StartupState.from_report(startup))
    try:  # read the GPU's memory now, before the first job (and log the choice); else on the first job
        get_worker().memory_profile()
    except WorkerError as exc:
        logging.getLogger(__name__).warning("memory profile not chosen yet: %s", exc)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
