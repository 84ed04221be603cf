"""API overhead: what a client of the local API waits for beyond ComfyUI's own execution time.

    python bench/api_overhead.py [--comfyui auto|real|fake] [--jobs 10] [--gap 10] [--workflow all]

Starts ``python handler.py --rp_serve_api`` (the RunPod SDK's local API server, the whole worker as
it runs: SDK, uvicorn, handler) as a subprocess pointed at a ComfyUI (the real one at COMFYUI_URL
when it answers, else the fake) with the CPU smoke set, and POSTs the smoke-set requests of
``bench/overhead.py`` to ``/runsync`` (cycling through the workflows), after one warm-up job per
workflow. Two modes, ``--jobs`` each: paced (each job posted ``--gap`` seconds after the previous
answer: a worker, and a ComfyUI, idle between jobs) and back-to-back (posted as soon as the answer
arrives).

Per job: the client's round trip; ComfyUI's execution time (the result's ``comfyui_execution_s``,
else ComfyUI's /history of the prompt); overhead = round trip - execution; the worker's steps from
the result's ``timings``; ComfyUI's wait (submit, queue, answer); what lies outside the handler
(SDK, HTTP, JSON); and the worker process's CPU time (/proc/<pid>/stat utime + stime, all threads).

Targets (issue 14): median client-seen overhead paced < 250 ms, back-to-back < 40 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from infinitetalk_worker.config import Settings, env_name  # noqa: E402

PACED_TARGET_S = 0.250
JOBS_PER_MODE, PACED_GAP_S, RUNSYNC_TIMEOUT_S = 10, 10.0, 300.0  # the defaults (bench/overhead.py's too)
BACK_TO_BACK_TARGET_S = 0.040
START_TIMEOUT_S = 90.0
HISTORY_TIMEOUT_S = 10.0
COLUMNS = ("round_trip", "execution", "overhead", "inputs", "fetch", "delivery", "worker", "comfy_wait",
           "outside", "cpu")
# Loopback only: a proxy from the environment must not sit between the client and the worker.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the worker behind its local API ---------------------------------------------------------------


@dataclass
class ApiWorker:
    """The handler subprocess serving the SDK's local API."""

    process: subprocess.Popen
    base: str
    log: Path


