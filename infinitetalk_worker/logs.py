"""Logging with the job id on every line, including lines written from worker threads.

``asyncio.to_thread`` copies context variables into the thread, so a ``ContextVar`` set by the
handler reaches every module's log records without passing the id around.
"""

from __future__ import annotations

import contextvars
import logging
import sys

current_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("current_job_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s [job %(job_id)s] %(name)s: %(message)s"


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job_id.get()
        return True


def setup_logging(level: str = "INFO") -> None:
    """One stderr handler for the worker's own loggers (the RunPod SDK keeps its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(JobIdFilter())
    package_logger = logging.getLogger("infinitetalk_worker")
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(level.upper())
    package_logger.propagate = False
