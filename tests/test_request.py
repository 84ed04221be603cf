"""The request model: the original worker's keys and defaults, strict checks, English errors naming fields."""

from __future__ import annotations

import pytest

from infinitetalk_worker.errors import InputError
from infinitetalk_worker.request import DEFAULT_PROMPT, is_probe, parse_request

BASE = {"image_path": "/runpod-volume/face.png", "wav_path": "/runpod-volume/voice.wav"}


def parse(**changes):
    return parse_request({**BASE, **changes}, max_prompt_chars=100)


def test_defaults_match_the_original_worker():
    request = parse()
    assert (request.input_type, request.person_count, request.prompt) == ("image", "single", DEFAULT_PROMPT)
    assert (request.width, request.height, request.force_offload, request.network_volume) == (512, 512, True, False)
    assert request.seed is None and request.output is None


@pytest.mark.parametrize("field,value,message", [
    ("input_type", "vid", "input_type: 'vid' is not allowed; it must be 'image' or 'video'."),
    ("person_count", "three", "person_count: 'three' is not allowed; it must be 'single' or 'multi'."),
    ("width", 5000, "width: 5000 is out of range; it must be less than or equal to 1920."),
    ("height", "tall", "height: must be a whole number."),
    ("width", True, "width: must be a whole number, not a boolean."),
    ("force_offload", "no", 'force_offload: must be true or false (a JSON boolean or the string "true"/"false").'),
    ("network_volume", 1, 'network_volume: must be true or false (a JSON boolean or the string "true"/"false").'),
    ("seed", -1, "seed: -1 is out of range; it must be greater than or equal to 0."),
    ("cfg", "lots", "cfg: must be a number."),
    ("output", "email", "output: 'email' is not allowed; it must be 'base64', 'volume' or 's3'."),
])
def test_each_violation_is_one_sentence_naming_the_field(field, value, message):
    with pytest.raises(InputError) as caught:
        parse(**{field: value})
    assert str(caught.value) == message
    assert caught.value.field == field


def test_string_booleans_are_read_as_written():
    assert parse(force_offload="false").force_offload is False
    assert parse(network_volume="true").network_volume is True


def test_sizes_round_to_the_16_pixel_grid_and_digit_strings_are_numbers():
    assert parse(width=650, height="641").rounded_size == (656, 640)


def test_missing_required_inputs_name_the_accepted_keys():
    with pytest.raises(InputError, match="^wav_path: one of wav_path, wav_url or wav_base64 is required"):
        parse_request({"image_path": "/x.png"}, 100)
    with pytest.raises(InputError, match="^video_path: .* required when input_type is 'video'"):
        parse(input_type="video")
    with pytest.raises(InputError, match="^wav_path_2: .* required when person_count is 'multi'"):
        parse(person_count="multi")


def test_blank_sources_count_as_missing_never_as_a_fallback():
    with pytest.raises(InputError, match="^image_path: one of"):
        parse(image_path="  ")


def test_two_sources_for_one_slot_is_an_error():
    expected = "give exactly one of image_path, image_url, image_base64, not image_path and image_base64"
    with pytest.raises(InputError, match=expected):
        parse(image_base64="aGVsbG8=")


def test_speaker_boxes_are_checked():
    boxes = [[0, 0, 0.4, 1], [0.6, 0, 1, 1]]
    assert parse(person_count="multi", wav_path_2="/v2.wav", speaker_boxes=boxes).speaker_boxes[1] == (0.6, 0, 1, 1)
    with pytest.raises(InputError, match="speaker_boxes: box 1 must have coordinates between 0 and 1"):
        parse(speaker_boxes=[[0, 0, 1.5, 1], [0, 0, 1, 1]])
    with pytest.raises(InputError, match="^speaker_boxes"):
        parse(speaker_boxes=[[0, 0, 1, 1]])


def test_prompt_limit_and_control_characters():
    assert parse(prompt="a\x00b\tc").prompt == "a b\tc"
    with pytest.raises(InputError, match="prompt: is 101 characters long; the limit is 100."):
        parse(prompt="x" * 101)


def test_unknown_and_unused_keys_come_back_as_warnings():
    request = parse(imagepath="/typo.png", video_url="http://x/v.mp4", multi_audio_type="add")
    assert request.warnings() == [
        "Unknown key 'imagepath' was ignored; did you mean image_path?",
        "video_url was ignored: this job does not use a video input.",
        "multi_audio_type was ignored: it applies to two-speaker jobs only.",
    ]


def test_input_must_be_an_object():
    with pytest.raises(InputError, match="^input: the job input must be a JSON object."):
        parse_request(["image_path"], 100)


def test_speaker_regions_must_cover_a_cell_and_leave_background():
    multi = {"person_count": "multi", "wav_path_2": "/v2.wav", "width": 256, "height": 256}
    expected = "speaker_boxes: box 2 is too small: it must cover at least one 16x16-pixel cell"
    with pytest.raises(InputError, match=expected):
        parse(**multi, speaker_boxes=[[0, 0, 0.5, 1], [0.9, 0.5, 0.91, 0.51]])
    with pytest.raises(InputError, match="speaker_boxes: the two boxes cover the whole picture"):
        parse(**multi, speaker_boxes=[[0, 0, 0.5, 1], [0.5, 0, 1, 1]])


