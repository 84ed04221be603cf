"""The node lock: how it is built from /object_info, and how graphs are validated against it."""

from __future__ import annotations

import copy
import json

import pytest

from infinitetalk_worker.__main__ import main
from infinitetalk_worker.config import REPO_ROOT
from infinitetalk_worker.node_lock import (
    DEFAULT_LOCK_PATH,
    DEFAULT_MANIFEST_PATH,
    JOB_TIME_CLASSES,
    SMOKE_CLASSES,
    LockError,
    build_lock,
    classes_used,
    graph_files,
    load_lock,
    load_model_index,
    types_compatible,
    validate_graph,
)

SHARED_OBJECT_INFO = REPO_ROOT / "tests" / "data" / "comfyui" / "object_info.json"
needs_shared = pytest.mark.skipif(not SHARED_OBJECT_INFO.is_file(), reason=f"{SHARED_OBJECT_INFO} is not available")

# Excerpts of the pinned stack's real /object_info (tooltips and descriptions left out).
OBJECT_INFO = {
    "VHS_VideoCombine": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
                "loop_count": ["INT", {"default": 0, "max": 100, "min": 0, "step": 1}],
                "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
                "format": [["image/gif", "image/webp", "video/h264-mp4"], {"formats": {
                    "image/webp": [["lossless", "BOOLEAN", {"default": True}]],
                    "video/h264-mp4": [["pix_fmt", ["yuv420p", "yuv420p10le"]],
                                       ["crf", "INT", {"default": 19, "max": 100, "min": 0, "step": 1}],
                                       ["save_metadata", "BOOLEAN", {"default": True}],
                                       ["trim_to_audio", "BOOLEAN", {"default": False}]]}}],
                "pingpong": ["BOOLEAN", {"default": False}],
                "save_output": ["BOOLEAN", {"default": True}],
            },
            "optional": {"audio": ["AUDIO"], "meta_batch": ["VHS_BatchManager"], "vae": ["VAE"]},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        },
        "output": ["VHS_FILENAMES"], "output_is_list": [False], "output_name": ["Filenames"], "output_node": True,
        "python_module": "custom_nodes.ComfyUI-VideoHelperSuite",
    },
    "LoadImage": {
        "input": {"required": {"image": [["example.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"], "output_is_list": [False, False], "output_name": ["IMAGE", "MASK"],
        "output_node": False, "python_module": "nodes",
    },
    "LoadAudio": {
        "input": {"required": {"audio": [[], {"audio_upload": True}]}},
        "output": ["AUDIO"], "output_is_list": [False], "output_name": ["AUDIO"], "output_node": False,
        "python_module": "comfy_extras.nodes_audio",
    },
    "MaskBatchMulti": {
        "input": {"required": {"inputcount": ["INT", {"default": 2, "max": 1000, "min": 2, "step": 1}],
                               "mask_1": ["MASK"], "mask_2": ["MASK"]}},
        "output": ["MASK"], "output_is_list": [False], "output_name": ["masks"], "output_node": False,
        "python_module": "custom_nodes.ComfyUI-KJNodes",
    },
    "LoadImageMask": {
        "input": {"required": {"image": [["example.png"], {"image_upload": True}],
                               "channel": [["alpha", "red", "green", "blue"]]}},
        "output": ["MASK"], "output_is_list": [False], "output_name": ["MASK"], "output_node": False,
        "python_module": "nodes",
    },
    "WanVideoVAELoader": {
        "input": {"required": {"model_name": [["some_local_vae.safetensors"], {}]},
                  "optional": {"precision": [["fp16", "fp32", "bf16"], {"default": "bf16"}]}},
        "output": ["WANVAE"], "output_is_list": [False], "output_name": ["vae"], "output_node": False,
        "python_module": "custom_nodes.ComfyUI-WanVideoWrapper",
    },
    "WanVideoScheduler": {
        "input": {"required": {"scheduler": [["unipc", "dpm++"], {"default": "unipc"}]}},
        "output": [["unipc", "dpm++"], "SIGMAS"], "output_is_list": [False, False],
        "output_name": ["scheduler", "sigmas"], "output_node": False,
        "python_module": "custom_nodes.ComfyUI-WanVideoWrapper",
    },
    "SaveVideo": {
        "input": {"required": {"video": ["VIDEO", {}],
                               "filename_prefix": ["STRING", {"default": "video/ComfyUI", "multiline": False}],
                               "format": ["COMBO", {"default": "auto", "multiselect": False,
                                                    "options": ["auto", "mp4"]}],
                               "codec": ["COMBO", {"default": "auto", "multiselect": False,
                                                   "options": ["auto", "h264"]}]},
                  "hidden": {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}},
        "output": [], "output_is_list": [], "output_name": [], "output_node": True,
        "python_module": "comfy_extras.nodes_video",
    },
    "PreviewAny": {
        "input": {"required": {"source": ["*", {}]}},
        "output": [], "output_is_list": [], "output_name": [], "output_node": True,
        "python_module": "comfy_extras.nodes_preview_any",
    },
}

MODELS = {("vae", "Wan2_1_VAE_bf16.safetensors")}


@pytest.fixture
def lock():
    return build_lock(OBJECT_INFO, OBJECT_INFO, "test")


def good_graph() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "/abs/portrait.png"}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": "/abs/speech.wav"}},
        "3": {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["1", 0], "audio": ["2", 0], "frame_rate": 25, "loop_count": 0, "filename_prefix": "x",
            "format": "video/h264-mp4", "pix_fmt": "yuv420p", "crf": 19, "save_metadata": False,
            "trim_to_audio": False, "pingpong": False, "save_output": True}},
    }


