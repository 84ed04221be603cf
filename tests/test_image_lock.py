"""requirements-image.lock: complete, consistent, what the nodes and the worker ask for, resolvable for the image.

The resolution test asks PyPI (about 3 minutes: pip reads the metadata of 175 packages for Python 3.12
on manylinux x86_64, without downloading or installing them). Everything else reads committed files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK = REPO_ROOT / "requirements-image.lock"
INPUT = REPO_ROOT / "requirements-image.in"
DOWNLOAD_LOCK = REPO_ROOT / "requirements-download.lock"
SCRIPT = REPO_ROOT / "scripts" / "image_lock.py"
AUDIO_CHECK = REPO_ROOT / "scripts" / "check_audio_embeddings.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("image_lock", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_lock = _load_script()


def read_lock(path: Path = LOCK) -> dict[str, dict]:
    """{canonical name: {"version", "hashes", "line"}} of a uv-compiled, hashed lock."""
    entries: dict[str, dict] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = entries[image_lock.canonical(match.group(1))] = {"version": match.group(2), "hashes": set()}
        elif current is not None and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current["hashes"].add(match.group(1))
    return entries


LOCKED = read_lock()


def image_platforms() -> list[str]:
    """Every platform tag a manylinux_2_28 x86_64 machine accepts (pip takes --platform literally)."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pip_without_local_configuration() -> dict[str, str]:
    """This machine's pip has a global constraint file and extra local indexes; the lock must resolve without."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


# ---------------------------------------------------------------- resolvable for the image (PyPI, ~3 min)


def test_the_lock_resolves_for_the_images_python_and_platform_exactly_as_locked(tmp_path):
    unhashed = tmp_path / "lock.txt"
    unhashed.write_text("".join(f"{name}=={entry['version']}\n" for name, entry in LOCKED.items()))
    report = tmp_path / "report.json"
    platforms = [arg for tag in image_platforms() for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report),
        "--target", str(tmp_path / "target"), "--index-url", image_lock.INDEX_URL,
        "--python-version", image_lock.PYTHON_VERSION, *platforms, "--only-binary=:all:", "-r", str(unhashed),
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            env=pip_without_local_configuration())

    assert result.returncode == 0, f"the lock does not resolve for the image:\n{result.stdout}\n{result.stderr}"
    installed = json.loads(report.read_text())["install"]
    chosen = {image_lock.canonical(item["metadata"]["name"]): item for item in installed}
    # kokoro-onnx names the CPU onnxruntime, which pip adds; the image installs the lock alone (--no-deps)
    cpu_builds = {image_lock.canonical(name) for name in image_lock.GPU_SUBSTITUTES}
    assert set(chosen) - set(LOCKED) == cpu_builds
    chosen = {name: item for name, item in chosen.items() if name not in cpu_builds}
    assert {name: item["metadata"]["version"] for name, item in chosen.items()} == \
        {name: entry["version"] for name, entry in LOCKED.items()}, "pip would install another set than the lock"
    for name, item in chosen.items():
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        assert digest in LOCKED[name]["hashes"], f"{name}: the wheel for the image is not among the lock's hashes"


# ---------------------------------------------------------------- what the lock must contain


def test_every_locked_package_is_pinned_with_hashes():
    text = LOCK.read_text(encoding="utf-8")
    assert "--index-url https://pypi.org/simple" in text
    assert len(LOCKED) > 100
    for name, entry in LOCKED.items():
        assert entry["hashes"], f"{name} has no hash"
    assert image_lock.canonical("PyYAML") in LOCKED


def test_the_lock_says_how_it_is_regenerated():
    header = LOCK.read_text(encoding="utf-8").splitlines()[:3]
    assert "#    python scripts/image_lock.py compile --comfyui-dir COMFYUI_DIR" in header


def test_every_requirement_of_comfyui_and_the_nodes_is_locked_at_a_version_it_accepts():
    sections = image_lock.recorded_sections(INPUT.read_text(encoding="utf-8"))
    assert set(sections) == {"ComfyUI", "ComfyUI-KJNodes", "ComfyUI-MelBandRoFormer", "ComfyUI-VideoHelperSuite",
                             "ComfyUI-WanVideoWrapper"}
    for source, lines in sections.items():
        for line in lines:
            requirement = Requirement(line)
            name = image_lock.canonical(requirement.name)
            assert name in LOCKED, f"{source} requires {line}, which the lock lacks"
            assert requirement.specifier.contains(LOCKED[name]["version"], prereleases=True), \
                f"{source} requires {line}; the lock has {LOCKED[name]['version']}"


def test_the_workers_requirements_are_the_locks_versions():
    pins = image_lock.read_pins((REPO_ROOT / "requirements.txt").read_text(encoding="utf-8"))
    assert pins and all(line.partition("#")[0].strip() == "" or "==" in line
                        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()), "pin every package"
    substitutes = {image_lock.canonical(cpu): Requirement(gpu) for cpu, gpu in image_lock.GPU_SUBSTITUTES.items()}
    for name, version in pins.items():
        if name in substitutes:
            continue
        assert name in LOCKED, f"requirements.txt has {name}, the lock does not"
        assert LOCKED[name]["version"] == version, \
            f"requirements.txt pins {name}=={version}, the image installs {LOCKED[name]['version']}"


def test_the_image_has_onnxruntime_gpu_for_cuda_12_in_place_of_the_cpu_build():
    pins = image_lock.read_pins((REPO_ROOT / "requirements.txt").read_text(encoding="utf-8"))
    assert "onnxruntime" in pins and "onnxruntime" not in LOCKED, "two distributions of one module"
    gpu = Requirement(image_lock.GPU_SUBSTITUTES["onnxruntime"])
    assert gpu.specifier.contains(LOCKED["onnxruntime-gpu"]["version"])
    assert Version(LOCKED["onnxruntime-gpu"]["version"]) < Version("1.27"), "1.27 and later need CUDA 13"
    # the extras' CUDA 12 libraries are torch's own, at torch's versions (one cuDNN, one cuBLAS in the image)
    assert {"cuda", "cudnn"} <= gpu.extras
    assert LOCKED["nvidia-cudnn-cu12"]["version"].startswith("9.")
    assert "onnxruntime ; sys_platform == 'never'" in image_lock.render_overrides()


def test_the_input_is_what_the_script_writes_from_its_known_good_pins():
    """Changing KNOWN_GOOD (or a node's requirements) without regenerating the lock fails here."""
    recorded = image_lock.recorded_sections(INPUT.read_text(encoding="utf-8"))
    assert INPUT.read_text(encoding="utf-8") == image_lock.render_input(recorded)
    for pin in image_lock.KNOWN_GOOD:
        name, version = pin.split("==")
        assert LOCKED[image_lock.canonical(name)]["version"] == version, pin


def test_the_downloaders_lock_has_the_image_locks_versions():
    download = read_lock(DOWNLOAD_LOCK)
    assert set(image_lock.DOWNLOAD_PACKAGES) <= set(download)
    for name, entry in download.items():
        assert entry["version"] == LOCKED[name]["version"], name
        assert entry["hashes"], name


# ---------------------------------------------------------------- the known-good audio stack


# Verified with scripts/check_audio_embeddings.py on WanVideoWrapper 6b286552 (README, "The image lock"):
# this set gives 13 hidden states; transformers 5.24.0 gives hidden_states=None (every job would fail).
# Moving any of them needs that check to pass again first.
VERIFIED_AUDIO_STACK = {"transformers": "4.57.1", "diffusers": "0.35.2", "peft": "0.17.1", "accelerate": "1.10.1"}


def test_the_audio_stack_is_the_set_verified_with_wanvideowrappers_wav2vec2():
    locked = {name: LOCKED[name]["version"] for name in VERIFIED_AUDIO_STACK}
    assert Version(locked["transformers"]).major < 5, \
        "transformers 5 makes WanVideoWrapper 6b286552's wav2vec2 return hidden_states=None"
    assert locked == VERIFIED_AUDIO_STACK
    # transformers 4.57.1 needs huggingface_hub < 1.0; a diffusers that needs a newer hub breaks the node import.
    assert Version(LOCKED["huggingface-hub"]["version"]) < Version("1.0")


def test_torch_is_the_cuda_12_8_build_the_base_image_runs():
    assert (LOCKED["torch"]["version"], LOCKED["torchvision"]["version"], LOCKED["torchaudio"]["version"]) == \
        ("2.8.0", "0.23.0", "2.8.0")
    assert LOCKED["nvidia-cuda-runtime-cu12"]["version"].startswith("12.8.")
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:12\.8\.", dockerfile, re.MULTILINE)


def test_the_nodes_stack_is_not_newer_than_the_node_commits():
    """numpy, opencv, huggingface_hub, librosa, protobuf: as of October 2025, not 13 months later.

    PyAV is the worker's (17.1 fixes a per-call leak of 16.x's audio resampler); scripts/image_lock.py
    lets it and text to speech be newer, and nothing else."""
    ceilings = {"numpy": "2.4", "opencv-python": "4.13", "huggingface-hub": "1.0", "librosa": "0.12",
                "protobuf": "7"}
    for name, ceiling in ceilings.items():
        assert Version(LOCKED[name]["version"]) < Version(ceiling), f"{name} {LOCKED[name]['version']}"


# ---------------------------------------------------------------- the build's source check


def _tree(root: Path, sections: dict[str, list[str]]) -> Path:
    comfyui = root / "ComfyUI"
    for label, lines in sections.items():
        folder = comfyui if label == "ComfyUI" else comfyui / "custom_nodes" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "requirements.txt").write_text("# comment\n" + "\n".join(lines) + "\n")
    return comfyui


