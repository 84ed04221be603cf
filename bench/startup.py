"""Start-up: from ComfyUI first answering to the worker taking its first job, through entrypoint.sh.

    python bench/startup.py [--comfyui fake|real] [--runs 5] [--comfyui-dir DIR --comfyui-python PY]

Each run starts ``entrypoint.sh --test_input '{"input": {"test": true}}'`` the way the image does
(ComfyUI, the attention-mode probe, the start-up checks against the smoke set, the handler), while
this process polls ComfyUI's ``/system_stats`` every 10 ms to time-stamp the moment it first answers.
The handler's output lines are time-stamped as they arrive: the SDK's "test_input set" line is the
moment the worker takes its job, "completed" the moment it has answered it. ComfyUI's own start
(loading its nodes) is not counted: the target (issue 14) is the worker's part.

``fake`` runs testsupport/fake_comfyui.py (the recorded /object_info of the pinned stack) as ComfyUI;
``real`` runs the ComfyUI in ``--comfyui-dir`` with ``--comfyui-python`` (CPU, no models needed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TARGET_S = 1.5
TAKEN = "test_input set, using test_input as job input"
DONE = "Job local_test completed"

# ComfyUI's main.py for the fake: execs testsupport/fake_comfyui.py on the port entrypoint.sh chose.
FAKE_MAIN = """
import os, sys
args = sys.argv[1:]
port = args[args.index("--port") + 1]
os.execv(sys.executable, [sys.executable, os.environ["BENCH_FAKE_COMFYUI"], "--port", port,
                          "--root", os.environ["BENCH_FAKE_ROOT"]])
"""


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Stamps:
    """Wall-clock moments of one start: ComfyUI's first answer and the handler's marker lines."""

    def __init__(self) -> None:
        self.answered: float | None = None
        self.lines: list[tuple[float, str]] = []

    def first(self, marker: str) -> float | None:
        return next((at for at, line in self.lines if marker in line), None)


def watch_comfyui(url: str, stamps: Stamps, stop: threading.Event) -> None:
    while not stop.is_set() and stamps.answered is None:
        if answers(url):
            stamps.answered = time.time()
        else:
            time.sleep(0.01)


def read_lines(stream, stamps: Stamps) -> None:
    for raw in iter(stream.readline, b""):
        stamps.lines.append((time.time(), raw.decode(errors="replace").rstrip()))


def environment(args: argparse.Namespace, work: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "COMFYUI_", "RUN_STARTUP"))}
    comfyui_dir, comfyui_python = args.comfyui_dir, args.comfyui_python
    if args.comfyui == "fake":
        comfyui_dir, comfyui_python = work / "ComfyUI", sys.executable
        comfyui_dir.mkdir(exist_ok=True)
        (comfyui_dir / "main.py").write_text(textwrap.dedent(FAKE_MAIN), encoding="utf-8")
        env.update(BENCH_FAKE_COMFYUI=str(common.REPO_ROOT / "testsupport" / "fake_comfyui.py"),
                   BENCH_FAKE_ROOT=str(work / "comfy-root"))
    folders = {name: work / name for name in ("temp", "output", "input", "user")}
    for folder in folders.values():
        folder.mkdir()
    scratch = " ".join(f"--{name}-directory {folder}" for name, folder in folders.items())
    env.update(
        COMFYUI_DIR=str(comfyui_dir), COMFYUI_PYTHON=str(comfyui_python), WORKER_PYTHON=sys.executable,
        COMFYUI_PORT=str(port), COMFYUI_LOG_FILE=str(work / "comfyui.log"), WORKFLOW_DIR=str(common.SMOKE),
        JOB_ROOT=str(work / "jobs"), RUN_STARTUP_CHECKS="true", WAN_ATTENTION_MODE="sdpa",
        COMFYUI_ARGS="" if args.comfyui == "fake" else f"--cpu --database-url sqlite:///:memory: {scratch}",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def one_start(args: argparse.Namespace) -> Stamps:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        port = common.free_port()
        stamps, stop = Stamps(), threading.Event()
        job = json.dumps({"input": {"test": True}})
        process = subprocess.Popen(
            ["bash", str(common.REPO_ROOT / "entrypoint.sh"), "--test_input", job],
            env=environment(args, work, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watcher = threading.Thread(target=watch_comfyui, args=(f"http://127.0.0.1:{port}", stamps, stop))
        reader = threading.Thread(target=read_lines, args=(process.stdout, stamps))
        watcher.start()
        reader.start()
        try:
            process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"run did not finish within {args.timeout} s", file=sys.stderr)
        finally:
            stop.set()
            with_group(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            watcher.join()
            reader.join(timeout=10)
        return stamps


def with_group(pid: int, sig: int) -> None:
    """ComfyUI outlives the handler's exit (exec replaced the entrypoint): stop the whole session."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", choices=("fake", "real"), default="fake")
    parser.add_argument("--comfyui-dir", type=Path)
    parser.add_argument("--comfyui-python", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.comfyui == "real" and not (args.comfyui_dir and args.comfyui_python):
        parser.error("--comfyui real needs --comfyui-dir and --comfyui-python")
    taken, done = [], []
    for index in range(args.runs):
        stamps = one_start(args)
        took, finished = stamps.first(TAKEN), stamps.first(DONE)
        if stamps.answered is None or took is None or finished is None:
            tail = "\n  ".join(line for _, line in stamps.lines[-15:])
            print(f"run {index + 1}: no first job; last lines:\n  {tail}")
            return 1
        taken.append(took - stamps.answered)
        done.append(finished - stamps.answered)
        print(f"run {index + 1}: job taken {taken[-1] * 1000:.0f} ms, answered {done[-1] * 1000:.0f} ms "
              "after ComfyUI first answered")
    print(f"ComfyUI answers -> first job taken: {common.stats(taken)}")
    print(f"ComfyUI answers -> first job answered: {common.stats(done)}")
    ok = common.verdict("first job taken", max(taken) <= TARGET_S, f"worst {max(taken):.2f} s, target {TARGET_S} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
