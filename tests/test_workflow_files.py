"""The shipped workflow files: valid against the lock, wired as designed, and valid once rendered for requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from request_cases import (
    CASE_IDS,
    CASES,
    OPTION_CASE_IDS,
    OPTION_CASES,
    SPEECH_1_S,
    SPEECH_2_S,
    case_input,
    make_case_media,
)

from infinitetalk_worker.config import REPO_ROOT, load_settings
from infinitetalk_worker.errors import WorkerError
from infinitetalk_worker.graph_edits import remove_vocal_separation
from infinitetalk_worker.model_download import WORKER_FOLDERS
from infinitetalk_worker.node_lock import (
    DEFAULT_LOCK_PATH,
    DEFAULT_MANIFEST_PATH,
    load_lock,
    load_model_index,
    output_nodes,
    unreachable_nodes,
    validate_graph,
)
from infinitetalk_worker.pipeline import render
from infinitetalk_worker.roles import REQUIRED_ROLES, ROLE_INPUTS, roles_of
from infinitetalk_worker.speech import MODEL_FILE, MODEL_FOLDER, VOICES_FILE

WORKFLOWS = REPO_ROOT / "workflows"
SMOKE = WORKFLOWS / "smoke"
KINDS = {
    "i2v_single.json": ("image", "single"),
    "i2v_multi.json": ("image", "multi"),
    "v2v_single.json": ("video", "single"),
    "v2v_multi.json": ("video", "multi"),
}
LOCK = load_lock(DEFAULT_LOCK_PATH)
MODELS = load_model_index(DEFAULT_MANIFEST_PATH)


def load(name: str, directory: Path = WORKFLOWS) -> dict:
    return json.loads((directory / name).read_text())


def only(graph: dict, class_type: str) -> tuple[str, dict]:
    found = [(node_id, node) for node_id, node in graph.items() if node["class_type"] == class_type]
    assert len(found) == 1, f"expected exactly one {class_type}, found {len(found)}"
    return found[0]


def with_role(graph: dict, role: str) -> list[tuple[str, dict]]:
    return [(node_id, node) for node_id, node in graph.items() if role in roles_of(node)]


def source(graph: dict, link: list) -> dict:
    assert isinstance(link, list), f"expected a link, got {link!r}"
    return graph[link[0]]


production = pytest.mark.parametrize("name", sorted(KINDS))


# ---------------------------------------------------------------- validity


@production
def test_production_workflow_is_valid_against_the_lock_and_manifest(name):
    assert [str(p) for p in validate_graph(load(name), LOCK, MODELS, name)] == []


@pytest.mark.parametrize("name", sorted(KINDS))
def test_smoke_workflow_is_valid_against_the_lock(name):
    assert [str(p) for p in validate_graph(load(name, SMOKE), LOCK, MODELS, f"smoke/{name}")] == []


@production
def test_exactly_one_output_node_the_video_and_no_dead_nodes(name):
    graph = load(name)
    outputs = output_nodes(graph, LOCK)
    assert len(outputs) == 1
    assert graph[outputs[0]]["class_type"] == "VHS_VideoCombine" and "output" in roles_of(graph[outputs[0]])
    assert unreachable_nodes(graph, LOCK) == []


@production
def test_roles_the_worker_needs_are_present_on_nodes_it_can_write(name):
    graph = load(name)
    present = {role for node in graph.values() for role in roles_of(node)}
    assert set(REQUIRED_ROLES[KINDS[name]]) <= present
    for node in graph.values():
        for role in roles_of(node):
            assert node["class_type"] in ROLE_INPUTS[role], f"role:{role} on {node['class_type']}"
    for role in ("prompt", "sampler", "audio_embeds", "image_embeds"):
        assert len(with_role(graph, role)) == 1, role


# ---------------------------------------------------------------- what the original graphs got wrong


@production
def test_wav2vec_is_loaded_from_a_local_file(name):
    graph = load(name)
    assert not any(node["class_type"] == "DownloadAndLoadWav2VecModel" for node in graph.values())
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    loader = source(graph, embeds["inputs"]["wav2vec_model"])
    assert loader["class_type"] == "Wav2VecModelLoader"
    assert ("wav2vec2", loader["inputs"]["model"]) in MODELS


@production
def test_25_fps_throughout(name):
    graph = load(name)
    assert only(graph, "VHS_VideoCombine")[1]["inputs"]["frame_rate"] == 25
    assert only(graph, "MultiTalkWav2VecEmbeds")[1]["inputs"]["fps"] == 25
    for node in graph.values():
        if node["class_type"] == "VHS_LoadVideo":
            assert node["inputs"]["force_rate"] == 25


@production
def test_soundtrack_is_the_users_own_audio(name):
    graph = load(name)
    _, combine = only(graph, "VHS_VideoCombine")
    soundtrack = source(graph, combine["inputs"]["audio"])
    assert soundtrack["class_type"] == "LoadAudio"
    # The worker's 48 kHz soundtrack, for one speaker too: the upload's own rate may be 16 kHz (derived_media).
    assert "soundtrack" in roles_of(soundtrack)


@production
def test_frames_are_trimmed_to_the_audio_in_the_graph(name):
    graph = load(name)
    _, combine = only(graph, "VHS_VideoCombine")
    trim = source(graph, combine["inputs"]["images"])
    embeds_id, _ = only(graph, "MultiTalkWav2VecEmbeds")
    assert trim["class_type"] == "GetImageRangeFromBatch"
    assert trim["inputs"]["start_index"] == 0 and trim["inputs"]["num_frames"] == [embeds_id, 2]
    assert source(graph, trim["inputs"]["images"])["class_type"] == "WanVideoDecode"
    assert combine["inputs"]["format"] == "video/h264-mp4" and combine["inputs"]["pix_fmt"] == "yuv420p"
    assert combine["inputs"]["crf"] == 19 and combine["inputs"]["save_output"] is True


@production
def test_num_frames_role_drives_the_embeddings_and_caps_the_source_video(name):
    graph = load(name)
    targets = {node["class_type"] for _, node in with_role(graph, "num_frames")}
    expected = {"MultiTalkWav2VecEmbeds"} | ({"VHS_LoadVideo"} if KINDS[name][0] == "video" else set())
    assert targets == expected


@production
def test_model_files_are_fp8_scaled_e4m3fn_and_match_each_other(name):
    graph = load(name)
    _, loader = only(graph, "WanVideoModelLoader")
    assert loader["inputs"]["quantization"] == "fp8_e4m3fn_scaled"
    assert "fp8_e4m3fn_scaled" in loader["inputs"]["model"] and "480p" in loader["inputs"]["model"]
    talk = source(graph, loader["inputs"]["multitalk_model"])["inputs"]["model"]
    assert "fp8_e4m3fn_scaled" in talk and "infinite" in talk.lower()
    assert ("Multi" in talk) == (KINDS[name][1] == "multi") and ("Single" in talk) == (KINDS[name][1] == "single")
    lora = source(graph, loader["inputs"]["lora"])
    assert lora["inputs"]["merge_loras"] is False  # scaled fp8 weights cannot take a merged LoRA


@production
def test_distilled_lora_defaults(name):
    graph = load(name)
    video = KINDS[name][0] == "video"
    _, sampler = only(graph, "WanVideoSampler")
    inputs = sampler["inputs"]
    assert (inputs["cfg"], inputs["shift"], inputs["scheduler"]) == (1.0, 11.0, "dpm++_sde")
    assert inputs["steps"] == (4 if video else 6)
    assert inputs["start_step"] == (2 if video else 0) and inputs["add_noise_to_samples"] is video
    assert ("samples" in inputs) is video
    if video:
        assert source(graph, inputs["samples"])["class_type"] == "WanVideoEncode"
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    assert embeds["inputs"]["audio_scale"] == (1.5 if video else 1.0) and embeds["inputs"]["audio_cfg_scale"] == 1.0
    _, windows = only(graph, "WanVideoImageToVideoMultiTalk")
    assert (windows["inputs"]["frame_window_size"], windows["inputs"]["motion_frame"]) == (81, 9)
    assert windows["inputs"]["mode"] == "infinitetalk"


@pytest.mark.parametrize("name", ["i2v_multi.json", "v2v_multi.json"])
def test_two_speakers_get_their_own_audio_and_region_masks(name):
    graph = load(name)
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    for slot in ("audio_1", "audio_2"):
        separated = source(graph, embeds["inputs"][slot])
        assert separated["class_type"] == "MelBandRoFormerSampler"
        assert slot in roles_of(source(graph, separated["inputs"]["audio"]))
    batch = source(graph, embeds["inputs"]["ref_target_masks"])
    assert batch["class_type"] == "MaskBatchMulti" and batch["inputs"]["inputcount"] == 3
    for index, role in enumerate(("speaker_mask_1", "speaker_mask_2", "speaker_mask_background"), start=1):
        mask = source(graph, batch["inputs"][f"mask_{index}"])
        assert mask["class_type"] == "LoadImageMask" and role in roles_of(mask)
        assert mask["inputs"]["channel"] == "red"


@pytest.mark.parametrize("name", ["i2v_single.json", "v2v_single.json"])
def test_one_speaker_has_no_second_voice_or_masks(name):
    graph = load(name)
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    assert "audio_2" not in embeds["inputs"] and "ref_target_masks" not in embeds["inputs"]


def test_manifest_lists_exactly_the_model_files_the_workflows_name():
    named = set()
    for name in KINDS:
        for node in load(name).values():
            for input_name, spec in LOCK["classes"][node["class_type"]]["inputs"].items():
                if spec.get("model_folders") and input_name in node["inputs"]:
                    folder = next(f for f in spec["model_folders"] if (f, node["inputs"][input_name]) in MODELS)
                    named.add((folder, node["inputs"][input_name]))
    # Besides them only the files the worker reads itself (text to speech), which no workflow names.
    assert named == {(folder, file) for folder, file in MODELS if folder not in WORKER_FOLDERS}
    assert {(folder, file) for folder, file in MODELS if folder in WORKER_FOLDERS} == {
        (MODEL_FOLDER, MODEL_FILE), (MODEL_FOLDER, VOICES_FILE)}
    rows = json.loads(DEFAULT_MANIFEST_PATH.read_text())
    assert all(row["url"].startswith("https://") and row["url"].endswith("/" + row["file"]) for row in rows)


# ---------------------------------------------------------------- rendered for requests


SMOKE_ACCEPTS = {"seed", "prompt", "width", "height", "max_frame", "speaker_boxes"}


@pytest.fixture
def media(tmp_path):
    return make_case_media(tmp_path / "inputs")


@pytest.mark.parametrize("workflow_dir", [WORKFLOWS, SMOKE], ids=["production", "smoke"])
@pytest.mark.parametrize("kind, people, extra", CASES + OPTION_CASES, ids=CASE_IDS + OPTION_CASE_IDS)
def test_rendered_graph_is_valid(tmp_path, media, workflow_dir, kind, people, extra):
    if workflow_dir == SMOKE:  # the CPU stand-ins have no sampler settings and refuse them by design
        extra = {key: value for key, value in extra.items() if key in SMOKE_ACCEPTS}
    raw = case_input(kind, people, extra, media)
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(workflow_dir)})
    job_dir = tmp_path / "job"
    job_dir.mkdir()

    plan = render(raw, settings, job_dir)

    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    if workflow_dir == WORKFLOWS:
        _check_rendered_values(plan.graph, raw, plan.media.output_size)


def _check_rendered_values(graph: dict, raw: dict, size: tuple[int, int]) -> None:
    _, sampler = only(graph, "WanVideoSampler")
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    for key in ("seed", "steps", "cfg", "shift"):
        if key in raw:
            assert sampler["inputs"][key] == raw[key]
    if "audio_scale" in raw:
        assert embeds["inputs"]["audio_scale"] == raw["audio_scale"]
    if "multi_audio_type" in raw:
        assert embeds["inputs"]["multi_audio_type"] == raw["multi_audio_type"]
    seconds = SPEECH_1_S + SPEECH_2_S if raw.get("multi_audio_type") == "add" else SPEECH_1_S
    assert embeds["inputs"]["num_frames"] == min(round(seconds * 25), raw.get("max_frame", 10**6))
    width, height = size
    if "resolution" not in raw:  # with a resolution the bucket sets it (tests/test_sizing.py)
        assert size == (raw.get("width", 512), raw.get("height", 512))
    for _, mask in with_role(graph, "speaker_mask_1") + with_role(graph, "speaker_mask_background"):
        with Image.open(mask["inputs"]["image"]) as image:
            assert image.size == (width, height)


def _token_cells_covered(path: str, width: int, height: int) -> int:
    """White cells of a speaker mask once shrunk (nearest) to the model's 16×16-pixel token grid."""
    with Image.open(path) as image:
        grid = image.convert("L").resize((width // 16, height // 16), Image.NEAREST)
        return int(np.count_nonzero(np.asarray(grid)))


@pytest.mark.parametrize("boxes", [
    pytest.param(None, id="default-boxes"),
    pytest.param([[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]], id="inset-boxes"),
])
def test_every_speaker_region_mask_covers_at_least_one_token_cell(tmp_path, media, boxes):
    raw = {"input_type": "image", "person_count": "multi", "image_path": media["image_path"],
           "wav_path": media["wav_path"], "wav_path_2": media["wav_path_2"], "width": 512, "height": 512}
    if boxes:
        raw["speaker_boxes"] = boxes
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(WORKFLOWS)})
    (tmp_path / "job").mkdir()
    graph = render(raw, settings, tmp_path / "job").graph
    for role in ("speaker_mask_1", "speaker_mask_2", "speaker_mask_background"):
        (_, mask), = with_role(graph, role)
        assert _token_cells_covered(mask["inputs"]["image"], 512, 512) > 0, role


