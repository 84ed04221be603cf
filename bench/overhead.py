"""Overhead: the handler's wall time minus ComfyUI's own execution time, warm and for a first job.

    python bench/overhead.py [--comfyui auto|real|fake] [--repeat 10]

Runs the CPU smoke set (all four workflows) through ``handler.handler``. ComfyUI's execution time
runs from the websocket's execution_start timestamp to the output node's ``executed`` message (what
the worker itself reads: the result's ``comfyui_execution_s``); the rest of the handler's wall time is
cut into the worker's steps (inputs and graph, submit, fetching the video, delivery, finish) and
ComfyUI's wait (queue, start and answer). The media I/O (fetching and probing inputs, taking the video
from ComfyUI's folder, Base64 encoding) is reported apart, and so is the worker process's CPU time
per job.

Targets (issue 14): warm, the worker's own steps at most 15 ms beyond the media I/O, and its CPU at
most 60 ms beyond it; a fresh process's first job under 0.5 s of overhead (everything is loaded at
start, not on the first job). Each fresh-process figure comes from a child process that starts the
way ``handler.main`` does, then runs one job. Prefers the real ComfyUI at COMFYUI_URL (default
http://127.0.0.1:8188); falls back to the fake.

A further table runs the i2v_single job with each way of delivering the result (Base64, the network
volume, S3 on a local moto_server when moto is installed): delivery is part of the overhead too.

Last, the client's view (``bench/api_overhead.py``, unless ``--api-jobs 0``): the worker behind the SDK's
local API, ``--api-jobs`` jobs paced ``--gap`` s apart and as many back to back, with the client-seen
overhead, the worker's steps, ComfyUI's wait and the worker's CPU, each as median and range. Targets:
median paced < 250 ms, back-to-back < 40 ms.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_overhead  # noqa: E402
import common  # noqa: E402

WARM_TARGET_S = 0.015
CPU_TARGET_S = 0.060
FIRST_JOB_TARGET_S = 0.5


class Probe:
    """Wraps the worker's ComfyUI client to time-stamp one job's phases (wall clock) and its CPU."""

    def __init__(self, worker: Any) -> None:
        self.marks: dict[str, float] = {}
        client = worker.client
        run_prompt, fetch_output = client.run_prompt, client.fetch_output

        def timed_run_prompt(*args: Any, **kwargs: Any):
            self.marks["submit"] = time.time()
            result = run_prompt(*args, **kwargs)
            self.marks["returned"] = time.time()
            self.marks["execution_s"] = result.execution_s or 0.0
            return result

        def timed_fetch(*args: Any, **kwargs: Any):
            started = time.perf_counter()
            how = fetch_output(*args, **kwargs)
            self.marks["fetch_s"] = time.perf_counter() - started
            return how

        client.run_prompt, client.fetch_output = timed_run_prompt, timed_fetch

    def measure(self, runner: common.JobRunner, job_input: dict) -> dict[str, float]:
        self.marks = {}
        cpu = time.process_time()  # every thread of this process: the worker's own CPU (ComfyUI is another)
        started = time.time()
        result = runner.run(job_input)
        ended = time.time()
        cpu = time.process_time() - cpu
        if "error" in result:
            raise SystemExit(f"job failed: {result['error']}")
        return {**phases(self.marks, result["timings"], started, ended), "cpu": cpu}


def phases(marks: dict[str, float], timings: dict[str, float], started: float, ended: float) -> dict[str, float]:
    """The job's wall time cut into the worker's steps and ComfyUI's (``comfy_wait``: queue and answer)."""
    wall = ended - started
    execution = marks["execution_s"]
    io = timings["inputs_s"] + marks["fetch_s"] + timings["delivery_s"]
    overhead = wall - execution
    return {
        "wall": wall, "execution": execution, "overhead": overhead, "io": io, "net": overhead - io,
        "inputs": timings["inputs_s"],
        "submit": marks["submit"] - started - timings["inputs_s"],
        "comfy_wait": marks["returned"] - marks["submit"] - execution,
        "fetch": marks["fetch_s"],
        "delivery": timings["delivery_s"],
        "finish": ended - marks["returned"] - marks["fetch_s"] - timings["delivery_s"],
    }


