"""Facts several modules share, each written once here."""

from __future__ import annotations

#: InfiniteTalk's frame rate: one audio embedding per video frame at 25 fps, fixed by the model.
FPS = 25

#: Request keys that only shape two-speaker jobs; a single-speaker job ignores them (with a warning).
MULTI_ONLY_FIELDS = frozenset({"multi_audio_type", "speaker_boxes", "order"})

#: The shortest voice accepted: five frames' worth. Shorter audio carries no syllable to lip-sync,
#: and under one frame (0.04 s) the audio-embedding node makes no frame at all.
MIN_AUDIO_SECONDS = 5 / FPS

#: The model's pixel grid: output sides are multiples of this (VAE stride 8 x patch 2).
SIZE_MULTIPLE = 16
#: Bounds of each output side, in pixels.
MIN_SIZE, MAX_SIZE = 128, 1920