def messages(graph, lock, models=MODELS) -> list[str]:
    return [str(p) for p in validate_graph(graph, lock, models, "wf.json")]


# ---------------------------------------------------------------- building the lock


def test_model_file_lists_are_not_frozen_but_tied_to_their_folder(lock):
    spec = lock["classes"]["WanVideoVAELoader"]["inputs"]["model_name"]
    assert spec == {"type": "COMBO", "required": True, "model_folders": ["vae"]}
    assert "some_local_vae.safetensors" not in json.dumps(lock)


def test_input_directory_lists_are_not_frozen(lock):
    assert lock["classes"]["LoadImage"]["inputs"]["image"]["input_file"] is True
    assert "example.png" not in json.dumps(lock["classes"]["LoadImage"])
    assert lock["classes"]["LoadAudio"]["inputs"]["audio"]["input_file"] is True


def test_fixed_choices_defaults_and_ranges_are_kept(lock):
    inputs = lock["classes"]["VHS_VideoCombine"]["inputs"]
    assert inputs["loop_count"] == {"type": "INT", "required": True, "default": 0, "min": 0, "max": 100}
    assert inputs["format"]["choices"] == ["image/gif", "image/webp", "video/h264-mp4"]
    assert inputs["audio"] == {"type": "AUDIO", "required": False}
    assert lock["classes"]["WanVideoVAELoader"]["inputs"]["precision"]["default"] == "bf16"


def test_vhs_per_format_widgets_come_from_the_formats_metadata(lock):
    widgets = lock["classes"]["VHS_VideoCombine"]["inputs"]["format"]["format_widgets"]
    assert widgets["video/h264-mp4"]["crf"] == {"type": "INT", "required": False, "default": 19, "min": 0, "max": 100}
    assert widgets["video/h264-mp4"]["pix_fmt"]["choices"] == ["yuv420p", "yuv420p10le"]
    assert set(widgets["image/webp"]) == {"lossless"}


def test_v3_combo_inputs_list_outputs_and_hidden_inputs(lock):
    save = lock["classes"]["SaveVideo"]
    assert save["inputs"]["format"]["choices"] == ["auto", "mp4"]
    assert save["hidden"] == ["extra_pnginfo", "prompt"] and save["output_node"] is True
    scheduler_outputs = lock["classes"]["WanVideoScheduler"]["outputs"]
    assert [o["type"] for o in scheduler_outputs] == ["COMBO", "SIGMAS"]


def test_numbered_inputs_of_kjnodes_multi_nodes(lock):
    assert lock["classes"]["MaskBatchMulti"]["numbered_inputs"] == {
        "count_input": "inputcount", "prefix": "mask", "type": "MASK", "first": 3}


