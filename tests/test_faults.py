"""Faults around a job, through the real handler (issue 5, part 2), beyond tests/test_handler.py.

test_handler.py already covers, against the in-process fake: a dropped websocket, the fake's
``die`` scenario, a hang past the deadline, and cancellation of a running prompt. Here:

- ComfyUI *killed* for real (SIGKILL of a separate fake ComfyUI process): the error quotes the tail
  of ComfyUI's log (COMFYUI_LOG_FILE) and asks for a new worker, within seconds;
- ComfyUI *frozen* (SIGSTOP: the port accepts connections, nothing answers): bounded, same report;
- ``/prompt`` refusing: a 400 without node errors, a 503 page from something that is not ComfyUI,
  nothing listening at all;
- a websocket that never opens: the job completes from ``/history`` alone;
- the network volume full while the result is written (a real 4 KiB tmpfs when the test may mount
  one): an error, no partial file under the final name, and the next job still succeeds;
- the job disk full while an input is decoded: a clear error, nothing left behind;
- cancellation while the prompt still waits in ComfyUI's queue: it is dequeued and never runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings
from testsupport.fake_comfyui import FakeComfyUI
from testsupport.media_factory import make_image, make_wav, probe
from testsupport.waiting import wait_until

SMOKE = REPO_ROOT / "workflows" / "smoke"
FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "testsupport" / "fake_comfyui.py"
LOG_LINES = ["Starting server", "", "To see the GUI go to: http://127.0.0.1:PORT",
             "got prompt", " 50%|#####     | 2/4 [00:01<00:01,  1.9it/s]"]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    make_wav(folder / "voice.wav", 1.0)
    make_wav(folder / "long.wav", 3.0)
    return folder


def base_settings(url: str, tmp_path: Path, inputs: Path, **changes: Any) -> Settings:
    settings = Settings(
        comfyui_url=url, workflow_dir=SMOKE, job_root=tmp_path / "jobs", volume_root=tmp_path / "no-volume",
        allowed_input_roots=[inputs], http_timeout_s=1, ws_idle_timeout_s=1, job_deadline_s=30,
        progress_interval_s=0.0,
    )
    return replace(settings, **changes)


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    yield
    handler_module.reset_worker(None)


def run(job_input: dict, job_id: str = "fault") -> dict:
    return asyncio.run(handler_module.handler({"id": job_id, "input": job_input}))


def job(inputs: Path, **extra: Any) -> dict:
    return {"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"), "width": 128,
            "height": 128, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 1.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


# -- ComfyUI as a separate process that can be killed or frozen ------------------------------------


class ComfyProcess:
    """The fake ComfyUI run the way the real one is: its own process, its output in a log file."""

    def __init__(self, root: Path, scenario: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = root / "comfyui.log"
        self.log_file.write_text("\n".join(LOG_LINES).replace("PORT", str(self.port)) + "\n")
        with open(self.log_file, "a") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(FAKE_SCRIPT), "--port", str(self.port), "--root", str(root / "comfyui"),
                 "--scenario", scenario], stdout=sink, stderr=subprocess.STDOUT)
        wait_until(lambda: "system" in get_json(self.url + "/system_stats"), 20, "the fake ComfyUI process")

    def prompts(self) -> int:
        return get_json(self.url + "/__fake__/state")["prompts"]

    def signal_when_running(self, signum: int) -> threading.Thread:
        """From another thread: once a prompt is in, send the signal (the job is mid-run by then)."""

        def watch() -> None:
            wait_until(lambda: self.prompts() > 0, 20, "a prompt")
            time.sleep(0.3)
            os.kill(self.process.pid, signum)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.kill()
        self.process.wait(10)


@pytest.fixture
def comfy_process(tmp_path: Path) -> Iterator[Any]:
    started: list[ComfyProcess] = []

    def start(scenario: str = "hang") -> ComfyProcess:
        started.append(ComfyProcess(tmp_path, scenario))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def test_comfyui_killed_mid_job_reports_its_log_tail_and_asks_for_a_new_worker(comfy_process, tmp_path, inputs):
    comfy = comfy_process("hang")
    handler_module.reset_worker(base_settings(comfy.url, tmp_path, inputs, comfyui_log_file=comfy.log_file))
    killer = comfy.signal_when_running(signal.SIGKILL)
    started = time.monotonic()
    result = run(job(inputs))
    elapsed = time.monotonic() - started
    killer.join(5)
    assert comfy.process.wait(5) == -signal.SIGKILL
    assert elapsed < 12, f"took {elapsed:.1f} s"
    assert result["refresh_worker"] is True
    assert result["error"].startswith(f"ComfyUI at {comfy.url} is not answering")
    assert "Last lines of its log:" in result["error"]
    assert f"To see the GUI go to: http://127.0.0.1:{comfy.port}" in result["error"]
    assert result["error"].rstrip().endswith(LOG_LINES[-1].rstrip())
    assert list((tmp_path / "jobs").iterdir()) == []


def test_comfyui_frozen_mid_job_is_reported_within_a_bound(comfy_process, tmp_path, inputs):
    """SIGSTOP: the kernel still accepts connections, but no HTTP or websocket answer ever comes."""
    comfy = comfy_process("hang")
    handler_module.reset_worker(base_settings(comfy.url, tmp_path, inputs, comfyui_log_file=comfy.log_file))
    freezer = comfy.signal_when_running(signal.SIGSTOP)
    started = time.monotonic()
    result = run(job(inputs))
    elapsed = time.monotonic() - started
    freezer.join(5)
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert result["refresh_worker"] is True
    assert "is not answering" in result["error"] and "Last lines of its log:" in result["error"]


# -- /prompt refusing ------------------------------------------------------------------------------


def test_prompt_refused_without_node_errors_quotes_comfyuis_reason(fake_comfy, tmp_path, inputs):
    fake_comfy.scenario = "reject_400"
    handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs, http_timeout_s=5))
    result = run(job(inputs))
    assert result == {"error": "ComfyUI refused the workflow: Cannot execute because node FakeRefusal does not "
                               "exist. (Node ID '#0')."}
    fake_comfy.scenario = "success_vhs"
    assert "error" not in run(job(inputs)), "the worker keeps serving after a refusal"


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """Something that is not ComfyUI on its port: a proxy or a half-started server answering 503.

    ``healthy_stats``: /system_stats answers as a CPU-only ComfyUI does, so the 503 reaches POST /prompt.
    """

    healthy_stats = False

    def _answer(self) -> None:
        if self.healthy_stats and self.path.startswith("/system_stats"):
            self._send(200, "application/json", json.dumps({"system": {"comfyui_version": "0.3.64"},
                                                             "devices": [{"type": "cpu", "vram_total": 0}]}).encode())
            return
        self._send(503, "text/html", b"<html><body><h1>503 Service Unavailable</h1></body></html>")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 (http.server API)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("failing, error", [
    # the job's first call to ComfyUI is /system_stats, for the memory profile
    ("/system_stats", "ComfyUI answered GET /system_stats with HTTP 503."),
    ("/prompt", "ComfyUI refused the prompt with HTTP 503."),
])
def test_comfyui_answered_with_503_html(tmp_path, inputs, failing, error):
    unavailable = type("Unavailable", (_Unavailable,), {"healthy_stats": failing != "/system_stats"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), unavailable)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        handler_module.reset_worker(base_settings(f"http://127.0.0.1:{server.server_address[1]}", tmp_path, inputs))
        started = time.monotonic()
        result = run(job(inputs))
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()
        server.server_close()
    assert result == {"error": error}
    assert list((tmp_path / "jobs").iterdir()) == []


def test_nothing_listening_fails_fast_and_asks_for_a_new_worker(tmp_path, inputs):
    log = tmp_path / "comfyui.log"
    log.write_text("Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory.\n")
    url = f"http://127.0.0.1:{free_port()}"
    handler_module.reset_worker(base_settings(url, tmp_path, inputs, comfyui_log_file=log))
    started = time.monotonic()
    result = run(job(inputs))
    assert time.monotonic() - started < 5
    assert result["refresh_worker"] is True
    # the job's first call to ComfyUI is /system_stats, for the memory profile
    assert result["error"].startswith(f"ComfyUI at {url} is not answering (GET /system_stats failed: ConnectionError)")
    assert result["error"].endswith("torch.OutOfMemoryError: CUDA out of memory.")


def test_health_probe_with_comfyui_down_is_an_error_not_a_crash(tmp_path, inputs):
    handler_module.reset_worker(base_settings(f"http://127.0.0.1:{free_port()}", tmp_path, inputs))
    result = run({"test": True})
    assert "is not answering" in result["error"] and result["refresh_worker"] is True


# -- websocket never available ---------------------------------------------------------------------


def test_websocket_that_never_opens_still_completes_from_history(fake_comfy, tmp_path, inputs, monkeypatch):
    """A proxy that drops Upgrade requests: the worker follows the prompt by polling /history."""
    import websocket

    def refuse(*args: Any, **kwargs: Any):
        raise websocket.WebSocketBadStatusException("Handshake status 400 Bad Request", 400)

    monkeypatch.setattr(websocket, "create_connection", refuse)
    handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs, http_timeout_s=5))
    started = time.monotonic()
    result = run(job(inputs))
    assert "error" not in result, result["error"]
    assert result["frames"] == 25 and time.monotonic() - started < 10
    assert not any(path.startswith("/ws") for _, path in fake_comfy.requests)


# -- one websocket for many jobs -------------------------------------------------------------------


def test_jobs_in_a_row_share_one_websocket(fake_comfy, tmp_path, inputs):
    """The handshake is paid once; every job still gets its own progress and result."""
    handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs))
    results = [run(job(inputs), job_id=f"job-{n}") for n in range(3)]
    assert [r.get("frames") for r in results] == [25, 25, 25], results
    assert sum(path.startswith("/ws") for _, path in fake_comfy.requests) == 1
    wait_until(lambda: not fake_comfy.history, 5, "ComfyUI's history of the three prompts deleted")


def test_comfyui_restarted_between_jobs_the_next_job_still_completes(tmp_path, inputs):
    """The kept websocket died with the old ComfyUI; the job follows its prompt on a new one."""
    port = free_port()
    first = FakeComfyUI(tmp_path / "comfyui", port=port).start()
    handler_module.reset_worker(base_settings(first.url, tmp_path, inputs, comfyui_dir=tmp_path / "comfyui"))
    assert run(job(inputs)).get("frames") == 25
    first.stop()
    with FakeComfyUI(tmp_path / "comfyui", port=port) as second:
        started = time.monotonic()
        result = run(job(inputs))
        assert result.get("frames") == 25, result
        assert time.monotonic() - started < 10
        assert any(path.startswith("/ws") for _, path in second.requests)


# -- disks that fill up ----------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "4k") -> Iterator[bool]:
    """A real, nearly full filesystem at ``path`` (tmpfs); yields False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def simulate_enospc_after(monkeypatch: pytest.MonkeyPatch, module: str, name: str) -> None:
    """Where no tmpfs can be mounted: the copy writes part of the file, then the disk is full."""

    def copy_until_full(source, sink, length=0):
        sink.write(source.read(1024))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(f"{module}.{name}", copy_until_full)