def first_job_child(args: argparse.Namespace) -> int:
    """A fresh process: start as handler.main does (minus RunPod's loop), then one job, then one more."""
    started = time.perf_counter()
    import runpod  # noqa: F401  (handler.main imports it before taking jobs)

    import handler
    from infinitetalk_worker.logs import setup_logging

    setup_logging("WARNING")
    settings = common.settings_for(args.url, Path(args.workdir), Path(args.inputs),
                                   Path(args.comfyui_dir) if args.comfyui_dir else None)
    handler.reset_worker(settings)
    startup_s = time.perf_counter() - started
    common.silence_progress()
    probe, runner = Probe(handler.get_worker()), common.JobRunner()
    job_input = common.jobs_for(Path(args.inputs))[args.child]
    first, second = probe.measure(runner, job_input), probe.measure(runner, job_input)
    runner.close()
    print(json.dumps({"startup_s": startup_s, "first": first, "second": second}))
    return 0


def fresh_process_figures(kind: str, url: str, workdir: Path, inputs: Path, comfyui_dir: Path | None) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--url", url, "--workdir", str(workdir),
               "--inputs", str(inputs), "--comfyui-dir", str(comfyui_dir or "")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"first-job child for {kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_figures(url: str, workdir: Path, inputs: Path, comfyui_dir: Path | None, repeat: int,
                 jobs: dict[str, dict] | None = None, **settings: Any) -> dict:
    import handler
    from infinitetalk_worker.logs import setup_logging

    setup_logging("WARNING")
    handler.reset_worker(common.settings_for(url, workdir, inputs, comfyui_dir, **settings))
    common.silence_progress()
    probe, runner = Probe(handler.get_worker()), common.JobRunner()
    figures: dict[str, list[dict[str, float]]] = {}
    jobs = jobs or common.jobs_for(inputs)
    for job_input in jobs.values():
        probe.measure(runner, job_input)  # warm this workflow's path once
    for _ in range(repeat):
        for kind, job_input in jobs.items():
            figures.setdefault(kind, []).append(probe.measure(runner, job_input))
    runner.close()
    for leftover in (workdir / "volume").glob("*.mp4"):
        leftover.unlink()
    return figures


