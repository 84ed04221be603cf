"""The job directory: where one job's fetched and derived files live, and only for as long as the job."""

from __future__ import annotations

import contextlib
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .config import Settings


@contextlib.contextmanager
def job_directory(settings: Settings, job_id: str) -> Iterator[Path]:
    """A private directory for one job, removed when the job ends whatever the outcome."""
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "", job_id)[:40] or "job"
    path = settings.job_root / f"{safe_id}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