# ---------------------------------------------------------------- separate_vocals: false


@pytest.mark.parametrize("kind, people, extra", CASES, ids=CASE_IDS)
def test_without_vocal_separation_the_rendered_graph_is_valid_and_feeds_the_voices_straight(
        tmp_path, media, kind, people, extra):
    raw = {**case_input(kind, people, extra, media), "separate_vocals": False}
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(WORKFLOWS)})
    job_dir = tmp_path / "job"
    job_dir.mkdir()

    plan = render(raw, settings, job_dir)

    classes = {node["class_type"] for node in plan.graph.values()}
    assert not classes & {"MelBandRoFormerSampler", "MelBandRoFormerModelLoader"}
    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    _, embeds = only(plan.graph, "MultiTalkWav2VecEmbeds")
    voices = [value for name, value in embeds["inputs"].items() if name.startswith("audio_") and name[6:].isdigit()]
    assert voices and all(source(plan.graph, link)["class_type"] == "LoadAudio" for link in voices)
    assert plan.vocal_separation is False


def test_separate_vocals_true_with_a_workflow_without_a_separator_names_the_key(tmp_path, media):
    raw = {**case_input("image", "single", {}, media), "separate_vocals": True}
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(SMOKE)})

    with pytest.raises(WorkerError, match="separate_vocals"):
        render(raw, settings, tmp_path)


