"""Start-up checks against a ComfyUI that answers /object_info (a loopback stand-in serving real-format data)."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infinitetalk_worker.__main__ import main
from infinitetalk_worker.config import REPO_ROOT, load_settings
from infinitetalk_worker.model_download import WORKER_FOLDERS
from infinitetalk_worker.node_lock import DEFAULT_LOCK_PATH, DEFAULT_MANIFEST_PATH, load_lock
from infinitetalk_worker.startup_checks import StartupCheckError, run_startup_checks

WORKFLOWS = REPO_ROOT / "workflows"
SMOKE = WORKFLOWS / "smoke"
SHARED_OBJECT_INFO = REPO_ROOT / "tests" / "data" / "comfyui" / "object_info.json"
LOCK = load_lock(DEFAULT_LOCK_PATH)
MANIFEST = json.loads(DEFAULT_MANIFEST_PATH.read_text())
ALL_FOUR = "i2v_multi.json node {n}, i2v_single.json node {n}, v2v_multi.json node {n}, v2v_single.json node {n}"


def installed_models() -> dict[str, list[str]]:
    folders: dict[str, list[str]] = {}
    for row in MANIFEST:
        folders.setdefault(row["folder"], []).append(row["file"])
    return folders


def object_info_from_lock(lock: dict, installed: dict[str, list[str]]) -> dict:
    """An /object_info document, in ComfyUI's own format, that agrees with the lock."""
    return {name: _class_info(interface, installed) for name, interface in lock["classes"].items()}


def _class_info(interface: dict, installed: dict[str, list[str]]) -> dict:
    sections: dict = {"required": {}, "optional": {}, "hidden": {name: name.upper() for name in interface["hidden"]}}
    for name, spec in interface["inputs"].items():
        sections["required" if spec["required"] else "optional"][name] = _raw_input(spec, installed)
    outputs = interface["outputs"]
    return {
        "input": sections,
        "output": [o["type"] for o in outputs],
        "output_name": [o["name"] for o in outputs],
        "output_is_list": [o["is_list"] for o in outputs],
        "output_node": interface["output_node"],
        "python_module": interface["python_module"],
    }


def _raw_input(spec: dict, installed: dict[str, list[str]]) -> list:
    options = {key: spec[key] for key in ("default", "min", "max") if key in spec}
    if spec["type"] != "COMBO":
        return [spec["type"], options]
    if "model_folders" in spec:
        choices = sorted(f for folder in spec["model_folders"] for f in installed.get(folder, []))
    elif spec.get("input_file"):
        choices, options["image_upload"] = ["example.png"], True
    else:
        choices = spec.get("choices", [])
    if "format_widgets" in spec:
        options["formats"] = {
            fmt: [[name, w.get("choices", w["type"]), {k: w[k] for k in ("default", "min", "max") if k in w}]
                  for name, w in widgets.items()]
            for fmt, widgets in spec["format_widgets"].items()
        }
    return [choices, options]