def test_a_class_missing_from_object_info_is_named():
    with pytest.raises(LockError, match="no node class NotInstalledNode"):
        build_lock(OBJECT_INFO, ["LoadImage", "NotInstalledNode"], "object_info.json")


def test_lock_command_covers_every_class_of_every_graph_plus_the_smoke_and_job_time_classes(tmp_path):
    info = dict(OBJECT_INFO)
    for name in SMOKE_CLASSES + JOB_TIME_CLASSES:
        info.setdefault(name, {"input": {}, "output": [], "output_node": False})
    (tmp_path / "object_info.json").write_text(json.dumps(info))
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "deep").mkdir()
    deep_graph = {"1": {"class_type": "WanVideoScheduler", "inputs": {}}}
    (tmp_path / "wf" / "deep" / "a.json").write_text(json.dumps(deep_graph))
    (tmp_path / "wf" / "models.json").write_text("[]")
    output = tmp_path / "wf" / "node_lock.json"

    code = main(["lock", "--object-info", str(tmp_path / "object_info.json"), "--output", str(output)])

    assert code == 0
    assert set(load_lock(output)["classes"]) == set(SMOKE_CLASSES) | set(JOB_TIME_CLASSES) | {"WanVideoScheduler"}


def test_lock_command_fails_naming_a_class_the_object_info_lacks(tmp_path, capsys):
    (tmp_path / "object_info.json").write_text(json.dumps(OBJECT_INFO))
    (tmp_path / "a.json").write_text(json.dumps({"1": {"class_type": "LoadImage", "inputs": {}}}))

    code = main(["lock", "--object-info", str(tmp_path / "object_info.json"), "--output", str(tmp_path / "lock.json")])

    assert code == 1
    assert "RepeatImageBatch" in capsys.readouterr().err  # a smoke class this excerpt lacks
    assert not (tmp_path / "lock.json").exists()


@needs_shared
def test_committed_lock_is_what_the_recorded_object_info_gives():
    info = json.loads(SHARED_OBJECT_INFO.read_text())
    committed = load_lock(DEFAULT_LOCK_PATH)
    names = classes_used(graph_files(DEFAULT_LOCK_PATH.parent)) | set(SMOKE_CLASSES) | set(JOB_TIME_CLASSES)
    fresh = build_lock(info, names, committed["source"])
    assert json.loads(json.dumps(fresh)) == committed


def test_committed_lock_covers_every_class_used_under_workflows():
    committed = load_lock(DEFAULT_LOCK_PATH)
    used = classes_used(graph_files(DEFAULT_LOCK_PATH.parent)) | set(SMOKE_CLASSES)
    assert used <= set(committed["classes"])


# ---------------------------------------------------------------- type rules


@pytest.mark.parametrize(
    "output_type, input_type, compatible",
    [
        ("IMAGE", "IMAGE", True),
        ("IMAGE", "MASK", False),
        ("LATENT", "IMAGE,LATENT", True),
        ("IMAGE,LATENT", "LATENT", True),
        ("INT", "FLOAT,INT", True),
        ("STRING", "FLOAT,INT", False),
        ("WANVAE", "*", True),
        ("*", "AUDIO", True),
        ("COMBO", "COMBO", True),
    ],
)
def test_link_type_rules(output_type, input_type, compatible):
    assert types_compatible(output_type, input_type) is compatible


# ---------------------------------------------------------------- validation


def test_a_good_graph_has_no_problems(lock):
    assert messages(good_graph(), lock) == []