def test_volume_full_while_writing_the_result(fake_comfy, tmp_path, inputs, monkeypatch):
    volume = tmp_path / "volume"
    with tiny_filesystem(volume) as real:
        if not real:
            simulate_enospc_after(monkeypatch, "infinitetalk_worker.delivery.shutil", "copyfileobj")
        settings = base_settings(fake_comfy.url, tmp_path, inputs, volume_root=volume, http_timeout_s=5,
                                 comfyui_dir=fake_comfy.root)
        handler_module.reset_worker(settings)
        result = run(job(inputs, network_volume=True))
        assert result == {"error": "Writing the video to the network volume failed: No space left on device."}
        assert list(volume.iterdir()) == [], "no partial file, under the final name or any other"
        assert list(settings.job_root.iterdir()) == []
        assert list(fake_comfy.root.rglob("*.mp4")) == [], "ComfyUI's copy is removed even when delivery fails"
        following = run(job(inputs))
        assert "error" not in following and probe_base64(following["video"], tmp_path)["frames"] == 25


def probe_base64(text: str, tmp_path: Path) -> dict:
    path = tmp_path / f"check-{time.monotonic_ns()}.mp4"
    path.write_bytes(base64.b64decode(text, validate=True))
    return probe(path)


def test_job_disk_full_while_decoding_an_input(fake_comfy, tmp_path, inputs):
    """The worker's own disk fills while a Base64 input is written: say so plainly, leave nothing."""
    job_root = tmp_path / "jobs"
    with tiny_filesystem(job_root, "64k") as real:
        if not real:
            pytest.skip("needs a tmpfs mount (root in a container that allows mount)")
        handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs, job_root=job_root,
                                                  http_timeout_s=5))
        audio = base64.b64encode((inputs / "long.wav").read_bytes()).decode()  # 96 kB into 64 kB
        result = run({"image_path": str(inputs / "face.png"), "wav_base64": audio})
        assert "No space left on device" in result["error"], result["error"]
        assert "disk space" in result["error"]
        assert list(job_root.iterdir()) == []
        assert fake_comfy.prompts == []