def test_a_graph_that_mixes_in_the_instruments_cannot_drop_the_separator():
    graph = load("i2v_single.json")
    separator, _ = only(graph, "MelBandRoFormerSampler")
    _, embeds = only(graph, "MultiTalkWav2VecEmbeds")
    embeds["inputs"]["audio_1"] = [separator, 1]  # the instruments output

    with pytest.raises(WorkerError, match="output 1 is used"):
        remove_vocal_separation(graph)


# ---------------------------------------------------------------- presets, resolution and the other controls

KINDS_AND_PEOPLE = [(kind, people) for kind in ("image", "video") for people in ("single", "multi")]


def render_for(tmp_path, media, kind, people, extra, workflow_dir=WORKFLOWS):
    raw = {**case_input(kind, people, {}, media), **extra}
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(workflow_dir)})
    job_dir = tmp_path / f"job-{len(list(tmp_path.iterdir()))}"
    job_dir.mkdir()
    return render(raw, settings, job_dir)


@pytest.mark.parametrize("kind, people", KINDS_AND_PEOPLE)
@pytest.mark.parametrize("quality", ["fast", "balanced", "high", "reference"])
def test_every_quality_renders_a_valid_graph_with_its_documented_values(tmp_path, media, kind, people, quality):
    plan = render_for(tmp_path, media, kind, people, {"quality": quality})

    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    expected = {
        "fast": {"steps": 4 if kind == "image" else 3, "cfg": 1.0, "audio_cfg_scale": 1.0, "distill_lora": True},
        "balanced": {"steps": 6 if kind == "image" else 4, "cfg": 1.0, "audio_cfg_scale": 1.0, "distill_lora": True},
        "high": {"steps": 10 if kind == "image" else 8, "cfg": 1.0, "audio_cfg_scale": 1.0, "distill_lora": True},
        "reference": {"steps": 40, "cfg": 5.0, "shift": 7.0, "audio_cfg_scale": 4.0, "distill_lora": False},
    }[quality]
    assert {key: plan.sampling[key] for key in expected} == expected
    classes = [node["class_type"] for node in plan.graph.values()]
    assert ("WanVideoLoraSelect" in classes) is expected["distill_lora"]
    _, loader = only(plan.graph, "WanVideoModelLoader")
    assert ("lora" in loader["inputs"]) is expected["distill_lora"]