def test_video_jobs_need_three_steps_or_more():
    video = {"input_type": "video", "video_path": "/v.mp4"}
    with pytest.raises(InputError, match="steps: must be at least 3 for video input"):
        parse(**video, steps=2)
    assert parse(**video, steps=3).steps == 3


def test_several_range_errors_read_as_one_sentence_per_field():
    with pytest.raises(InputError) as caught:
        parse(width=5000, height=90)
    assert str(caught.value) == (
        "width: 5000 is out of range; it must be less than or equal to 1920. "
        "height: 90 is out of range; it must be greater than or equal to 128."
    )
    assert caught.value.field == "width"


@pytest.mark.parametrize("typo,meant,slot_keys", [
    ("wavurl", "wav_url", "wav_path, wav_url or wav_base64"),
    ("WAV_URL", "wav_url", "wav_path, wav_url or wav_base64"),
    ("image-base64", "image_base64", "image_path, image_url or image_base64"),
    ("wav_url2", "wav_url_2", "wav_path_2, wav_url_2 or wav_base64_2"),
])
def test_a_misspelt_key_that_leaves_an_input_missing_is_named(typo, meant, slot_keys):
    raw = {"image_path": "/face.png", "wav_path": "/voice.wav", "person_count": "multi"}
    raw.pop(meant.replace("url", "path").replace("base64", "path"), None)
    with pytest.raises(InputError) as caught:
        parse_request({**raw, typo: "https://example.com/x"}, 100)
    assert f"one of {slot_keys} is required" in str(caught.value)
    assert str(caught.value).endswith(f"the unknown key {typo!r} was ignored: did you mean {meant}?")


def test_a_missing_input_with_no_similar_key_says_nothing_more():
    with pytest.raises(InputError) as caught:
        parse_request({"image_path": "/face.png", "guidance": 7}, 100)
    assert str(caught.value) == ("wav_path: one of wav_path, wav_url or wav_base64 is required, or text (or dialogue) "
                                 "for the worker to speak.")


def test_echoed_values_are_bounded_however_long():
    with pytest.raises(InputError) as caught:
        parse(input_type="x" * 5000)
    message = str(caught.value)
    assert len(message) < 200 and "(5000 characters)" in message
    request = parse(**{"k" * 5000: 1})
    assert all(len(note) < 200 for note in request.warnings())


@pytest.mark.parametrize("value", [True, "true", "True", " TRUE "])
def test_every_value_the_model_reads_as_true_is_the_probe(value):
    assert is_probe({"test": value})
    assert parse(test=value).test is True


@pytest.mark.parametrize("value", [False, "false", "False", None, "yes", 1])
def test_other_test_values_are_not_the_probe(value):
    assert not is_probe({"test": value})
    assert not is_probe(["test"]) and not is_probe({})


def test_the_key_that_asked_for_the_volume_is_the_one_named():
    assert parse(network_volume=True).destination == ("volume", "network_volume")
    assert parse(output="volume").destination == ("volume", "output")
    assert parse(network_volume=True, output="base64").destination == ("base64", "output")
    assert parse().destination == ("base64", "output")


@pytest.mark.parametrize("boxes", [[[0, 0, 1, 1]], "left", [[0, 0, 1], [0, 0, 1, 1]], [[0, 0, 1, 1], 5]])
def test_speaker_boxes_of_the_wrong_shape_say_what_to_send(boxes):
    with pytest.raises(InputError) as caught:
        parse(person_count="multi", wav_path_2="/runpod-volume/voice2.wav", speaker_boxes=boxes)
    assert str(caught.value) == 'speaker_boxes: must be "auto" or two boxes, [[x0, y0, x1, y1], [x0, y0, x1, y1]].'


