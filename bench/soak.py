"""Soak: many sequential jobs in one worker process; nothing may accumulate.

    python bench/soak.py [--jobs 200] [--comfyui auto|real|fake] [--tracemalloc]

Runs a repeating mix through ``handler.handler``: the four smoke workflows, Base64 and URL inputs
(from a loopback file server in its own process), a result to the network volume, a request with
unknown keys, the health probe, and three jobs that fail (invalid Base64, a URL answering 404, a
path outside the allowed roots). Prints, at the start, after the first four rounds of the mix (warm) and
at the end: job directories left, open file descriptors, threads and RSS of this process, plus
ComfyUI's history entries and output files (and RSS every 50 jobs). PASS when no job directory is
left, file descriptors and ComfyUI's history and output files do not grow from warm to end, threads
stay within the event loop's executor pool, and RSS grows less than 3 MB over the run's last two thirds
(from the "settled" row, at least after the warm rounds: the allocator's arenas still grow in steps for
several hundred jobs, about 1000 in a 3000-job run, and then stay; what bounded caches may still take;
a leak of 20 kB per job fails a 200-job run, one of 1.5 kB per job a 3000-job run).
``--tracemalloc`` also prints the source lines whose Python allocations grew most from warm to end
(where a leak is; memory that C libraries allocate themselves does not show there).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

RSS_TOLERANCE_MB = 3.0
WARM_ROUNDS = 4  # the first rounds of the mix warm allocator pools and one-time paths
ROUND_LENGTH = 12  # jobs in one round of mix()
CHECKPOINT_EVERY = 50
HISTORY_SETTLE_S = 2.0  # how long a history count waits for deletions still in flight
# asyncio.to_thread runs on the loop's default executor, which starts threads as needed up to this.
EXECUTOR_MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)


def mix(inputs: Path, files_url: str) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, job input, should succeed) for one round."""
    jobs = common.jobs_for(inputs)
    encoded = {name: base64.b64encode((inputs / name).read_bytes()).decode()
               for name in ("portrait.png", "voice_1.wav")}
    return [
        ("i2v_single", jobs["i2v_single"], True),
        ("i2v_multi", jobs["i2v_multi"], True),
        ("v2v_single", jobs["v2v_single"], True),
        ("v2v_multi", jobs["v2v_multi"], True),
        ("base64 inputs", {"image_base64": "data:image/png;base64," + encoded["portrait.png"],
                           "wav_base64": encoded["voice_1.wav"], "width": 128, "height": 128}, True),
        ("url inputs", {"image_url": f"{files_url}/portrait.png", "wav_url": f"{files_url}/voice_1.wav",
                        "width": 128, "height": 128}, True),
        ("volume output", {**jobs["i2v_single"], "network_volume": True}, True),
        ("unknown keys", {**jobs["i2v_single"], "imagepath": "x", "guidance": 7}, True),
        ("health probe", {"test": True}, True),
        ("invalid base64", {"image_base64": "%%%", "wav_path": str(inputs / "voice_1.wav")}, False),
        ("url 404", {"image_path": str(inputs / "portrait.png"), "wav_url": f"{files_url}/missing.wav"}, False),
        ("path outside roots", {"image_path": "/etc/passwd", "wav_path": str(inputs / "voice_1.wav")}, False),
    ]


def comfy_figures(url: str, comfyui_dir: Path | None) -> tuple[int, int]:
    """History entries once the last job's deletion had its chance: the worker deletes off the job's
    path, on a thread of its own, so right after a job its entry may still be there for a moment."""
    deadline = time.monotonic() + HISTORY_SETTLE_S
    while True:
        with urllib.request.urlopen(f"{url}/history", timeout=30) as response:
            history = len(json.loads(response.read()))
        if history == 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    outputs = sum(1 for p in (comfyui_dir / "output").rglob("*") if p.is_file()) if comfyui_dir else -1
    return history, outputs


def figures(settings: Any, url: str, comfyui_dir: Path | None) -> dict[str, float]:
    common.trim_heap()
    history, outputs = comfy_figures(url, comfyui_dir)
    job_dirs = len(list(settings.job_root.iterdir())) if settings.job_root.exists() else 0
    return {"job dirs": job_dirs, "open fds": common.open_fds(), "threads": common.thread_count(),
            "RSS MB": round(common.rss_mb(), 1), "ComfyUI history": history, "ComfyUI outputs": outputs}


def serve_files(folder: Path) -> tuple[subprocess.Popen, str]:
    port = common.free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/portrait.png", timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the loopback file server did not start")