def _check_sources(comfyui: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "check-sources", "--comfyui-dir", str(comfyui),
                           "--input", str(INPUT)], capture_output=True, text=True, timeout=60)


def test_the_build_accepts_sources_whose_requirements_the_lock_was_compiled_from(tmp_path):
    sections = image_lock.recorded_sections(INPUT.read_text(encoding="utf-8"))

    result = _check_sources(_tree(tmp_path, sections))

    assert result.returncode == 0, result.stderr


def test_the_build_refuses_a_node_whose_requirements_changed_or_a_new_node(tmp_path):
    sections = image_lock.recorded_sections(INPUT.read_text(encoding="utf-8"))
    sections["ComfyUI-WanVideoWrapper"] = [*sections["ComfyUI-WanVideoWrapper"], "transformers>=5"]
    sections["ComfyUI-NewNode"] = ["einops"]

    result = _check_sources(_tree(tmp_path, sections))

    assert result.returncode == 1
    assert "ComfyUI-WanVideoWrapper/requirements.txt changed: added ['transformers>=5'], removed []" in result.stderr
    assert "ComfyUI-NewNode/requirements.txt is not in requirements-image.in" in result.stderr


def test_the_lock_was_compiled_from_the_pinned_sources():
    """Opt-in: COMFYUI_SOURCES_DIR names a ComfyUI checkout with the nodes at the Dockerfile's commits."""
    sources = os.environ.get("COMFYUI_SOURCES_DIR")
    if not sources:
        pytest.skip("set COMFYUI_SOURCES_DIR to a ComfyUI checkout of the pinned stack")
    assert image_lock.source_mismatches(Path(sources), INPUT.read_text(encoding="utf-8")) == []