def test_unknown_class_is_reported(lock):
    graph = good_graph()
    graph["9"] = {"class_type": "DownloadAndLoadWav2VecModel", "inputs": {}}
    assert messages(graph, lock) == [
        "wf.json: node 9 (DownloadAndLoadWav2VecModel): node class DownloadAndLoadWav2VecModel is not in the node "
        "lock: it is not installed in the pinned stack, or the lock needs regenerating "
        "(python -m infinitetalk_worker lock)."]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda g: g["2"]["inputs"].update(audioUI=""),
         "node 2 (LoadAudio) input 'audioUI': is not an input of LoadAudio"),
        (lambda g: g["3"]["inputs"].pop("filename_prefix"),
         "node 3 (VHS_VideoCombine) input 'filename_prefix': is required but missing."),
        (lambda g: g["3"]["inputs"].update(images=["7", 0]),
         "node 3 (VHS_VideoCombine) input 'images': links to node 7, which does not exist."),
        (lambda g: g["3"]["inputs"].update(images=["1", 2]),
         "input 'images': links to output 2 of node 1 (LoadImage), which has 2 output(s)."),
        (lambda g: g["3"]["inputs"].update(images=["1", 1]),
         "input 'images': links to output 1 (MASK: MASK) of node 1 (LoadImage), but accepts IMAGE."),
        (lambda g: g["3"]["inputs"].update(images=[1, 0]),
         "input 'images': is a list but not a link"),
        (lambda g: g["3"]["inputs"].update(loop_count=101),
         "input 'loop_count': 101 is above the maximum 100."),
        (lambda g: g["3"]["inputs"].update(frame_rate=0),
         "input 'frame_rate': 0 is below the minimum 1."),
        (lambda g: g["3"]["inputs"].update(frame_rate="25"),
         "input 'frame_rate': must be a number, not '25'."),
        (lambda g: g["3"]["inputs"].update(loop_count=1.5),
         "input 'loop_count': must be a whole number, not 1.5."),
        (lambda g: g["3"]["inputs"].update(pingpong="false"),
         "input 'pingpong': must be true or false, not 'false'."),
        (lambda g: g["3"]["inputs"].update(format="video/h265-mp4"),
         "input 'format': 'video/h265-mp4' is not one of the accepted values"),
        (lambda g: g["3"]["inputs"].update(crf=101),
         "input 'crf': 101 is above the maximum 100."),
        (lambda g: g["3"]["inputs"].update(pix_fmt="yuv444p"),
         "input 'pix_fmt': 'yuv444p' is not one of the accepted values ('yuv420p', 'yuv420p10le')."),
        (lambda g: g["3"]["inputs"].update(unique_id="3"),
         "input 'unique_id': is a hidden input that ComfyUI fills in itself; remove it."),
        (lambda g: g["3"]["inputs"].update(audio="/abs/speech.wav"),
         "input 'audio': must be a link to a AUDIO output, not the constant '/abs/speech.wav'."),
        (lambda g: g["1"]["inputs"].update(image=""),
         "node 1 (LoadImage) input 'image': must be a non-empty string, not ''."),
    ],
)
def test_deliberately_broken_graphs_are_caught_with_a_precise_message(lock, change, expected):
    graph = good_graph()
    change(graph)
    found = messages(graph, lock)
    assert len(found) == 1 and expected in found[0], found


def test_format_widgets_of_another_format_are_rejected(lock):
    graph = good_graph()
    graph["3"]["inputs"].update(format="image/webp")
    graph["3"]["inputs"].pop("pix_fmt")
    found = messages(graph, lock)
    assert "input 'crf': is not a setting of format 'image/webp' (only of video/h264-mp4)." in " ".join(found)
    graph["3"]["inputs"] = {k: v for k, v in graph["3"]["inputs"].items()
                            if k not in ("crf", "save_metadata", "trim_to_audio")}
    graph["3"]["inputs"]["lossless"] = True
    assert messages(graph, lock) == []


def test_model_files_are_checked_against_the_manifest_not_the_installed_list(lock):
    graph = good_graph()
    graph["4"] = {"class_type": "WanVideoVAELoader", "inputs": {"model_name": "Wan2_1_VAE_bf16.safetensors"}}
    assert messages(graph, lock) == []
    graph["4"]["inputs"]["model_name"] = "some_local_vae.safetensors"
    assert messages(graph, lock) == [
        "wf.json: node 4 (WanVideoVAELoader) input 'model_name': model file 'some_local_vae.safetensors' (folder vae) "
        "is not in models.json; add it to the manifest so it is downloaded and checked at start-up."]
    misplaced = {("loras", "Wan2_1_VAE_bf16.safetensors")}
    assert any("not in models.json" in m for m in messages(graph, lock, models=misplaced))