def delivery_figures(url: str, workdir: Path, inputs: Path, comfyui_dir: Path | None, repeat: int) -> dict:
    """The i2v_single job delivered each way; S3 only where moto_server is installed."""
    (workdir / "volume").mkdir(exist_ok=True)
    job = common.jobs_for(inputs)["i2v_single"]
    with common.s3_server(workdir, "bench") as s3:
        jobs = {"base64": job, "volume": {**job, "output": "volume"}}
        settings = common.s3_settings(s3, "bench") if s3 else {}
        if s3:
            jobs["s3"] = {**job, "output": "s3"}
        return warm_figures(url, workdir, inputs, comfyui_dir, repeat, jobs, **settings)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def report(comfy_kind: str, url: str, warm: dict, fresh: dict, deliveries: dict, repeat: int) -> bool:
    print(f"\nComfyUI: {comfy_kind} at {url}; smoke set; {repeat} warm jobs per workflow\n")
    columns = ["wall", "execution", "overhead", "io", "net", "inputs", "submit", "comfy_wait", "fetch",
               "delivery", "finish", "cpu"]
    print("warm, median ms   " + " ".join(f"{c:>9}" for c in columns))
    for kind, runs in warm.items():
        print(f"{kind:<18}" + " ".join(f"{median([r[c] for r in runs]) * 1000:9.1f}" for c in columns))
    print("\nfresh process     startup " + " ".join(f"{c:>9}" for c in columns))
    for kind, figures in fresh.items():
        first = figures["first"]
        print(f"{kind:<18}{figures['startup_s'] * 1000:7.0f} " + " ".join(f"{first[c] * 1000:9.1f}" for c in columns))
    print("\ni2v_single by delivery, median ms " + " ".join(f"{c:>9}" for c in ("overhead", "io", "net", "delivery")))
    for kind, runs in deliveries.items():
        print(f"{kind:<33}" + " ".join(f"{median([r[c] for r in runs]) * 1000:9.1f}"
                                      for c in ("overhead", "io", "net", "delivery")))
    print("\n(wall: handler call; execution: ComfyUI's execution_start..the output node's executed message; "
          "overhead =\n wall - execution; io = inputs + fetch + delivery; net = overhead - io; inputs: fetching and "
          "probing the\n inputs and building the graph; submit: to POST /prompt; comfy_wait: POST /prompt to the "
          "output's message,\n minus execution (queue, start-up and answer); fetch: ComfyUI's video into the job "
          "folder;\n finish: metadata, clean-up; cpu: the worker process's CPU time for the job, all threads)\n")
    warm_net = max(median([r["net"] for r in runs]) for runs in warm.values())
    warm_io = max(median([r["io"] for r in runs]) for runs in warm.values())
    first_overhead = max(f["first"]["overhead"] for f in fresh.values())
    warm_cpu = max(median([r["cpu"] - r["io"] for r in runs]) for runs in warm.values())
    ok = common.verdict("warm overhead", warm_net <= WARM_TARGET_S,
                        f"worst median {warm_net * 1000:.1f} ms beyond {warm_io * 1000:.1f} ms of media I/O "
                        f"(target <= {WARM_TARGET_S * 1000:.0f} ms + I/O)")
    ok &= common.verdict("warm worker CPU", warm_cpu <= CPU_TARGET_S,
                         f"worst median {warm_cpu * 1000:.1f} ms of CPU beyond the media I/O's wall time "
                         f"(target <= {CPU_TARGET_S * 1000:.0f} ms)")
    ok &= common.verdict("first-job overhead", first_overhead < FIRST_JOB_TARGET_S,
                         f"worst {first_overhead * 1000:.0f} ms, I/O included "
                         f"(target < {FIRST_JOB_TARGET_S * 1000:.0f} ms)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", choices=("auto", "real", "fake"), default="auto")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--api-jobs", type=int, default=api_overhead.JOBS_PER_MODE,
                        help="jobs per mode through the local API (paced, back to back); 0 skips that section")
    parser.add_argument("--gap", type=float, default=api_overhead.PACED_GAP_S,
                        help="idle seconds before each paced API job")
    for hidden in ("--child", "--url", "--workdir", "--inputs", "--comfyui-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return first_job_child(args)
    if args.api_jobs < 0 or args.gap < 0:
        parser.error("--api-jobs and --gap must not be negative")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the subprocesses are stopped on the way out
    ok = worker_section(args)
    if args.api_jobs:
        api_args = argparse.Namespace(comfyui=args.comfyui, jobs=args.api_jobs, gap=args.gap, workflow="all",
                                      timeout=api_overhead.RUNSYNC_TIMEOUT_S)
        ok &= api_overhead.run_and_report(api_args)
    return 0 if ok else 1


def worker_section(args: argparse.Namespace) -> bool:
    """The handler in this process: warm jobs, fresh processes' first jobs, the delivery modes."""
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as temp:
        workdir = Path(temp)
        inputs = common.make_inputs(workdir / "inputs")
        with common.comfyui(args.comfyui, workdir) as (comfy_kind, url, comfyui_dir):
            fresh = {kind: fresh_process_figures(kind, url, workdir, inputs, comfyui_dir)
                     for kind in common.jobs_for(inputs)}
            warm = warm_figures(url, workdir, inputs, comfyui_dir, args.repeat)
            deliveries = delivery_figures(url, workdir, inputs, comfyui_dir, args.repeat)
            return report(comfy_kind, url, warm, fresh, deliveries, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
