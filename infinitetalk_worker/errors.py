"""Errors a job can end with; each carries the English sentence the client will read."""

from __future__ import annotations


class WorkerError(Exception):
    """A job failure whose message is safe and useful to show to the caller."""

    #: Ask RunPod to replace this worker after the job (its ComfyUI is gone or broken).
    refresh_worker: bool = False


class InputError(WorkerError):
    """The request itself is wrong; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class WorkflowError(WorkerError):
    """The workflow set cannot serve this request (a missing role, an unknown role, bad JSON)."""


class ComfyError(WorkerError):
    """ComfyUI refused or failed the prompt."""


class ComfyUnavailableError(ComfyError):
    """ComfyUI stopped answering; the worker should be replaced."""

    refresh_worker = True


class JobTimeoutError(ComfyError):
    """The job ran past its deadline and was interrupted."""


class DeliveryError(WorkerError):
    """The finished video could not be handed back (too large, volume full, S3 refused)."""
