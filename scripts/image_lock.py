#!/usr/bin/env python3
"""The image's one lock: ComfyUI's, every pinned node's and the worker's requirements resolved together.

    python scripts/image_lock.py compile --comfyui-dir DIR   # regenerate the lock (needs uv)
    python scripts/image_lock.py check-sources --comfyui-dir DIR   # the build: sources match the lock's input
    python scripts/image_lock.py pip-check   # the build: pip check, allowing only the GPU substitutions

``compile`` reads ``DIR/requirements.txt`` and ``DIR/custom_nodes/*/requirements.txt`` (a ComfyUI checkout
with the nodes at the commits of the Dockerfile), writes them with the known-good pins below into
``requirements-image.in``, and resolves that with ``uv pip compile`` for the image's Python and platform
into ``requirements-image.lock`` (every package pinned, with hashes), plus ``requirements-download.lock``
(the downloader's few packages at the same versions, for the image's model stage).

Releases are cut off at the date of the node commits (``CUTOFF``), so numpy, opencv, huggingface_hub,
librosa, protobuf and the rest stay what the nodes were written against; only the packages in
``WORKER_SIDE`` (the RunPod SDK 1.12.0 the worker pins and what it requires, text to speech, and PyAV)
may be newer.

torch 2.8.0's manylinux wheel on PyPI is the CUDA 12.8 build (it requires nvidia-cuda-runtime-cu12
12.8.x), so the lock takes torch from PyPI with PyPI's hashes and the image needs no second index.

The worker's requirements.txt names the CPU onnxruntime (machines without a GPU, CI); the image gets the
GPU build in its place (``GPU_SUBSTITUTES``): another distribution of the same ``onnxruntime`` module,
which kokoro-onnx does not know, so the lock drops ``onnxruntime`` (a uv override), the image installs
the lock with ``--no-deps`` (the lock is the whole resolution) and ``pip-check`` accepts exactly the
"requires onnxruntime, which is not installed" lines of that substitution.

This script uses only the standard library, so the build can run ``check-sources`` before anything
is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INPUT = REPO_ROOT / "requirements-image.in"
LOCK = REPO_ROOT / "requirements-image.lock"
DOWNLOAD_LOCK = REPO_ROOT / "requirements-download.lock"
WORKER_REQUIREMENTS = REPO_ROOT / "requirements.txt"

PYTHON_VERSION = "3.12"
PLATFORM = "x86_64-manylinux_2_28"
INDEX_URL = "https://pypi.org/simple"
UV_VERSION = "0.13.9"

# The pinned node commits are of October 2025.
CUTOFF = "2025-10-31"
# The date the worker's side was last resolved; raise it (and regenerate) to move the worker's side on.
WORKER_SIDE_CUTOFF = "2026-12-01"
WORKER_SIDE = (
    "runpod", "aiohttp", "aiohttp-retry", "backoff", "boto3", "botocore", "s3transfer", "click", "colorama",
    "cryptography", "fastapi", "fastapi-cli", "paramiko", "prettytable", "psutil", "py-cpuinfo", "inquirerpy",
    "requests", "urllib3", "tomli", "tomlkit", "tqdm", "tqdm-loggable", "watchdog", "websocket-client",
    "pydantic", "pydantic-core", "typing-extensions", "typing-inspection", "brotli", "wcwidth",
    # Text to speech (infinitetalk_worker/speech.py): kokoro-onnx 0.6.1, the phonemizer it requires, and an
    # onnxruntime that runs the int8 Kokoro export without NaNs (1.23.2, of the node cut-off, does not).
    "kokoro-onnx", "phonemizer", "onnxruntime", "onnxruntime-gpu",
    # PyAV 17.1: 16.x leaks on every AudioResampler.resample call (PyAV-Org/PyAV#2282), about 1 KB per job
    # in the worker's soundtrack resampling. ComfyUI asks for av>=14.2.0; the nodes run FFmpeg's CLI.
    "av",
)

# {the worker's CPU distribution: the image's GPU one}. onnxruntime-gpu 1.26.0 is the last release built
# for CUDA 12 and cuDNN 9 (1.27 and later need CUDA 13; the image's torch is the CUDA 12.8 build); its
# extras resolve to the nvidia-* wheels torch already brings, which onnxruntime.preload_dlls() loads.
GPU_SUBSTITUTES = {"onnxruntime": "onnxruntime-gpu[cuda,cudnn]==1.26.0"}

# Known-good: with transformers 5.x WanVideoWrapper 6b286552's wav2vec2 returns hidden_states=None and
# every audio embedding fails; this set imports and runs (scripts/check_audio_embeddings.py proves it
# at build time). torch/torchvision/torchaudio: the CUDA 12.8 build on PyPI. sageattention: optional
# at run time (WAN_ATTENTION_MODE=auto tests it on the GPU), but installed from the lock like the rest.
KNOWN_GOOD = (
    "torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0",
    "transformers==4.57.1", "diffusers==0.35.2", "peft==0.17.1", "accelerate==1.10.1",
    "sageattention==1.0.6",
)
# The model stage of the image needs only these (infinitetalk_worker/model_download.py).
DOWNLOAD_PACKAGES = ("requests", "tqdm")

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 name, so 'PyYAML', 'pyyaml' and 'py_yaml' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements.txt, comments and blank lines dropped."""
    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def source_sections(comfyui_dir: Path) -> dict[str, list[str]]:
    """{label: requirement lines} for ComfyUI and each custom node that has a requirements.txt."""
    main = comfyui_dir / "requirements.txt"
    if not main.is_file():
        raise SystemExit(f"{comfyui_dir} has no requirements.txt: give a ComfyUI checkout as --comfyui-dir.")
    sections = {"ComfyUI": requirement_lines(main.read_text(encoding="utf-8"))}
    for path in sorted((comfyui_dir / "custom_nodes").glob("*/requirements.txt")):
        sections[path.parent.name] = requirement_lines(path.read_text(encoding="utf-8"))
    return sections


