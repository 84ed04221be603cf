"""The soundtrack and speaker masks made for two-speaker graphs."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from PIL import Image

from infinitetalk_worker.derived_media import make_soundtrack, make_speaker_masks
from testsupport.media_factory import make_wav


def test_soundtrack_para_overlays_and_add_concatenates(tmp_path):
    one, two = make_wav(tmp_path / "1.wav", 1.0), make_wav(tmp_path / "2.wav", 0.5, rate=22050, frequency=440)
    for mode, expected in (("para", 1.0), ("add", 1.5)):
        out = make_soundtrack([one, two], mode, tmp_path / f"{mode}.wav")
        with wave.open(str(out)) as track:
            assert track.getnchannels() == 2
            assert track.getnframes() / track.getframerate() == pytest.approx(expected, abs=0.01)


def test_speaker_masks_cover_their_boxes_and_the_background_the_rest(tmp_path):
    files = make_speaker_masks(((0.0, 0.0, 0.5, 1.0), (0.5, 0.25, 1.0, 0.75)), (64, 32), tmp_path)
    first, second, background = (np.asarray(Image.open(files[k]).convert("L")) > 127 for k in
                                 ("speaker_mask_1", "speaker_mask_2", "speaker_mask_background"))
    assert first.shape == (32, 64)
    assert first[:, :32].all() and not first[:, 32:].any()
    assert second[8:24, 32:].all() and not second[:8].any()
    assert (first | second | background).all() and not (background & (first | second)).any()