def test_reference_at_720p_uses_shift_11_and_explicit_values_beat_the_preset(tmp_path, media):
    plan = render_for(tmp_path, media, "image", "single", {"quality": "reference", "resolution": "720p"})
    assert plan.sampling["shift"] == 11.0 and plan.media.output_size == (1104, 832)  # 320x240 portrait, 4:3

    plan = render_for(tmp_path, media, "image", "single", {"quality": "reference", "steps": 20, "cfg": 3.5})
    assert (plan.sampling["steps"], plan.sampling["cfg"], plan.sampling["audio_cfg_scale"]) == (20, 3.5, 4.0)


@pytest.mark.parametrize("kind, people", KINDS_AND_PEOPLE)
@pytest.mark.parametrize("acceleration, threshold", [("teacache", None), ("magcache", 0.05), ("easycache", 0.03)])
def test_every_acceleration_links_a_cache_node_the_lock_accepts(tmp_path, media, kind, people, acceleration,
                                                               threshold):
    extra = {"acceleration": acceleration, "quality": "reference"}
    if threshold is not None:
        extra["acceleration_threshold"] = threshold
    plan = render_for(tmp_path, media, kind, people, extra)

    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    _, sampler = only(plan.graph, "WanVideoSampler")
    cache = source(plan.graph, sampler["inputs"]["cache_args"])
    name = {"teacache": "WanVideoTeaCache", "magcache": "WanVideoMagCache", "easycache": "WanVideoEasyCache"}
    assert cache["class_type"] == name[acceleration]
    assert plan.sampling["acceleration"] == acceleration
    if threshold is not None:
        assert threshold in cache["inputs"].values()