# -- cancellation while queued ---------------------------------------------------------------------


def test_cancelled_while_queued_behind_another_prompt_is_dequeued_and_never_runs(fake_comfy, tmp_path, inputs):
    fake_comfy.scenario = "hang"
    handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs, http_timeout_s=5))

    async def scenario() -> tuple[str, str]:
        blocker = asyncio.ensure_future(handler_module.handler({"id": "blocker", "input": job(inputs)}))
        await wait_async(lambda: len(fake_comfy.prompts) == 1)
        queued = asyncio.ensure_future(handler_module.handler({"id": "queued", "input": job(inputs, seed=7)}))
        await wait_async(lambda: len(fake_comfy.prompts) == 2)
        await asyncio.sleep(0.3)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        first, second = (p["prompt_id"] for p in fake_comfy.prompts)
        assert {"prompt_id": first} not in fake_comfy.interrupts, "the running prompt is someone else's"
        blocker.cancel()  # now the queue moves on: a prompt still queued would start running
        with pytest.raises(asyncio.CancelledError):
            await blocker
        await asyncio.sleep(0.5)
        return first, second

    first, second = asyncio.run(scenario())
    assert {"delete": [second]} in fake_comfy.queue_deletes
    assert second not in fake_comfy.history, "the cancelled prompt must never run"
    assert fake_comfy.history[first]["status"]["status_str"] == "error"  # the blocker was interrupted


