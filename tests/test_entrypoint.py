"""entrypoint.sh run outside the image, with the overrides, against stand-in ComfyUIs and workers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO_ROOT / "entrypoint.sh"
ATTENTION_SCRIPT = REPO_ROOT / "scripts" / "attention_mode.py"
FAKE_COMFYUI = REPO_ROOT / "testsupport" / "fake_comfyui.py"
SMOKE_WORKFLOWS = REPO_ROOT / "workflows" / "smoke"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill -0; it has exited all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_until_dead(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------- stand-ins

SERVING_COMFYUI = """
import http.server, json, os, sys
args = sys.argv[1:]
record = os.environ["STANDIN_RECORD"]
with open(os.path.join(record, "comfyui.json"), "w") as f:
    json.dump({"argv": args, "pid": os.getpid(), "cwd": os.getcwd()}, f)
print("stand-in ComfyUI: loading nodes", flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"system": {}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

server = http.server.HTTPServer((args[args.index("--listen") + 1], int(args[args.index("--port") + 1])), Handler)
print("To see the GUI go to: http://127.0.0.1", flush=True)
server.serve_forever()
"""

DYING_COMFYUI = """
import sys
print("Traceback (most recent call last):\\nRuntimeError: CUDA driver initialization failed", flush=True)
sys.exit(3)
"""

# Dies while the handler is already waiting for it (after the entrypoint's exec).
LATE_DYING_COMFYUI = """
import sys, time
print("stand-in ComfyUI: loading nodes", flush=True)
time.sleep(4)
print("RuntimeError: out of memory while loading custom nodes", flush=True)
sys.exit(5)
"""

HANGING_COMFYUI = """
import json, os, sys, time
with open(os.path.join(os.environ["STANDIN_RECORD"], "comfyui.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid()}, f)
print("stand-in ComfyUI: loading forever", flush=True)
time.sleep(3600)
"""

# Execs the project's fake ComfyUI (testsupport/fake_comfyui.py) with the port entrypoint.sh chose.
FAKE_COMFYUI_LAUNCHER = """
import os, sys
args = sys.argv[1:]
port = args[args.index("--port") + 1]
fake, root = os.environ["STANDIN_FAKE_COMFYUI"], os.environ["STANDIN_FAKE_ROOT"]
os.execv(sys.executable, [sys.executable, fake, "--port", port, "--root", root])
"""

# Stands in for WORKER_PYTHON: records each call; the handler records its arguments, environment and
# working directory; anything else goes to the real Python.
STANDIN_WORKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$STANDIN_RECORD/worker_calls"
if [ "$1 $2 $3" = "-m infinitetalk_worker warm-models" ]; then exit 0; fi
if [ "$1" = "-u" ] && [ "${2##*/}" = "handler.py" ]; then
    shift 2
    printf '%s\\n' "$@" >"$STANDIN_RECORD/handler_args"
    env >"$STANDIN_RECORD/handler_env"
    pwd >"$STANDIN_RECORD/handler_cwd"
    exit 0
fi
exec "$STANDIN_REAL_PYTHON" "$@"
"""


class Run:
    """One entrypoint.sh run in its own session, so everything it started can be stopped afterwards."""

    def __init__(self, tmp_path: Path, comfyui_source: str, **env: str) -> None:
        self.record = tmp_path / "record"
        self.record.mkdir(exist_ok=True)
        self.comfyui_dir = tmp_path / "ComfyUI"
        self.comfyui_dir.mkdir(exist_ok=True)
        (self.comfyui_dir / "main.py").write_text(textwrap.dedent(comfyui_source), encoding="utf-8")
        worker = tmp_path / "standin-worker"
        worker.write_text(STANDIN_WORKER, encoding="utf-8")
        worker.chmod(0o755)
        self.port = _free_port()
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("RUNPOD_", "WAN_", "COMFYUI_", "RUN_STARTUP_CHECKS", "WARM_MODELS"))},
            "COMFYUI_DIR": str(self.comfyui_dir),
            "COMFYUI_PYTHON": sys.executable,
            "WORKER_PYTHON": str(worker),
            "COMFYUI_PORT": str(self.port),
            "COMFYUI_LOG_FILE": str(tmp_path / "comfyui.log"),
            "WORKFLOW_DIR": str(tmp_path),
            "STANDIN_RECORD": str(self.record),
            "STANDIN_REAL_PYTHON": sys.executable,
            "NO_PROXY": "127.0.0.1,localhost",
            **env,
        }
        self.output = tmp_path / "entrypoint.out"
        self.process: subprocess.Popen | None = None

    def start(self, *args: str) -> subprocess.Popen:
        # A file, not a pipe: ComfyUI keeps the output open after the handler (or the script) is gone.
        with self.output.open("w") as sink:
            self.process = subprocess.Popen(
                ["bash", str(ENTRYPOINT), *args], env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def run(self, *args: str, timeout_s: float = 60.0) -> tuple[int, str, float]:
        started = time.monotonic()
        status = self.start(*args).wait(timeout=timeout_s)
        return status, self.output.read_text(), time.monotonic() - started

    def comfyui(self) -> dict:
        """The stand-in ComfyUI's record (it may still be starting when a stand-in handler has returned)."""
        path = self.record / "comfyui.json"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.loads(path.read_text())

    def worker_calls(self) -> list[str]:
        path = self.record / "worker_calls"
        return path.read_text().splitlines() if path.exists() else []

    def handler_env(self) -> dict[str, str]:
        lines = (self.record / "handler_env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def stop(self) -> None:
        """End the stand-in ComfyUI and the handler: both live in the session this run started."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        record = self.record / "comfyui.json"
        if record.exists():
            pid = json.loads(record.read_text())["pid"]
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture
def runs():
    started: list[Run] = []

    def make(tmp_path: Path, comfyui_source: str, **env: str) -> Run:
        run = Run(tmp_path, comfyui_source, **env)
        started.append(run)
        return run

    yield make
    for run in started:
        run.stop()


# ---------------------------------------------------------------- the happy path


def test_the_handler_is_started_with_the_arguments_given_while_comfyui_loads(runs, tmp_path):
    run = runs(tmp_path, SERVING_COMFYUI, COMFYUI_ARGS="--cpu --preview-method none")

    status, output, _ = run.run("--rp_serve_api", "--rp_api_host", "0.0.0.0")

    assert status == 0, output
    comfyui = run.comfyui()
    assert comfyui["argv"] == ["--listen", "127.0.0.1", "--port", str(run.port), "--cpu", "--preview-method", "none"]
    assert Path(comfyui["cwd"]) == run.comfyui_dir
    assert (run.record / "handler_args").read_text().split() == ["--rp_serve_api", "--rp_api_host", "0.0.0.0"]
    assert Path((run.record / "handler_cwd").read_text().strip()) == REPO_ROOT
    env = run.handler_env()
    assert env["COMFYUI_URL"] == f"http://127.0.0.1:{run.port}"
    assert env["WORKFLOW_DIR"] == str(tmp_path)
    assert env["WAN_ATTENTION_MODE"] == "sdpa"  # no SageAttention in this Python
    assert int(env["COMFYUI_PID"]) == comfyui["pid"], "the handler waits for this ComfyUI"
    assert env["COMFYUI_START_TIMEOUT_S"] == "600"
    assert "stand-in ComfyUI: loading nodes" in Path(env["COMFYUI_LOG_FILE"]).read_text()
    calls = run.worker_calls()
    assert len(calls) == 1, "the handler is the only worker process: it runs the start-up checks itself"
    assert calls[0].startswith("-u ") and calls[0].endswith("handler.py --rp_serve_api --rp_api_host 0.0.0.0")
    assert env.get("RUN_STARTUP_CHECKS", "true") == "true", "the handler runs the checks"


def test_failing_startup_checks_end_the_handler_and_stop_comfyui(runs, tmp_path):
    # The real handler against a ComfyUI without WanVideoWrapper's nodes (it answers {} for /object_info).
    run = runs(tmp_path, SERVING_COMFYUI, WORKER_PYTHON=sys.executable, WORKFLOW_DIR=str(SMOKE_WORKFLOWS))

    status, output, _ = run.run("--rp_serve_api", "--rp_api_port", str(_free_port()))

    assert status == 1, output
    assert "Start-up checks failed" in output
    assert "--- Starting Serverless Worker" not in output, "no job may be taken"
    assert _wait_until_dead(run.comfyui()["pid"]), "ComfyUI must not outlive a failed start"


def test_startup_checks_can_be_skipped(runs, tmp_path):
    run = runs(tmp_path, SERVING_COMFYUI, RUN_STARTUP_CHECKS="false")

    status, output, _ = run.run()

    assert status == 0, output
    assert run.handler_env()["RUN_STARTUP_CHECKS"] == "false"


def test_models_are_warmed_only_when_asked(runs, tmp_path):
    run = runs(tmp_path, SERVING_COMFYUI, WARM_MODELS="true")

    status, output, _ = run.run()

    assert status == 0, output
    assert f"-m infinitetalk_worker warm-models --only-used-by {tmp_path}" in run.worker_calls()


# ---------------------------------------------------------------- failures at start


def test_a_comfyui_that_dies_at_start_ends_the_handler_at_once_with_its_status(runs, tmp_path):
    run = runs(tmp_path, DYING_COMFYUI, WORKER_PYTHON=sys.executable, COMFYUI_START_TIMEOUT_S="300")

    status, output, elapsed = run.run()

    assert status == 1, output
    assert "ComfyUI exited with status 3 before answering" in output
    assert "CUDA driver initialization failed" in output, "ComfyUI's own output reaches the container log"
    assert elapsed < 30, "a dead ComfyUI must not be waited for until the bound"
    assert "--- Starting Serverless Worker" not in output


def test_a_comfyui_that_dies_while_the_handler_waits_ends_it_with_comfyuis_status(runs, tmp_path):
    run = runs(tmp_path, LATE_DYING_COMFYUI, WORKER_PYTHON=sys.executable, COMFYUI_START_TIMEOUT_S="300")

    status, output, elapsed = run.run()

    assert status == 1, output
    assert output.index("starting the handler") < output.index("out of memory"), "died after the exec"
    assert "ComfyUI exited with status 5 before answering" in output
    assert elapsed < 30


def test_a_comfyui_that_never_answers_ends_the_handler_after_the_bound_and_is_stopped(runs, tmp_path):
    run = runs(tmp_path, HANGING_COMFYUI, WORKER_PYTHON=sys.executable, COMFYUI_START_TIMEOUT_S="3")

    status, output, elapsed = run.run()

    assert status == 1, output
    assert "did not answer" in output and "COMFYUI_START_TIMEOUT_S=3 s" in output
    assert 3 <= elapsed < 30
    assert _wait_until_dead(run.comfyui()["pid"]), "the hung ComfyUI is stopped"
    assert "--- Starting Serverless Worker" not in output


@pytest.mark.parametrize(
    "env, named",
    [
        ({"COMFYUI_DIR": "/nonexistent/ComfyUI"}, "COMFYUI_DIR"),
        ({"COMFYUI_PORT": "http"}, "COMFYUI_PORT"),
        ({"COMFYUI_START_TIMEOUT_S": "0"}, "COMFYUI_START_TIMEOUT_S"),
        ({"RUN_STARTUP_CHECKS": "maybe"}, "RUN_STARTUP_CHECKS"),
        ({"WORKER_PYTHON": "/nonexistent/python"}, "WORKER_PYTHON"),
        ({"WAN_ATTENTION_MODE": "fastest"}, "WAN_ATTENTION_MODE"),
    ],
)
def test_a_bad_setting_aborts_with_a_message_naming_it(runs, tmp_path, env, named):
    run = runs(tmp_path, SERVING_COMFYUI, **env)

    status, output, _ = run.run()

    assert status != 0
    assert named in output
    assert not (run.record / "handler_args").exists()


# ---------------------------------------------------------------- attention mode

FAKE_TORCH = """
import os
float16 = "float16"

class _Flag:
    def __init__(self, value): self.value = value
    def all(self): return self
    def item(self): return self.value

class Tensor:
    def __init__(self, finite=True): self.finite = finite
    def isfinite(self): return _Flag(self.finite)

class cuda:
    @staticmethod
    def is_available(): return os.environ.get("FAKE_CUDA", "1") == "1"
    @staticmethod
    def synchronize(): pass

def randn(*shape, dtype=None, device=None):
    return Tensor()
"""

FAKE_SAGEATTENTION = """
import os, time
behaviour = os.environ.get("FAKE_SAGE", "works")
if behaviour == "import-error":
    raise ImportError("libcuda.so.1: cannot open shared object file")

def sageattn(q, k, v, tensor_layout="HND", is_causal=False):
    if behaviour == "raises":
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
    if behaviour == "crashes":
        os.abort()
    if behaviour == "hangs":
        time.sleep(3600)
    if behaviour == "nan":
        return type(q)(finite=False)
    return q
"""


@pytest.fixture
def fake_gpu_stack(tmp_path, monkeypatch):
    """A torch and a sageattention that behave as FAKE_CUDA / FAKE_SAGE say, first on the path."""
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH, encoding="utf-8")
    (site / "sageattention").mkdir()
    (site / "sageattention" / "__init__.py").write_text(FAKE_SAGEATTENTION, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(site))
    return site


def _attention(requested: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("WAN_ATTENTION_MODE", None)
    if requested is not None:
        full_env["WAN_ATTENTION_MODE"] = requested
    return subprocess.run([sys.executable, str(ATTENTION_SCRIPT)], env=full_env, capture_output=True,
                          text=True, timeout=120)


def test_auto_picks_sageattn_when_it_imports_and_runs_on_the_gpu(fake_gpu_stack):
    result = _attention()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sageattn"


@pytest.mark.parametrize(
    "behaviour, cuda, reason",
    [
        ("import-error", "1", "libcuda.so.1"),
        ("raises", "1", "no kernel image"),
        ("crashes", "1", "failed"),
        ("nan", "1", "non-finite"),
        ("works", "0", "no CUDA device"),
    ],
)
def test_auto_falls_back_to_sdpa_when_sageattention_is_missing_or_fails(fake_gpu_stack, behaviour, cuda, reason):
    result = _attention("auto", FAKE_SAGE=behaviour, FAKE_CUDA=cuda)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sdpa"
    assert reason in result.stderr


def test_a_hanging_sageattention_test_falls_back_after_its_bound(fake_gpu_stack, monkeypatch):
    spec = importlib.util.spec_from_file_location("attention_mode", ATTENTION_SCRIPT)
    attention_mode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attention_mode)
    monkeypatch.setenv("FAKE_SAGE", "hangs")

    mode, reason = attention_mode.resolve("auto", timeout_s=2)

    assert mode == "sdpa" and "did not finish within 2 s" in reason


def test_an_explicit_sageattn_that_fails_falls_back_with_a_warning(fake_gpu_stack):
    result = _attention("sageattn", FAKE_SAGE="import-error")

    assert result.stdout.strip() == "sdpa"
    assert "WARNING" in result.stderr


def test_sdpa_is_used_without_testing_sageattention(fake_gpu_stack):
    result = _attention("SDPA", FAKE_SAGE="crashes")

    assert result.stdout.strip() == "sdpa"


def test_an_unknown_attention_mode_is_rejected(fake_gpu_stack):
    result = _attention("flash")

    assert result.returncode == 2
    assert "WAN_ATTENTION_MODE='flash' must be one of: auto, sdpa, sageattn" in result.stderr


def test_entrypoint_hands_the_decided_attention_mode_to_the_handler(runs, tmp_path, fake_gpu_stack):
    run = runs(tmp_path, SERVING_COMFYUI, PYTHONPATH=str(fake_gpu_stack), FAKE_SAGE="works")

    status, output, _ = run.run()

    assert status == 0, output
    assert run.handler_env()["WAN_ATTENTION_MODE"] == "sageattn"


# ---------------------------------------------------------------- the real worker behind the entrypoint


@pytest.mark.parametrize("startup_checks", ["false", "true"])
def test_the_workers_local_api_answers_a_readiness_probe(runs, tmp_path, startup_checks):
    run = runs(
        tmp_path, FAKE_COMFYUI_LAUNCHER,
        WORKER_PYTHON=sys.executable, WORKFLOW_DIR=str(SMOKE_WORKFLOWS), RUN_STARTUP_CHECKS=startup_checks,
        STANDIN_FAKE_COMFYUI=str(FAKE_COMFYUI), STANDIN_FAKE_ROOT=str(tmp_path / "comfy-root"),
        COMFYUI_START_TIMEOUT_S="60",
    )
    api_port = _free_port()
    process = run.start("--rp_serve_api", "--rp_api_port", str(api_port))

    answer = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            answer = requests.post(f"http://127.0.0.1:{api_port}/runsync", json={"input": {"test": True}}, timeout=10)
            break
        except requests.ConnectionError:
            time.sleep(0.5)
    if answer is None:
        run.stop()
        pytest.fail(f"the worker's API never answered; exit {process.returncode}\n{run.output.read_text()}")

    assert answer.status_code == 200
    body = answer.json()
    assert body.get("status") == "COMPLETED", body
    assert "error" not in (body.get("output") or {})


def _post_when_up(run: Run, process: subprocess.Popen, url: str, job: dict, deadline_s: float = 120) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return requests.post(url, json=job, timeout=30).json()
        except requests.ConnectionError:
            time.sleep(0.5)
    run.stop()
    pytest.fail(f"the worker's API never answered; exit {process.returncode}\n{run.output.read_text()}")


def test_a_worker_without_model_files_starts_answers_not_ready_and_fails_jobs_with_one_sentence(runs, tmp_path):
    run = runs(
        tmp_path, FAKE_COMFYUI_LAUNCHER,
        WORKER_PYTHON=sys.executable, WORKFLOW_DIR=str(REPO_ROOT / "workflows"),
        STANDIN_FAKE_COMFYUI=str(FAKE_COMFYUI), STANDIN_FAKE_ROOT=str(tmp_path / "comfy-root"),
        COMFYUI_START_TIMEOUT_S="60", JOB_ROOT=str(tmp_path / "jobs"),
    )
    api_port = _free_port()
    process = run.start("--rp_serve_api", "--rp_api_port", str(api_port))
    url = f"http://127.0.0.1:{api_port}/runsync"

    probe = _post_when_up(run, process, url, {"input": {"test": True}})
    job = _post_when_up(run, process, url, json.loads((REPO_ROOT / "examples" / "request_i2v_single.json").read_text()))

    assert probe["status"] == "COMPLETED", probe
    assert probe["output"]["ready"] is False
    manifest = json.loads((REPO_ROOT / "workflows" / "models.json").read_text())
    assert set(probe["output"]["missing_models"]) == {f"{row['folder']}/{row['file']}" for row in manifest
                                                      if row["folder"] != "kokoro"}  # ComfyUI's, not the worker's
    assert job["status"] == "FAILED", job
    error = job["error"] if isinstance(job["error"], str) else json.dumps(job["error"])
    assert "/runpod-volume/models" in error and "download-models" in error
    assert process.poll() is None, "the worker keeps serving"


def test_entrypoint_with_a_real_comfyui_serves_an_example_job(runs, tmp_path):
    """Opt-in: ENTRYPOINT_REAL_COMFYUI_DIR and ENTRYPOINT_REAL_COMFYUI_PYTHON name a real ComfyUI of the
    pinned stack (VideoHelperSuite at least; no models needed: the smoke workflows run on the CPU)."""
    comfyui_dir = os.environ.get("ENTRYPOINT_REAL_COMFYUI_DIR")
    comfyui_python = os.environ.get("ENTRYPOINT_REAL_COMFYUI_PYTHON")
    if not (comfyui_dir and comfyui_python):
        pytest.skip("set ENTRYPOINT_REAL_COMFYUI_DIR and ENTRYPOINT_REAL_COMFYUI_PYTHON to run against a real ComfyUI")
    scratch = {name: tmp_path / name for name in ("temp", "output", "input", "user")}
    for folder in scratch.values():
        folder.mkdir()
    # The ComfyUI tree is used in place: its temp, output, input, user folders and database are this test's.
    comfyui_args = " ".join(f"--{name}-directory {path}" for name, path in scratch.items())
    run = runs(tmp_path, SERVING_COMFYUI, COMFYUI_PYTHON=comfyui_python, WORKER_PYTHON=sys.executable,
               WORKFLOW_DIR=str(SMOKE_WORKFLOWS), JOB_ROOT=str(tmp_path / "jobs"), COMFYUI_START_TIMEOUT_S="300",
               COMFYUI_ARGS=f"--cpu --disable-auto-launch --database-url sqlite:///:memory: {comfyui_args}")
    run.env["COMFYUI_DIR"] = comfyui_dir
    api_port = _free_port()
    process = run.start("--rp_serve_api", "--rp_api_port", str(api_port))
    url = f"http://127.0.0.1:{api_port}/runsync"

    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, run.output.read_text()
        assert time.monotonic() < deadline, run.output.read_text()
        try:
            ready = requests.post(url, json={"input": {"test": True}}, timeout=30)
            break
        except requests.ConnectionError:
            time.sleep(1)
    job = json.loads((REPO_ROOT / "examples" / "request_i2v_single.json").read_text())
    result = requests.post(url, json=job, timeout=300).json()

    assert ready.json()["output"]["ready"] is True
    assert result["status"] == "COMPLETED", result
    assert len(result["output"]["video"]) > 1000