def test_colormatch_motion_frame_and_audio_guidance_reach_their_nodes(tmp_path, media):
    plan = render_for(tmp_path, media, "video", "multi",
                      {"colormatch": "hm-mkl-hm", "motion_frame": 25, "audio_cfg_scale": 3.0, "cfg": 4.0})
    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    _, windows = only(plan.graph, "WanVideoImageToVideoMultiTalk")
    _, embeds = only(plan.graph, "MultiTalkWav2VecEmbeds")
    assert (windows["inputs"]["colormatch"], windows["inputs"]["motion_frame"]) == ("hm-mkl-hm", 25)
    assert embeds["inputs"]["audio_cfg_scale"] == 3.0
    assert not any("audio_cfg_scale" in note for note in plan.warnings)


def test_settings_that_cannot_act_are_said(tmp_path, media):
    plan = render_for(tmp_path, media, "image", "single", {"audio_cfg_scale": 4.0, "acceleration": "easycache"})
    assert any("audio_cfg_scale 4 has no effect at cfg 1" in note for note in plan.warnings)
    assert any("easycache" in note and "skips nothing" in note for note in plan.warnings)


@pytest.mark.parametrize("extra, key", [
    ({"quality": "reference"}, "steps"), ({"acceleration": "teacache"}, "acceleration"),
    ({"colormatch": "mkl"}, "colormatch"),
])
def test_the_smoke_set_refuses_controls_it_has_no_place_for(tmp_path, media, extra, key):
    with pytest.raises(WorkerError, match=key):
        render_for(tmp_path, media, "image", "single", extra, SMOKE)


def test_resolution_follows_the_shape_of_the_source_video(tmp_path, media):
    plan = render_for(tmp_path, media, "video", "single", {"resolution": "480p"})  # 64x48 source
    assert plan.media.output_size == (752, 544)  # 4:3 within 1/16, the largest area under 640x640
    _, loader = only(plan.graph, "VHS_LoadVideo")
    assert (loader["inputs"]["custom_width"], loader["inputs"]["custom_height"]) == (752, 544)
    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []


# ---------------------------------------------------------------- speakers: every order, auto boxes on a photograph


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("order", ["meanwhile", "left_right", "right_left"])
def test_rendered_two_speaker_graphs_are_valid_in_every_order(tmp_path, media, kind, order):
    photo = REPO_ROOT / "tests" / "data" / "faces" / "two_off_centre.jpg"
    raw = {**case_input(kind, "multi", {}, media), "order": order}
    if kind == "image":
        raw.update(image_path=str(photo), width=960, height=288)
    settings = load_settings({"ALLOWED_INPUT_ROOTS": f"{tmp_path}:{photo.parent}", "WORKFLOW_DIR": str(WORKFLOWS)})
    (tmp_path / "job").mkdir()

    plan = render(raw, settings, tmp_path / "job")

    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    _, embeds = only(plan.graph, "MultiTalkWav2VecEmbeds")
    assert embeds["inputs"]["multi_audio_type"] == ("para" if order == "meanwhile" else "add")
    (_, first_voice), = with_role(plan.graph, "audio_1")
    assert first_voice["inputs"]["audio"] == str(plan.media.files["audio_1"])
    assert first_voice["inputs"]["audio"] == raw["wav_path_2" if order == "right_left" else "wav_path"]
    if kind == "image":
        assert plan.media.speakers.source == "auto"