def test_cancelled_prompt_that_starts_between_the_cancel_requests_is_still_stopped(fake_comfy, tmp_path, inputs):
    """ComfyUI ignores /interrupt for a prompt still queued and cannot dequeue a running one: the
    worker must dequeue first, or a prompt that starts in between runs on for a job nobody waits for."""
    fake_comfy.scenario = "slow"
    fake_comfy.start_queue_after_first_cancel_request = True
    handler_module.reset_worker(base_settings(fake_comfy.url, tmp_path, inputs, http_timeout_s=5))

    async def scenario() -> str:
        queued = asyncio.ensure_future(handler_module.handler({"id": "queued", "input": job(inputs)}))
        await wait_async(lambda: len(fake_comfy.prompts) == 1)
        await asyncio.sleep(0.3)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await asyncio.sleep(0.2)
        await wait_async(lambda: fake_comfy.idle, timeout=30)  # a prompt that started has finished
        return fake_comfy.prompts[0]["prompt_id"]

    prompt_id = asyncio.run(scenario())
    assert fake_comfy.start_queue_after_first_cancel_request is False, "the worker sent no cancel request"
    assert prompt_id not in fake_comfy.history, "the cancelled prompt must never run"


async def wait_async(condition, timeout: float = 10.0) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, "timed out"
        await asyncio.sleep(0.02)