def test_numbered_inputs_follow_inputcount(lock):
    graph = good_graph()
    graph["5"] = {"class_type": "LoadImageMask", "inputs": {"image": "/abs/m.png", "channel": "red"}}
    graph["6"] = {"class_type": "MaskBatchMulti",
                  "inputs": {"inputcount": 3, "mask_1": ["5", 0], "mask_2": ["5", 0], "mask_3": ["5", 0]}}
    assert messages(graph, lock) == []
    del graph["6"]["inputs"]["mask_3"]
    assert messages(graph, lock) == ["wf.json: node 6 (MaskBatchMulti) input 'mask_3': is required but missing."]
    graph["6"]["inputs"].update(mask_3=["5", 0], mask_4=["1", 0])
    assert messages(graph, lock) == ["wf.json: node 6 (MaskBatchMulti) input 'mask_4': is beyond inputcount=3."]
    graph["6"]["inputs"].update(inputcount=4)
    assert messages(graph, lock) == [
        "wf.json: node 6 (MaskBatchMulti) input 'mask_4': links to output 0 (IMAGE: IMAGE) of node 1 (LoadImage), "
        "but accepts MASK."]


def test_any_type_input_takes_any_link_and_a_second_output_node_is_refused(lock):
    graph = good_graph()
    graph["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    assert messages(graph, lock) == [
        "wf.json: has 2 output nodes (3, 8); exactly one is allowed, or ComfyUI may run only part of the graph and "
        "still answer 200."]


def test_a_graph_without_output_node_is_refused(lock):
    graph = good_graph()
    del graph["3"]
    assert messages(graph, lock) == ["wf.json: has no output node; ComfyUI would refuse it (prompt_no_outputs)."]


def test_linked_combo_from_a_node_that_passes_a_choice_list(lock):
    graph = good_graph()
    graph["5"] = {"class_type": "WanVideoScheduler", "inputs": {"scheduler": "dpm++"}}
    graph["6"] = {"class_type": "LoadImageMask", "inputs": {"image": "/abs/m.png", "channel": ["5", 0]}}
    assert messages(graph, lock) == []
    graph["6"]["inputs"]["channel"] = ["5", 1]
    expected = "links to output 1 (sigmas: SIGMAS) of node 5 (WanVideoScheduler), but accepts COMBO."
    assert expected in messages(graph, lock)[0]


def test_manifest_must_name_file_and_folder(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps([{"file": "a.safetensors"}]))
    with pytest.raises(LockError, match="entry 0: 'folder' must be a non-empty string"):
        load_model_index(path)


# ---------------------------------------------------------------- validate command


def test_validate_command_accepts_the_shipped_workflows(capsys):
    assert main(["validate"]) == 0
    assert "All 8 workflow file(s) are valid." in capsys.readouterr().out


def test_validate_command_prints_one_line_per_problem_and_exits_1(tmp_path, capsys):
    graph = json.loads((REPO_ROOT / "workflows" / "i2v_single.json").read_text())
    broken = copy.deepcopy(graph)
    sampler = next(i for i, n in broken.items() if n["class_type"] == "WanVideoSampler")
    broken[sampler]["inputs"]["scheduler"] = "dpm++_sdee"
    del broken[sampler]["inputs"]["steps"]
    path = tmp_path / "i2v_single.json"
    path.write_text(json.dumps(broken))

    code = main(["validate", str(path), "--lock", str(DEFAULT_LOCK_PATH), "--models", str(DEFAULT_MANIFEST_PATH)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert f"{path}: node {sampler} (WanVideoSampler) input 'steps': is required but missing." in lines
    assert any(line.startswith(f"{path}: node {sampler} (WanVideoSampler) input 'scheduler': 'dpm++_sdee' is not one")
               for line in lines)
    assert lines[-1] == "2 problem(s) found."


def test_validate_command_reports_a_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.json")]) == 1
    assert "nope.json cannot be read" in capsys.readouterr().out


def test_lock_command_reads_a_running_comfyui(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    info = {**OBJECT_INFO, **{name: {"input": {}, "output": [], "output_node": False}
                              for name in SMOKE_CLASSES + JOB_TIME_CLASSES if name not in OBJECT_INFO}}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            seen.append(self.path)
            body = json.dumps(info).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["lock", "--object-info", url, "--output", str(tmp_path / "node_lock.json")]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["/object_info"]
    assert load_lock(tmp_path / "node_lock.json")["source"] == url