class FakeObjectInfo:
    """Serves GET /object_info on 127.0.0.1 from a document the test can change."""

    def __init__(self) -> None:
        self.document = object_info_from_lock(LOCK, installed_models())
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.requests += self.path == "/object_info"
                body = json.dumps(owner.document).encode() if self.path == "/object_info" else b"{}"
                self.send_response(200 if self.path == "/object_info" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def inputs(self, class_type: str) -> dict:
        return self.document[class_type]["input"]["required"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def comfy():
    fake = FakeObjectInfo()
    yield fake
    fake.close()


def settings_for(url: str, workflow_dir: Path = WORKFLOWS):
    return load_settings({"COMFYUI_URL": url, "WORKFLOW_DIR": str(workflow_dir), "COMFYUI_HTTP_TIMEOUT_S": "5"})


def failure(url: str, workflow_dir: Path = WORKFLOWS) -> list[str]:
    with pytest.raises(StartupCheckError) as caught:
        run_startup_checks(settings_for(url, workflow_dir))
    return [line[2:] for line in str(caught.value).splitlines() if line.startswith("- ")]


def test_a_comfyui_that_matches_the_lock_and_has_every_model_passes(comfy):
    run_startup_checks(settings_for(comfy.url))
    assert comfy.requests == 1  # /object_info is read once


def test_a_missing_node_class_is_named(comfy):
    del comfy.document["MelBandRoFormerSampler"]
    assert failure(comfy.url) == [
        "MelBandRoFormerSampler: node class is missing from ComfyUI (custom node not installed, or it failed to "
        "import; see ComfyUI's log)."]


def test_an_input_that_is_gone_names_class_input_and_where_it_is_used(comfy):
    del comfy.inputs("MultiTalkWav2VecEmbeds")["audio_scale"]
    assert failure(comfy.url) == [
        f"MultiTalkWav2VecEmbeds: input 'audio_scale' is gone (workflows {ALL_FOUR.format(n=25)})."]


def test_a_retyped_input_is_reported(comfy):
    comfy.inputs("WanVideoSampler")["steps"] = ["FLOAT", {"default": 30.0, "min": 1.0}]
    assert failure(comfy.url) == ["WanVideoSampler: input 'steps' changed type from INT to FLOAT."]


def test_a_removed_choice_names_the_workflows_that_use_it(comfy):
    choices, options = comfy.inputs("WanVideoSampler")["scheduler"]
    comfy.inputs("WanVideoSampler")["scheduler"] = [[c for c in choices if c != "dpm++_sde"], options]
    assert failure(comfy.url) == [
        f"WanVideoSampler: input 'scheduler' no longer accepts 'dpm++_sde' (workflows {ALL_FOUR.format(n=40)})."]


def test_a_removed_choice_nobody_uses_is_still_drift(comfy):
    choices, options = comfy.inputs("WanVideoSampler")["scheduler"]
    comfy.inputs("WanVideoSampler")["scheduler"] = [[c for c in choices if c != "rcm"], options]
    assert failure(comfy.url) == ["WanVideoSampler: input 'scheduler' no longer accepts 'rcm'."]


def test_vhs_without_ffmpeg_formats_and_narrowed_format_widgets(comfy):
    choices, options = comfy.inputs("VHS_VideoCombine")["format"]
    crf = next(w for w in options["formats"]["video/h264-mp4"] if w[0] == "crf")
    crf[2]["max"] = 51
    found = failure(comfy.url)
    assert found == ["VHS_VideoCombine: input 'crf' (format video/h264-mp4) range narrowed from [0, 100] to [0, 51]."]
    comfy.inputs("VHS_VideoCombine")["format"] = [["image/gif", "image/webp"], options]
    assert (f"VHS_VideoCombine: input 'format' no longer accepts 'video/h264-mp4' (workflows {ALL_FOUR.format(n=43)})."
            in failure(comfy.url))


def test_new_required_input_and_changed_outputs(comfy):
    comfy.inputs("WanVideoDecode")["new_knob"] = ["INT", {"default": 1}]
    comfy.document["MultiTalkWav2VecEmbeds"]["output"] = ["MULTITALK_EMBEDS", "AUDIO"]
    assert set(failure(comfy.url)) == {
        "WanVideoDecode: new required input 'new_knob' that the lock (and the workflows) lack.",
        "MultiTalkWav2VecEmbeds: outputs changed from (MULTITALK_EMBEDS, AUDIO, INT) to (MULTITALK_EMBEDS, AUDIO).",
    }


def test_a_model_file_that_is_not_installed_says_how_to_get_it(comfy):
    comfy.inputs("Wav2VecModelLoader")["model"][0] = []
    report = run_startup_checks(settings_for(comfy.url))  # not fatal: the worker starts, not ready
    assert not report.ready and report.missing_models == ["wav2vec2/wav2vec2-chinese-base_fp16.safetensors"]
    assert report.missing_details == [
        "Model file wav2vec2-chinese-base_fp16.safetensors (folder wav2vec2) is not installed; run python -m "
        "infinitetalk_worker download-models or mount a volume with "
        f"models/wav2vec2/wav2vec2-chinese-base_fp16.safetensors (used by {ALL_FOUR.format(n=8)})."]


def test_only_the_multi_model_missing_is_reported_once_for_both_multi_workflows(comfy):
    choices = comfy.inputs("MultiTalkModelLoader")["model"][0]
    comfy.inputs("MultiTalkModelLoader")["model"][0] = [c for c in choices if "Multi" not in c]
    found = run_startup_checks(settings_for(comfy.url)).missing_details
    missing = "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors (folder diffusion_models)"
    assert len(found) == 1 and missing in found[0]
    assert "(used by i2v_multi.json node 1, v2v_multi.json node 1)" in found[0]


def test_every_problem_is_listed_in_one_error(comfy):
    del comfy.document["MelBandRoFormerSampler"]
    comfy.inputs("WanVideoSampler")["steps"] = ["FLOAT", {}]
    for folder_input in (("WanVideoVAELoader", "model_name"), ("CLIPVisionLoader", "clip_name")):
        comfy.inputs(folder_input[0])[folder_input[1]][0] = []
    with pytest.raises(StartupCheckError) as caught:
        run_startup_checks(settings_for(comfy.url))
    text = str(caught.value)
    assert text.startswith("Start-up checks failed (4 problem(s))")
    for part in ("MelBandRoFormerSampler", "'steps'", "Wan2_1_VAE_bf16.safetensors", "clip_vision_h.safetensors"):
        assert part in text


def test_the_smoke_set_needs_no_model_files(comfy):
    comfy.document = object_info_from_lock(LOCK, installed={})
    assert run_startup_checks(settings_for(comfy.url, SMOKE)).ready
    # Every file ComfyUI loads; the worker's own text-to-speech files are not ComfyUI's to list.
    comfyui_files = [row for row in MANIFEST if row["folder"] not in WORKER_FOLDERS]
    assert len(run_startup_checks(settings_for(comfy.url, WORKFLOWS)).missing_models) == len(comfyui_files)


def test_a_broken_user_workflow_is_caught_at_start(comfy, tmp_path):
    for name in ("i2v_single.json", "i2v_multi.json", "v2v_single.json", "v2v_multi.json"):
        shutil.copy(WORKFLOWS / name, tmp_path / name)
    graph = json.loads((tmp_path / "i2v_single.json").read_text())
    graph["40"]["inputs"]["sampler_cfg"] = 2.0
    graph["99"] = {"class_type": "SomeUnlockedNode", "inputs": {}}
    (tmp_path / "i2v_single.json").write_text(json.dumps(graph))
    assert failure(comfy.url, tmp_path) == [
        "i2v_single.json: node 40 (WanVideoSampler) input 'sampler_cfg': is not an input of WanVideoSampler "
        "(the node would ignore it).",
        "i2v_single.json: node 99 (SomeUnlockedNode): node class SomeUnlockedNode is not in the node lock: it is "
        "not installed in the pinned stack, or the lock needs regenerating (python -m infinitetalk_worker lock).",
    ]


def test_a_workflow_file_missing_from_the_set_is_reported(comfy, tmp_path):
    for name in ("i2v_single.json", "i2v_multi.json", "v2v_single.json"):
        shutil.copy(WORKFLOWS / name, tmp_path / name)
    found = failure(comfy.url, tmp_path)
    assert len(found) == 1 and "v2v_multi.json cannot be read" in found[0]


def test_an_unreachable_comfyui_is_fatal_and_says_so():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(StartupCheckError, match=rf"Is ComfyUI running at {url} \(setting COMFYUI_URL\)\?"):
        run_startup_checks(settings_for(url))


def test_check_command_exit_codes(comfy, capsys, monkeypatch):
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    monkeypatch.setenv("WORKFLOW_DIR", str(WORKFLOWS))
    assert main(["check"]) == 0
    assert "Start-up checks passed" in capsys.readouterr().out
    comfy.inputs("Wav2VecModelLoader")["model"][0] = []
    assert main(["check"]) == 3  # only models missing: entrypoint.sh starts the worker anyway, not ready
    assert "1 model file(s) missing" in capsys.readouterr().out
    del comfy.document["WanVideoSampler"]
    assert main(["check", "--comfyui-url", comfy.url]) == 1
    assert "- WanVideoSampler: node class is missing from ComfyUI" in capsys.readouterr().out


def test_passing_checks_report_the_audio_stacks_installed_versions(comfy):
    from importlib import metadata

    versions = run_startup_checks(settings_for(comfy.url)).versions
    assert set(versions) == {"torch", "transformers", "diffusers", "peft", "accelerate"}
    for name, version in versions.items():  # the test venv has none of them; the image has all
        try:
            assert version == metadata.version(name)
        except metadata.PackageNotFoundError:
            assert version == "not installed"


@pytest.mark.skipif(not SHARED_OBJECT_INFO.is_file(), reason=f"{SHARED_OBJECT_INFO} is not available")
def test_the_recorded_object_info_of_the_pinned_stack_passes_once_models_are_installed(comfy):
    document = json.loads(SHARED_OBJECT_INFO.read_text())
    for class_type, input_name in (("WanVideoModelLoader", "model"), ("MultiTalkModelLoader", "model"),
                                   ("WanVideoVAELoader", "model_name"), ("WanVideoLoraSelect", "lora"),
                                   ("WanVideoTextEncodeCached", "model_name"), ("CLIPVisionLoader", "clip_name"),
                                   ("Wav2VecModelLoader", "model"), ("MelBandRoFormerModelLoader", "model_name")):
        document[class_type]["input"]["required"][input_name][0] = [row["file"] for row in MANIFEST]
    comfy.document = document
    run_startup_checks(settings_for(comfy.url))
    comfy.document = copy.deepcopy(document)
    comfy.document["WanVideoLoraSelect"]["input"]["required"]["lora"][0] = []
    missing = run_startup_checks(settings_for(comfy.url)).missing_details
    assert "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors (folder loras)" in missing[0]