@pytest.mark.parametrize("changes, field, message", [
    ({"quality": "ultra"}, "quality",
     "quality: 'ultra' is not allowed; it must be 'fast', 'balanced', 'high' or 'reference'."),
    ({"resolution": "1080p"}, "resolution", "resolution: '1080p' is not allowed; it must be '480p', '720p', "
                                            "'infinitetalk-480' or 'infinitetalk-720'."),
    ({"resolution": "480p", "width": 640}, "width",
     "width: is given without height; with resolution give both width and height or neither."),
    ({"motion_frame": 81}, "motion_frame", "motion_frame: 81 is out of range; it must be less than or equal to 80."),
    ({"motion_frame": "nine"}, "motion_frame", "motion_frame: must be a whole number."),
    ({"colormatch": "sepia"}, "colormatch", "colormatch: 'sepia' is not allowed; it must be 'disabled', 'mkl', "
                                            "'hm', 'reinhard', 'mvgd', 'hm-mvgd-hm' or 'hm-mkl-hm'."),
    ({"audio_cfg_scale": 101}, "audio_cfg_scale",
     "audio_cfg_scale: 101 is out of range; it must be less than or equal to 100."),
    ({"acceleration": "warp"}, "acceleration", "acceleration: 'warp' is not allowed; it must be 'none', "
                                               "'teacache', 'magcache' or 'easycache'."),
    ({"acceleration_threshold": 0.1}, "acceleration_threshold",
     "acceleration_threshold: is given but acceleration is 'none'; choose one of teacache, magcache or easycache."),
    ({"acceleration": "magcache", "acceleration_threshold": 0.5}, "acceleration_threshold",
     "acceleration_threshold: 0.5 is out of range; magcache takes at most 0.3."),
])
def test_the_new_controls_refuse_bad_values_naming_the_key(changes, field, message):
    with pytest.raises(InputError) as caught:
        parse(**changes)
    assert str(caught.value) == message and caught.value.field == field


def test_resolution_with_both_sides_given_is_not_used_and_says_so():
    request = parse(resolution="720p", width=640, height=368)
    assert not request.size_from_input and request.rounded_size == (640, 368)
    assert "resolution 720p was not used: the explicit width and height win." in request.warnings()
    assert parse(resolution="infinitetalk-480").size_from_input


# ---------------------------------------------------------------- speakers: auto boxes, order, one speaker

MULTI = {**BASE, "person_count": "multi", "wav_path_2": "/runpod-volume/voice2.wav"}


def test_two_speaker_jobs_find_the_faces_unless_boxes_are_given():
    assert parse_request(MULTI, 100).speaker_boxes == "auto"
    assert parse_request({**MULTI, "speaker_boxes": "auto"}, 100).speaker_boxes == "auto"


@pytest.mark.parametrize("boxes, message", [
    ([[0, 0, 1.5, 1], [0.5, 0, 1, 1]], "speaker_boxes: box 1 must have coordinates between 0 and 1."),
    ([[0, 0, 0.4, 1], [0.5, -0.1, 1, 1]], "speaker_boxes: box 2 must have coordinates between 0 and 1."),
    ("faces", 'speaker_boxes: must be "auto" or two boxes, [[x0, y0, x1, y1], [x0, y0, x1, y1]].'),
])
def test_hostile_speaker_boxes_are_refused_by_name(boxes, message):
    with pytest.raises(InputError) as caught:
        parse_request({**MULTI, "speaker_boxes": boxes}, 100)
    assert str(caught.value) == message


@pytest.mark.parametrize("order, mode, swapped", [("meanwhile", "para", False), ("left_right", "add", False),
                                                  ("right_left", "add", True)])
def test_order_sets_the_timeline_and_who_speaks_first(order, mode, swapped):
    request = parse_request({**MULTI, "order": order}, 100)
    assert (request.audio_mode, request.voices_swapped) == (mode, swapped)
    agreeing = parse_request({**MULTI, "order": order, "multi_audio_type": mode}, 100)
    assert (agreeing.audio_mode, agreeing.voices_swapped) == (mode, swapped)


def test_multi_audio_type_alone_works_as_before():
    request = parse_request({**MULTI, "multi_audio_type": "add"}, 100)
    assert (request.audio_mode, request.voices_swapped) == ("add", False)


@pytest.mark.parametrize("order, mode", [("meanwhile", "add"), ("left_right", "para"), ("right_left", "para")])
def test_an_order_contradicting_multi_audio_type_is_an_error(order, mode):
    with pytest.raises(InputError) as caught:
        parse_request({**MULTI, "order": order, "multi_audio_type": mode}, 100)
    assert str(caught.value).startswith(f"order: '{order}' contradicts multi_audio_type '{mode}'")


def test_an_unknown_order_is_refused():
    with pytest.raises(InputError) as caught:
        parse_request({**MULTI, "order": "top_down"}, 100)
    assert str(caught.value).startswith("order: 'top_down' is not allowed; it must be 'meanwhile', 'left_right'")


@pytest.mark.parametrize("raw", [{**BASE, "speaker": 2}, {**MULTI, "speaker": 1}, {**BASE, "speaker": 99},
                                 {**BASE, "speaker_boxes": [[0.1, 0.1, 0.4, 0.6]]}])
def test_one_speaker_among_many_is_refused_because_the_nodes_cannot_do_it(raw):
    with pytest.raises(InputError) as caught:
        parse_request(raw, 100)
    assert "one speaker among several cannot be chosen: with one voice the pinned WanVideoWrapper (6b286552) " \
           "ignores the speaker masks" in str(caught.value)
    assert str(caught.value).split(":")[0] in ("speaker", "speaker_boxes")


def test_order_on_a_one_voice_job_is_ignored_with_a_warning():
    assert "order was ignored: it applies to two-speaker jobs only." in parse_request({**BASE, "order": "meanwhile"},
                                                                                       100).warnings()
