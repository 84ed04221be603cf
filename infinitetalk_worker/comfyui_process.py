"""The ComfyUI that entrypoint.sh started: the handler waits for it, already loaded, and stops it on failure.

entrypoint.sh replaces itself with the handler right after starting ComfyUI, so the worker's imports
(about a second) happen while ComfyUI loads its nodes, not after it answers. ``exec`` keeps the process,
so ComfyUI is this process's child: a ComfyUI that dies is seen at once, with its exit status, and one
that never answers, or a worker that will not start, stops it (outside a container nothing else would).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)

POLL_S = 0.05


class ComfyUIStartError(RuntimeError):
    """ComfyUI died or did not answer in time; the message says which and where its log is."""


@dataclass(frozen=True)
class StartedComfyUI:
    """What entrypoint.sh hands over: ComfyUI's pid, how long it may take, where it logs."""

    pid: int
    url: str
    timeout_s: float
    log_file: str

    @classmethod
    def from_environment(cls, url: str) -> StartedComfyUI | None:
        """None when the worker runs without the entrypoint (then ComfyUI is someone else's)."""
        pid = os.environ.get("COMFYUI_PID", "")
        if not pid.isdigit():
            return None
        return cls(int(pid), url, float(os.environ.get("COMFYUI_START_TIMEOUT_S") or 600),
                   os.environ.get("COMFYUI_LOG_FILE", "the container log"))

    def wait_until_answering(self) -> float:
        """Seconds waited; raises ComfyUIStartError when ComfyUI exits first or the bound passes."""
        started = time.monotonic()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not _answers(opener, f"{self.url}/system_stats"):
            status = self.exit_status()
            if status is not None:
                raise ComfyUIStartError(f"ComfyUI exited with status {status} before answering on {self.url}; "
                                        f"its log is above and in {self.log_file}")
            if time.monotonic() - started > self.timeout_s:
                raise ComfyUIStartError(
                    f"ComfyUI did not answer on {self.url} within COMFYUI_START_TIMEOUT_S={self.timeout_s:g} s; "
                    f"its log is above and in {self.log_file}")
            time.sleep(POLL_S)
        waited = time.monotonic() - started
        log.info("ComfyUI answers on %s (waited %.1f s).", self.url, waited)
        return waited

    def exit_status(self) -> int | str | None:
        """ComfyUI's exit status once it has ended, else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not this process's child (COMFYUI_PID set by hand): is it still there?
            return None if _exists(self.pid) else "unknown"
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> None:
        """SIGTERM, so that ComfyUI does not outlive a worker that will not start."""
        if self.exit_status() is None:
            log.error("Stopping ComfyUI (pid %d): the worker will not start.", self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


def _answers(opener: urllib.request.OpenerDirector, url: str) -> bool:
    """Any HTTP answer below 500: ComfyUI listens only after it has loaded its nodes."""
    try:
        opener.open(url, timeout=2).close()
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False
    return True


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