def test_the_audio_check_passes_in_an_environment_installed_from_the_lock():
    """Opt-in: AUDIO_CHECK_PYTHON is a Python with the lock installed (scripts/install_from_lock.sh) and
    COMFYUI_SOURCES_DIR the pinned ComfyUI checkout; the check runs WanVideoWrapper's wav2vec2 on random weights."""
    python, sources = os.environ.get("AUDIO_CHECK_PYTHON"), os.environ.get("COMFYUI_SOURCES_DIR")
    if not (python and sources):
        pytest.skip("set AUDIO_CHECK_PYTHON and COMFYUI_SOURCES_DIR to run the audio-embedding check")
    wanvideo = Path(sources) / "custom_nodes" / "ComfyUI-WanVideoWrapper"

    result = subprocess.run([python, str(AUDIO_CHECK), "--wanvideo-dir", str(wanvideo)],
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr
    assert "13 hidden states, audio embedding (12, 25, 768)" in result.stdout
    assert "transformers 4.57.1" in result.stdout


# ---------------------------------------------------------------- the build's pip check


def _environment(root: Path, dists: dict[str, list[str]]) -> str:
    """A venv holding only the named distributions (metadata only: what pip check reads)."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for dist, requires in dists.items():
        name, version = dist.split("==")
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                 *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "RECORD").write_text("")
    return str(python)


def _pip_check(python: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "pip-check", "--python", python],
                          capture_output=True, text=True, timeout=120)


def test_the_builds_pip_check_allows_only_the_gpu_substitution(tmp_path):
    python = _environment(tmp_path / "ok", {"kokoro-onnx==0.6.1": ["onnxruntime>=1.20.1", "numpy"],
                                            "onnxruntime-gpu==1.26.0": ["numpy"], "numpy==2.3.4": []})
    result = _pip_check(python)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime-gpu[cuda,cudnn]==1.26.0 for onnxruntime" in result.stdout


def test_the_builds_pip_check_fails_on_anything_else(tmp_path):
    python = _environment(tmp_path / "bad", {"kokoro-onnx==0.6.1": ["onnxruntime>=1.20.1", "numpy>=2.0.2"],
                                             "numpy==1.0": [], "peft==0.17.1": ["accelerate>=0.21.0"]})
    result = _pip_check(python)
    assert result.returncode == 1
    # without onnxruntime-gpu the missing CPU build is a real gap; the others are what pip check says
    assert "error: pip check: kokoro-onnx 0.6.1 requires onnxruntime, which is not installed." in result.stderr
    assert "error: pip check: peft 0.17.1 requires accelerate, which is not installed." in result.stderr
    assert "error: pip check: kokoro-onnx 0.6.1 has requirement numpy>=2.0.2, but you have numpy 1.0." \
        in result.stderr
