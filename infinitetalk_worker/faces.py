"""Faces in the picture, so that each voice of a two-speaker job drives a real face.

OpenCV's frontal-face Haar cascade does the finding: its model file ships inside the ``opencv-python``
wheel (``cv2.data``), which the image installs anyway for the nodes, so nothing is downloaded at run
time, and on a picture scaled to 640 pixels it takes about a tenth of a second on one CPU core.
docs/face-detection.md says why this detector and how it compares.

Boxes are in 0..1 of the picture *as the graph sees it*: centre-cropped to the output's aspect ratio,
like the workflows crop it (README: "The picture is centre-cropped to this aspect ratio").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import av.video.reformatter
import cv2
import numpy as np
from PIL import Image, ImageOps

from .constants import FPS

FaceBox = tuple[float, float, float, float]  # x0, y0, x1, y1 in 0..1

DETECT_SIDE = 640  # the cascade runs on the picture scaled to this long side: fast and size-independent
MIN_NEIGHBOURS = 5
MIN_FACE_FRACTION = 1 / 20  # of the short side: smaller finds are texture, not a face that could speak
NESTED_FRACTION = 0.15  # a find overlapping a larger one by this much of its own area is part of that face
VIDEO_SAMPLES = 8  # frames looked at across a source video

_CASCADE: cv2.CascadeClassifier | None = None


def _cascade() -> cv2.CascadeClassifier:
    """Loaded once per process (a few milliseconds, but jobs should not repeat it)."""
    global _CASCADE
    if _CASCADE is None:
        _CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if _CASCADE.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml could not be loaded.")
    return _CASCADE


def find_faces(picture: Image.Image) -> list[FaceBox]:
    """The faces in one picture, left to right, as 0..1 boxes of that picture."""
    scale = min(1.0, DETECT_SIDE / max(picture.size))
    small = picture.convert("L") if picture.mode != "L" else picture
    if scale < 1.0:
        small = small.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    grey = np.asarray(small)
    height, width = grey.shape
    side = max(24, int(min(width, height) * MIN_FACE_FRACTION))
    found = _cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=MIN_NEIGHBOURS, minSize=(side, side))
    boxes = [(float(x) / width, float(y) / height, float(x + w) / width, float(y + h) / height)
             for x, y, w, h in np.asarray(found).reshape(-1, 4)]
    return sorted(_drop_nested(boxes), key=lambda box: box[0])


def _drop_nested(boxes: list[FaceBox]) -> list[FaceBox]:
    """Faces do not overlap: a find that lies largely on a larger one (a chin, a collar) is not a face."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=_area, reverse=True):
        if all(_intersection(box, other) < NESTED_FRACTION * _area(box) for other in kept):
            kept.append(box)
    return kept


def _area(box: FaceBox) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a: FaceBox, b: FaceBox) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def crop_to_aspect(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The part of the picture the graph keeps for an output of ``size`` (centre crop, never a stretch)."""
    return ImageOps.fit(picture, size, method=Image.Resampling.BILINEAR) if picture.size != size else picture


def faces_in_image(path: Path, size: tuple[int, int]) -> list[FaceBox]:
    """Faces of a portrait as the output of ``size`` shows it (EXIF rotation applied, as the probe does)."""
    with Image.open(path) as image:
        picture = ImageOps.exif_transpose(image).convert("L")  # grey is all the cascade reads
    return find_faces(crop_to_aspect(picture, size))


def faces_in_video(path: Path, size: tuple[int, int], frames: int | None = None,
                   samples: int = VIDEO_SAMPLES) -> list[list[FaceBox]]:
    """Faces in ``samples`` frames spread over the part of the clip the video is made of (its first
    ``frames`` at the graph's 25 fps; all of it when None), one left-to-right list per frame looked at."""
    seconds = None if frames is None else frames / FPS
    return [find_faces(crop_to_aspect(frame, size)) for frame in _spread_frames(path, samples, seconds)]


def _spread_frames(path: Path, samples: int, seconds: float | None) -> Iterator[Image.Image]:
    """Evenly spaced frames of the first video stream's first ``seconds`` in grey (all the cascade reads),
    decoded in one pass (no seeking: any codec works). One reformatter keeps FFmpeg's scaler set up across
    the frames: ``to_image`` builds a new one per frame, which cost more than decoding the clip."""
    grey = av.video.reformatter.VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or _count_packets(container, stream)
        if seconds is not None and stream.average_rate:
            total = min(total, max(1, math.ceil(seconds * float(stream.average_rate))))
        wanted = {round(i * (max(total, 1) - 1) / max(samples - 1, 1)) for i in range(samples)}
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                yield Image.fromarray(grey.reformat(frame, format="gray").to_ndarray())
            if index >= max(wanted):
                break


def _count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frames of a stream whose header has no count (WebM, some MKV): its packets, read without decoding."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count