def soak(total: int, url: str, workdir: Path, inputs: Path, comfyui_dir: Path | None, files_url: str,
         trace: bool = False) -> bool:
    import handler
    from infinitetalk_worker.logs import setup_logging

    setup_logging("ERROR")
    settings = common.settings_for(url, workdir, inputs, comfyui_dir, allow_private_urls=True)
    settings.volume_root.mkdir(exist_ok=True)
    settings.job_root.mkdir(exist_ok=True)
    handler.reset_worker(settings)
    common.silence_progress()
    runner = common.JobRunner()
    rounds = mix(inputs, files_url)
    assert len(rounds) == ROUND_LENGTH, "ROUND_LENGTH must be the length of mix()"
    snapshots = {"start": figures(settings, url, comfyui_dir)}
    unexpected: list[str] = []
    warm_at, settled_at = WARM_ROUNDS * len(rounds), settled_after(total)
    started = time.monotonic()
    for index in range(total):
        name, job_input, should_succeed = rounds[index % len(rounds)]
        result = runner.run(job_input)
        if ("error" not in result) != should_succeed:
            unexpected.append(f"job {index} ({name}): {result.get('error', 'succeeded')}")
        collect_volume_result(result, settings.volume_root)
        if index + 1 == warm_at:
            snapshots["warm"] = figures(settings, url, comfyui_dir)
            warm_trace = _start_trace() if trace else None
        if index + 1 == settled_at:  # the warm rounds' figures when the run is short
            snapshots["settled"] = snapshots["warm"] if settled_at == warm_at else figures(settings, url, comfyui_dir)
        if (index + 1) % CHECKPOINT_EVERY == 0:
            common.trim_heap()
            print(f"  after {index + 1:5d} jobs: RSS {common.rss_mb():6.1f} MB, open fds {common.open_fds()}, "
                  f"threads {common.thread_count()}", flush=True)
    elapsed = time.monotonic() - started
    snapshots["end"] = figures(settings, url, comfyui_dir)
    runner.close()
    if trace:
        print_growth(warm_trace, total - WARM_ROUNDS * len(rounds))
    return report(snapshots, total, elapsed, unexpected)


def settled_after(total: int) -> int:
    """The job after which RSS is the baseline: the first third of the run, at least the warm rounds."""
    return max(WARM_ROUNDS * ROUND_LENGTH, total // 3)


def _start_trace() -> tracemalloc.Snapshot:
    tracemalloc.start(8)
    return tracemalloc.take_snapshot()


def print_growth(warm: tracemalloc.Snapshot, jobs: int, lines: int = 8) -> None:
    """The source lines whose live Python allocations grew most since the warm-up, per job."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    growth = tracemalloc.take_snapshot().filter_traces(ignore).compare_to(warm.filter_traces(ignore), "lineno")
    print(f"Python allocations grown since warm ({jobs} jobs), largest first:")
    for stat in growth[:lines]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1024:9.1f} KiB ({stat.size_diff / max(jobs, 1):7.1f} B/job, "
              f"{stat.count_diff:+d} blocks)  {frame.filename}:{frame.lineno}")


def collect_volume_result(result: dict, volume: Path) -> None:
    """The caller takes its file off the volume; what stays there is the caller's business, not a leak."""
    if "video_path" in result:
        Path(result["video_path"]).unlink()


def report(snapshots: dict[str, dict[str, float]], total: int, elapsed: float, unexpected: list[str]) -> bool:
    names = list(snapshots["start"])
    print(f"\n{total} jobs in {elapsed:.1f} s ({elapsed / total * 1000:.0f} ms per job)\n")
    print(f"{'':<8}" + "".join(f"{n:>17}" for n in names))
    for label, values in snapshots.items():
        print(f"{label:<8}" + "".join(f"{values[n]:>17}" for n in names))
    print()
    warm, end = snapshots["warm"], snapshots["end"]
    check: Callable[[str, bool, str], bool] = common.verdict
    ok = check("outcomes", not unexpected, "every job succeeded or failed as intended" if not unexpected
               else "; ".join(unexpected[:5]))
    ok &= check("job directories", end["job dirs"] == 0, f"{end['job dirs']} left at the end")
    ok &= check("open file descriptors", end["open fds"] <= warm["open fds"],
                f"{warm['open fds']} -> {end['open fds']}")
    ok &= check("threads", end["threads"] <= 1 + EXECUTOR_MAX_THREADS,
                f"{warm['threads']} -> {end['threads']} (the event loop's executor may start up to "
                f"{EXECUTOR_MAX_THREADS} as jobs need them)")
    settled = snapshots["settled"]
    growth = end["RSS MB"] - settled["RSS MB"]
    ok &= check("RSS", growth < RSS_TOLERANCE_MB,
                f"{settled['RSS MB']} -> {end['RSS MB']} MB from job {settled_after(total)} to {total} "
                f"({growth:+.1f} MB; tolerance {RSS_TOLERANCE_MB} MB)")
    ok &= check("ComfyUI history", end["ComfyUI history"] <= warm["ComfyUI history"],
                f"{warm['ComfyUI history']} -> {end['ComfyUI history']} entries")
    if end["ComfyUI outputs"] >= 0:
        ok &= check("ComfyUI output files", end["ComfyUI outputs"] <= warm["ComfyUI outputs"],
                    f"{warm['ComfyUI outputs']} -> {end['ComfyUI outputs']}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="more than 48 (the first four rounds of the mix warm up)")
    parser.add_argument("--comfyui", choices=("auto", "real", "fake"), default="auto")
    parser.add_argument("--tracemalloc", action="store_true", help="print where Python allocations grew")
    args = parser.parse_args()
    minimum = WARM_ROUNDS * ROUND_LENGTH
    if args.jobs <= minimum:  # the leak checks compare the end with the state after the warm-up rounds
        parser.error(f"--jobs must be more than {minimum} ({WARM_ROUNDS} warm-up rounds of {ROUND_LENGTH} jobs)")
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as temp:
        workdir = Path(temp)
        inputs = common.make_inputs(workdir / "inputs")
        files, files_url = serve_files(inputs)
        try:
            with common.comfyui(args.comfyui, workdir) as (kind, url, comfyui_dir):
                print(f"ComfyUI: {kind} at {url}")
                return 0 if soak(args.jobs, url, workdir, inputs, comfyui_dir, files_url, args.tracemalloc) else 1
        finally:
            files.terminate()
            files.wait(10)


if __name__ == "__main__":
    sys.exit(main())