def render_input(sections: dict[str, list[str]]) -> str:
    out = [
        "# The input of requirements-image.lock, written by `python scripts/image_lock.py compile`; do not edit.",
        "# Known-good pins (scripts/image_lock.py, KNOWN_GOOD):",
        *KNOWN_GOOD,
        "# The worker's own requirements:",
        "-r requirements.txt",
        "# GPU builds in place of the worker's CPU ones (scripts/image_lock.py, GPU_SUBSTITUTES):",
        *GPU_SUBSTITUTES.values(),
    ]
    for label, lines in sections.items():
        out += [f"# from {label}/requirements.txt:", *lines]
    return "\n".join(out) + "\n"


def recorded_sections(text: str) -> dict[str, list[str]]:
    """The per-source sections of requirements-image.in, as ``render_input`` wrote them."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if match := re.match(r"^# from (.+)/requirements\.txt:$", line):
            current = sections.setdefault(match.group(1), [])
        elif line.startswith("#"):
            current = None
        elif current is not None and line.strip():
            current.append(line.strip())
    return sections


def read_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of a lock or requirements file's ``name==version`` lines."""
    pins = {}
    for line in text.splitlines():
        if match := PIN.match(line.strip()):
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def render_overrides() -> str:
    """uv overrides that take the CPU distributions out of the resolution (a marker that is never true)."""
    return "".join(f"{name} ; sys_platform == 'never'\n" for name in GPU_SUBSTITUTES)


def uv_command(uv: str, source: Path, output: Path, overrides: Path | None = None) -> list[str]:
    exempt = [arg for name in WORKER_SIDE for arg in ("--exclude-newer-package", f"{name}={WORKER_SIDE_CUTOFF}")]
    override = ["--overrides", str(overrides.relative_to(REPO_ROOT))] if overrides else []
    return [
        uv, "pip", "compile", "--no-config", "--quiet", "--generate-hashes", "--emit-index-url",
        "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
        "--index-url", INDEX_URL, "--exclude-newer", CUTOFF, *exempt, *override,
        "--custom-compile-command", "python scripts/image_lock.py compile --comfyui-dir COMFYUI_DIR",
        str(source.relative_to(REPO_ROOT)), "-o", str(output.relative_to(REPO_ROOT)),
    ]


