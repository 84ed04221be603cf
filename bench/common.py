"""What the benchmarks share: a ComfyUI to run against, the worker, media, and process figures.

Benchmarks run the real handler in this process and ComfyUI in another one (the real ComfyUI at
COMFYUI_URL when it answers, otherwise the fake from testsupport/fake_comfyui.py started as a process),
so the figures taken from /proc/self are the worker's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from infinitetalk_worker.config import Settings  # noqa: E402

SMOKE = REPO_ROOT / "workflows" / "smoke"
REAL_COMFYUI_URL = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188").rstrip("/")
# ComfyUI's folder, when set, lets the worker remove its output files after each job (as in the image).
REAL_COMFYUI_DIR = Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None


# -- ComfyUI ---------------------------------------------------------------------------------------


def comfyui_answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=timeout) as response:
            return response.status == 200 and "system" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeComfyProcess:
    """testsupport/fake_comfyui.py as its own process; ``pad_bytes`` makes every result that much larger."""

    def __init__(self, root: Path, pad_bytes: int = 0) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root.parent / f"fake-comfyui-{self.port}.log", "w")
        command = [sys.executable, str(Path(__file__).with_name("padded_comfyui.py")), "--port", str(self.port),
                   "--root", str(root), "--pad-bytes", str(pad_bytes)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        ends = time.monotonic() + 30
        while not comfyui_answers(self.url, 1.0):
            if self.process.poll() is not None or time.monotonic() > ends:
                self.stop()
                raise RuntimeError(f"the fake ComfyUI did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@contextlib.contextmanager
def comfyui(choice: str, workdir: Path, pad_bytes: int = 0) -> Iterator[tuple[str, str, Path | None]]:
    """Yield (kind, url, comfyui_dir): 'real' when asked or when 'auto' finds one, else 'fake'."""
    if choice == "real" and not comfyui_answers(REAL_COMFYUI_URL):
        raise SystemExit(f"no ComfyUI answers at {REAL_COMFYUI_URL} (start one, or use --comfyui fake)")
    if choice in ("real", "auto") and pad_bytes == 0 and comfyui_answers(REAL_COMFYUI_URL):
        yield "real", REAL_COMFYUI_URL, REAL_COMFYUI_DIR if REAL_COMFYUI_DIR and REAL_COMFYUI_DIR.is_dir() else None
        return
    fake = FakeComfyProcess(workdir / "fake-comfyui", pad_bytes)
    try:
        yield "fake", fake.url, fake.root
    finally:
        fake.stop()


@contextlib.contextmanager
def s3_server(workdir: Path, bucket: str) -> Iterator[str]:
    """moto's S3 server as its own process, with ``bucket`` made; yields "" when moto is not installed."""
    executable = Path(sys.executable).with_name("moto_server")
    if not executable.exists():
        yield ""
        return
    port = free_port()
    log = open(workdir / "moto.log", "w")
    process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
        for _ in range(100):
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()


# -- the worker ------------------------------------------------------------------------------------


def s3_settings(endpoint: str, bucket: str) -> dict[str, str]:
    return {"bucket_endpoint_url": endpoint, "bucket_name": bucket, "bucket_access_key_id": "bench",
            "bucket_secret_access_key": "bench", "bucket_region": "us-east-1"}


def settings_for(url: str, workdir: Path, inputs: Path, comfyui_dir: Path | None, **changes: Any) -> Settings:
    settings = Settings(
        comfyui_url=url, workflow_dir=SMOKE, job_root=workdir / "jobs", volume_root=workdir / "volume",
        allowed_input_roots=[inputs], comfyui_dir=comfyui_dir, job_deadline_s=600, progress_interval_s=3.0,
        run_startup_checks=False,
    )
    return replace(settings, **changes)


def silence_progress() -> None:
    """RunPod's progress endpoint does not exist here; the reports are not what is measured."""
    import infinitetalk_worker.progress as progress

    progress._runpod_sender = lambda job, payload: None


def jobs_for(inputs: Path, size: int = 128) -> dict[str, dict[str, Any]]:
    """One request per workflow of the smoke set."""
    image = {"image_path": str(inputs / "portrait.png")}
    video = {"input_type": "video", "video_path": str(inputs / "clip.mp4")}
    voices = {"wav_path": str(inputs / "voice_1.wav")}
    multi = {"person_count": "multi", "wav_path_2": str(inputs / "voice_2.wav")}
    common = {"width": size, "height": size}
    return {
        "i2v_single": {**image, **voices, **common},
        "i2v_multi": {**image, **voices, **multi, **common},
        "v2v_single": {**video, **voices, **common},
        "v2v_multi": {**video, **voices, **multi, **common},
    }


def make_inputs(folder: Path) -> Path:
    from testsupport.media_factory import make_image, make_video, make_wav

    folder.mkdir(parents=True, exist_ok=True)
    make_image(folder / "portrait.png", (320, 240))
    make_wav(folder / "voice_1.wav", 1.0, rate=22050)
    make_wav(folder / "voice_2.wav", 1.4, rate=16000, frequency=330)
    make_video(folder / "clip.mp4", 1.0, (160, 120))
    return folder


class JobRunner:
    """Runs jobs through ``handler.handler`` on one long-lived event loop, as the RunPod SDK does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.count = 0

    def run(self, job_input: Any) -> dict[str, Any]:
        import handler

        self.count += 1
        return self.loop.run_until_complete(handler.handler({"id": f"bench-{self.count}", "input": job_input}))

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


# -- process figures -------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mb() -> float:
    return _status_kib("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kib("VmHWM") / 1024


def trim_heap() -> None:
    """Collect garbage and hand freed heap back to the OS, so a baseline counts live memory only."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> None:
    """Start a new high-water mark from the current RSS (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return _status_kib("Threads")


def verdict(label: str, passed: bool, detail: str) -> bool:
    print(f"{'PASS' if passed else 'FAIL'}  {label}: {detail}")
    return passed


def stats(values: list[float]) -> str:
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return f"median {median * 1000:7.1f} ms  min {ordered[0] * 1000:7.1f}  max {ordered[-1] * 1000:7.1f}"