def worker_env(settings: Settings) -> dict[str, str]:
    """The bench's settings (common.settings_for) as the environment variables the worker reads."""
    env, defaults = dict(os.environ), Settings()
    for field in fields(settings):
        value = getattr(settings, field.name)
        if value == getattr(defaults, field.name) or value is None:
            continue
        if isinstance(value, list):
            value = ":".join(str(v) for v in value)
        env[env_name(field.name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def wait_ready(worker: ApiWorker) -> None:
    """The API answers only after the worker has loaded everything (handler.main then starts the SDK)."""
    ends = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError):
            with OPENER.open(f"{worker.base}/openapi.json", timeout=2) as response:
                if response.status == 200:
                    return
        if worker.process.poll() is not None or time.monotonic() > ends:
            tail = worker.log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the worker's API did not start; {worker.log}:\n{tail}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def api_worker(settings: Settings, workdir: Path) -> Iterator[ApiWorker]:
    """``handler.py --rp_serve_api`` on a free loopback port; always stopped on the way out."""
    port, log = common.free_port(), workdir / "handler.log"
    command = [sys.executable, str(common.REPO_ROOT / "handler.py"), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
               "--rp_api_port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=common.REPO_ROOT, env=worker_env(settings), stdout=out,
                                   stderr=subprocess.STDOUT)
    worker = ApiWorker(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(worker)
        yield worker
    finally:
        stop(process)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds; clock-tick resolution."""
    with open(f"/proc/{pid}/stat") as stat:
        after_name = stat.read().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


# -- one job ---------------------------------------------------------------------------------------


def post_job(worker: ApiWorker, job_input: dict[str, Any], timeout: float) -> tuple[float, dict[str, Any]]:
    """POST /runsync as a client does (a new connection per job); (round trip, answer)."""
    body = json.dumps({"input": job_input}).encode()
    request = urllib.request.Request(f"{worker.base}/runsync", body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with OPENER.open(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - started, answer


def execution_from_history(comfy_url: str, job_id: str) -> float | None:
    """ComfyUI's execution_start..execution_success for the job's prompt, found by the job id that the
    worker puts into its output file name; None when the worker already removed the entry."""
    safe = re.sub(r"[^A-Za-z0-9-]", "", job_id)[:40]  # as pipeline.output_name shortens it
    with contextlib.suppress(OSError, ValueError):
        with OPENER.open(f"{comfy_url}/history", timeout=HISTORY_TIMEOUT_S) as response:
            history = json.loads(response.read())
        for entry in history.values():
            if safe and safe in json.dumps(entry.get("outputs", {})):
                messages = dict((entry.get("status") or {}).get("messages", []))
                start, end = messages.get("execution_start", {}), messages.get("execution_success", {})
                if "timestamp" in start and "timestamp" in end:
                    return (end["timestamp"] - start["timestamp"]) / 1000.0
    return None


def figures(round_trip: float, timings: dict[str, float], execution: float | None, cpu: float) -> dict:
    """The round trip cut up: overhead = worker + comfy_wait + outside; None where a figure is missing."""
    inputs, comfy, delivery, total = (timings.get(k) for k in ("inputs_s", "comfyui_s", "delivery_s", "total_s"))
    have_steps = None not in (inputs, comfy, delivery, total)
    return {
        "round_trip": round_trip, "execution": execution, "cpu": cpu,
        "overhead": round_trip - execution if execution is not None else None,
        "inputs": inputs, "delivery": delivery,
        "fetch": total - inputs - comfy - delivery if have_steps else None,
        "worker": total - comfy if have_steps else None,
        "comfy_wait": comfy - execution if comfy is not None and execution is not None else None,
        "outside": round_trip - total if total is not None else None,
    }


def measure(worker: ApiWorker, comfy_url: str, job_input: dict[str, Any], timeout: float) -> dict:
    """One job through the API, with the worker process's CPU time around it."""
    cpu = cpu_seconds(worker.process.pid)
    round_trip, answer = post_job(worker, job_input, timeout)
    cpu = cpu_seconds(worker.process.pid) - cpu
    if answer.get("status") != "COMPLETED":
        raise SystemExit(f"job {answer.get('id')} {answer.get('status')}: {str(answer.get('error'))[:2000]}")
    timings = (answer.get("output") or {}).get("timings") or {}
    execution = timings.get("comfyui_execution_s")
    if execution is None:
        execution = execution_from_history(comfy_url, str(answer.get("id", "")))
    return figures(round_trip, timings, execution, cpu)


# -- the two modes ---------------------------------------------------------------------------------


def run_mode(worker: ApiWorker, comfy_url: str, jobs: list[tuple[str, dict]], count: int, gap: float,
             timeout: float) -> list[dict]:
    """``count`` jobs, each posted at least ``gap`` s after the previous answer (0: back to back), so a paced
    worker and ComfyUI really sit idle that long (ComfyUI's own clean-up after 10 s idle shows then)."""
    runs = []
    for index in range(count):
        if index:
            time.sleep(gap)
        kind, job_input = jobs[index % len(jobs)]
        runs.append({"kind": kind, **measure(worker, comfy_url, job_input, timeout)})
    return runs


def ms(value: float | None) -> str:
    return f"{value * 1000:9.1f}" if value is not None else f"{'n/a':>9}"


def summary(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    missing = f"  ({len(values) - len(present)} missing)" if present and len(present) < len(values) else ""
    return common.stats(present) + missing if present else "n/a (not in the result)"


def print_mode(title: str, runs: list[dict]) -> None:
    print(f"\n{title}\njob  workflow     " + " ".join(f"{c:>9}" for c in COLUMNS) + "   (ms)")
    for number, run in enumerate(runs, 1):
        print(f"{number:<4} {run['kind']:<12} " + " ".join(ms(run[c]) for c in COLUMNS))
    for column in COLUMNS:
        print(f"  {column:<11} {summary([run[column] for run in runs])}")
    kinds = dict.fromkeys(run["kind"] for run in runs)
    if len(kinds) > 1:  # the two-speaker workflows carry more media I/O than the others
        for kind in kinds:
            print(f"  overhead of {kind:<11} {summary([r['overhead'] for r in runs if r['kind'] == kind])}")


def verdict(label: str, runs: list[dict], target: float) -> bool:
    values = [run["overhead"] for run in runs if run["overhead"] is not None]
    if len(values) < len(runs) or not values:
        return common.verdict(label, False, "ComfyUI's execution time is missing for some jobs (see n/a)")
    median = sorted(values)[len(values) // 2]
    return common.verdict(label, median < target, f"median {median * 1000:.1f} ms, max {max(values) * 1000:.1f} "
                                                  f"(target < {target * 1000:.0f} ms)")


def print_legend() -> None:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    print("\n(round_trip: POST /runsync to its answer, as the client sees it; execution: the result's "
          "comfyui_execution_s,\n execution_start to the output's message; overhead = round_trip - execution = "
          "worker + comfy_wait + outside;\n inputs, fetch (ComfyUI's video and its metadata), delivery: the "
          "worker's steps from the result's timings\n (rounded to 1 ms), worker = their sum; comfy_wait: "
          "POST /prompt to ComfyUI's answer, minus execution;\n outside: the SDK, HTTP and JSON around the "
          f"handler; cpu: the worker process's utime + stime, all threads,\n in clock ticks of {tick_ms:.0f} ms)\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", choices=("auto", "real", "fake"), default="auto")
    parser.add_argument("--jobs", type=int, default=JOBS_PER_MODE, help="jobs per mode (at least 1)")
    parser.add_argument("--gap", type=float, default=PACED_GAP_S, help="idle seconds before each paced job")
    parser.add_argument("--workflow", default="all", help="one smoke workflow (e.g. i2v_single), or all, cycled")
    parser.add_argument("--timeout", type=float, default=RUNSYNC_TIMEOUT_S, help="seconds one /runsync may take")
    args = parser.parse_args()
    if args.jobs < 1 or args.gap < 0 or args.timeout <= 0:
        parser.error("--jobs must be at least 1, --gap not negative, --timeout positive")
    return args


def pick_jobs(inputs: Path, workflow: str) -> list[tuple[str, dict]]:
    """bench/overhead.py's smoke-set requests: all four, or the one named."""
    requests = common.jobs_for(inputs)
    if workflow != "all" and workflow not in requests:
        raise SystemExit(f"--workflow must be all or one of {', '.join(requests)}")
    return [(kind, job) for kind, job in requests.items() if workflow in ("all", kind)]


def run_all(args: argparse.Namespace, workdir: Path) -> tuple[str, str, list[dict], list[dict], int]:
    """ComfyUI, the worker behind its API, the warm-up, both modes; every process stopped on the way out."""
    inputs = common.make_inputs(workdir / "inputs")
    jobs = pick_jobs(inputs, args.workflow)
    with common.comfyui(args.comfyui, workdir) as (comfy_kind, url, comfyui_dir):
        with api_worker(common.settings_for(url, workdir, inputs, comfyui_dir), workdir) as worker:
            for _, job_input in jobs:  # warm each workflow's path once, as bench/overhead.py does
                measure(worker, url, job_input, args.timeout)
            paced = run_mode(worker, url, jobs, args.jobs, args.gap, args.timeout)
            back_to_back = run_mode(worker, url, jobs, args.jobs, 0.0, args.timeout)
    return comfy_kind, url, paced, back_to_back, len(jobs)


def report(args: argparse.Namespace, comfy_kind: str, url: str, paced: list[dict], back_to_back: list[dict],
           warm_ups: int) -> bool:
    """Both modes' tables and the two verdicts (bench/overhead.py prints this section too)."""
    print(f"\nComfyUI: {comfy_kind} at {url}; the worker behind `handler.py --rp_serve_api`; smoke set "
          f"({args.workflow}); {args.jobs} jobs per mode after {warm_ups} warm-up jobs")
    print_mode(f"paced (each job posted {args.gap:g} s after the previous answer)", paced)
    print_mode("back-to-back", back_to_back)
    print_legend()
    ok = verdict("paced client-seen overhead", paced, PACED_TARGET_S)
    ok &= verdict("back-to-back client-seen overhead", back_to_back, BACK_TO_BACK_TARGET_S)
    return ok


def run_and_report(args: argparse.Namespace) -> bool:
    """The whole benchmark in a temporary folder of its own."""
    with tempfile.TemporaryDirectory(prefix="bench-api-overhead-") as temp:
        comfy_kind, url, paced, back_to_back, warm_ups = run_all(args, Path(temp))
    return report(args, comfy_kind, url, paced, back_to_back, warm_ups)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the subprocesses are stopped on the way out
    return 0 if run_and_report(args) else 1


if __name__ == "__main__":
    sys.exit(main())