def compile_lock(comfyui_dir: Path, uv: str) -> None:
    """Write the input, then resolve it into the image lock and the downloader's lock."""
    INPUT.write_text(render_input(source_sections(comfyui_dir)), encoding="utf-8")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    overrides = REPO_ROOT / "build" / "requirements-image.overrides"
    overrides.parent.mkdir(exist_ok=True)
    overrides.write_text(render_overrides(), encoding="utf-8")
    subprocess.run(uv_command(uv, INPUT, LOCK, overrides), cwd=REPO_ROOT, env=env, check=True)
    pins = read_pins(LOCK.read_text(encoding="utf-8"))
    download_input = REPO_ROOT / "build" / "requirements-download.in"
    download_input.write_text("".join(f"{name}=={pins[name]}\n" for name in DOWNLOAD_PACKAGES), encoding="utf-8")
    subprocess.run(uv_command(uv, download_input, DOWNLOAD_LOCK), cwd=REPO_ROOT, env=env, check=True)
    print(f"wrote {INPUT.name}, {LOCK.name} ({len(pins)} packages) and {DOWNLOAD_LOCK.name}")


def source_mismatches(comfyui_dir: Path, recorded_text: str) -> list[str]:
    """How the requirements in ``comfyui_dir`` differ from those the lock was compiled from."""
    found, recorded = source_sections(comfyui_dir), recorded_sections(recorded_text)
    problems = []
    for label in sorted(found.keys() | recorded.keys()):
        if label not in recorded:
            problems.append(f"{label}/requirements.txt is not in requirements-image.in (a new node?)")
        elif label not in found:
            problems.append(f"{label}/requirements.txt is in requirements-image.in but not in {comfyui_dir}")
        elif found[label] != recorded[label]:
            added = sorted(set(found[label]) - set(recorded[label]))
            removed = sorted(set(recorded[label]) - set(found[label]))
            problems.append(f"{label}/requirements.txt changed: added {added}, removed {removed}")
    return problems


PIP_CHECK_MISSING = re.compile(r"^(\S+) \S+ requires ([A-Za-z0-9][A-Za-z0-9._-]*), which is not installed\.$")


def unexpected_pip_check_lines(output: str, installed: set[str]) -> list[str]:
    """The lines of ``pip check`` other than "requires <CPU build>" where its GPU substitute is installed."""
    substitutes = {canonical(name): canonical(NAME.match(gpu).group(1)) for name, gpu in GPU_SUBSTITUTES.items()}
    unexpected = []
    for line in filter(None, (raw.strip() for raw in output.splitlines())):
        match = PIP_CHECK_MISSING.match(line)
        missing = canonical(match.group(2)) if match else None
        if substitutes.get(missing) not in installed:
            unexpected.append(line)
    return unexpected


def pip_check(python: str) -> int:
    """``pip check`` of the installed set, with the GPU substitutions of the lock allowed and said."""
    result = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True)
    installed = {canonical(line.split("==")[0]) for line in listed.stdout.splitlines() if "==" in line}
    problems = unexpected_pip_check_lines(result.stdout + result.stderr, installed)
    for problem in problems:
        sys.stderr.write(f"error: pip check: {problem}\n")
    if not problems:
        allowed = ", ".join(f"{gpu} for {cpu}" for cpu, gpu in GPU_SUBSTITUTES.items())
        print(f"pip check: no broken requirements (installed in place of the CPU builds: {allowed}).")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="regenerate requirements-image.in and the locks")
    compile_parser.add_argument("--comfyui-dir", type=Path, required=True)
    compile_parser.add_argument("--uv", default=shutil.which("uv") or "uv", help=f"uv {UV_VERSION} (pip install uv)")
    check_parser = commands.add_parser(
        "check-sources", help="fail when the sources' requirements are not the lock's input")
    check_parser.add_argument("--comfyui-dir", type=Path, required=True)
    check_parser.add_argument("--input", type=Path, default=INPUT)
    pip_check_parser = commands.add_parser(
        "pip-check", help="pip check of an environment installed from the lock (GPU substitutions allowed)")
    pip_check_parser.add_argument("--python", default=sys.executable, help="that environment's Python")
    args = parser.parse_args(argv)

    if args.command == "compile":
        compile_lock(args.comfyui_dir.resolve(), args.uv)
        return 0
    if args.command == "pip-check":
        return pip_check(args.python)
    problems = source_mismatches(args.comfyui_dir, args.input.read_text(encoding="utf-8"))
    for problem in problems:
        sys.stderr.write(f"error: {problem}; regenerate the lock (README, 'The image lock').\n")
    if not problems:
        print(f"The requirements in {args.comfyui_dir} are those requirements-image.lock was compiled from.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
