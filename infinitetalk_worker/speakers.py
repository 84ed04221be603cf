"""Which region of the picture each of two voices drives: the request's boxes, the faces found, or halves.

The model attends each voice to its region and everything else to the background, so a region that
misses its face makes the wrong mouth move (or a black, garbled one). ``speaker_boxes: "auto"`` puts
each region around a real face; when that is impossible the inset halves are used and the result's
``warnings`` say why, so a caller can give boxes of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .derived_media import DEFAULT_SPEAKER_BOXES
from .faces import FaceBox, faces_in_image, faces_in_video
from .request import JobRequest, region_problem

# A face box reaches from the brows to the chin; the region also needs the hair, the jaw's travel and
# the head's sway, in fractions of the face's own width and height.
GROW_SIDE, GROW_UP, GROW_DOWN = 0.5, 0.5, 0.9


@dataclass(frozen=True)
class SpeakerBoxes:
    """The two regions as used (speaker 1 first), where they came from, and what the caller must know."""

    boxes: tuple[FaceBox, FaceBox]
    source: str  # "request" | "auto" | "default"
    warning: str | None = None

    def reported(self) -> list[list[float]]:
        return [[round(v, 4) for v in box] for box in self.boxes]


def choose_speaker_boxes(request: JobRequest, picture: Path, size: tuple[int, int],
                         frames: int | None = None) -> SpeakerBoxes:
    """The request's boxes when given, else the regions around the two largest faces, else the halves.

    ``frames``: with video input, how many frames the video will have (only those are looked at).
    """
    if isinstance(request.speaker_boxes, tuple):
        return SpeakerBoxes(tuple(tuple(box) for box in request.speaker_boxes), "request")  # type: ignore[arg-type]
    if request.input_type == "image":
        faces, where = faces_in_image(picture, size), "the picture"
    else:
        faces, where = speaker_faces_over_clip(faces_in_video(picture, size, frames)), "the video's frames"
    if len(faces) < 2:
        return _halves(f"found {_count(len(faces))} in {where}")
    boxes = regions_from_faces(faces)
    problem = region_problem(boxes, size)
    if problem:
        return _halves(f"the regions around the two faces do not fit the {size[0]}x{size[1]} output ({problem})")
    return SpeakerBoxes(boxes, "auto")


def _count(n: int) -> str:
    return "no face" if n == 0 else "only one face"


def _halves(why: str) -> SpeakerBoxes:
    return SpeakerBoxes(DEFAULT_SPEAKER_BOXES, "default",  # type: ignore[arg-type]
                        f"speaker_boxes auto: {why}, so voice 1 drives the left half and voice 2 the right half "
                        "(x 5-45 % and 55-95 %); give speaker_boxes to place the speakers yourself.")


def two_largest(faces: list[FaceBox]) -> list[FaceBox]:
    """The two people who speak: the two largest faces (the nearest ones), left first."""
    largest = sorted(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]), reverse=True)[:2]
    return sorted(largest, key=lambda f: f[0])


def speaker_faces_over_clip(frames: list[list[FaceBox]]) -> list[FaceBox]:
    """Per speaker, the box covering their face in every frame looked at that shows both (left stays left).

    Frames with fewer than two faces say nothing about who is where and are skipped.
    """
    pairs = [two_largest(faces) for faces in frames if len(faces) >= 2]
    if not pairs:
        return two_largest(max(frames, key=len)) if frames else []
    return [_union([pair[index] for pair in pairs]) for index in (0, 1)]


def _union(boxes: list[FaceBox]) -> FaceBox:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def regions_from_faces(faces: list[FaceBox]) -> tuple[FaceBox, FaceBox]:
    """Regions around the two largest faces: grown to the head's motion, clipped, and never overlapping."""
    left, right = two_largest(faces)
    grown = [_grow(left), _grow(right)]
    return _separate(grown[0], grown[1], left, right)


def _grow(face: FaceBox) -> FaceBox:
    x0, y0, x1, y1 = face
    w, h = x1 - x0, y1 - y0
    return (max(0.0, x0 - GROW_SIDE * w), max(0.0, y0 - GROW_UP * h),
            min(1.0, x1 + GROW_SIDE * w), min(1.0, y1 + GROW_DOWN * h))


def _separate(a: FaceBox, b: FaceBox, face_a: FaceBox, face_b: FaceBox) -> tuple[FaceBox, FaceBox]:
    """Cut two overlapping regions where the faces are furthest apart: between them, across x or y."""
    if min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]):
        return a, b
    dx = (face_b[0] + face_b[2] - face_a[0] - face_a[2]) / 2
    dy = (face_b[1] + face_b[3] - face_a[1] - face_a[3]) / 2
    if abs(dx) >= abs(dy):  # side by side (a is the left one): cut midway between the faces' facing edges
        cut = (face_a[2] + face_b[0]) / 2
        return (a[0], a[1], min(a[2], cut), a[3]), (max(b[0], cut), b[1], b[2], b[3])
    upper, lower = (a, b) if dy > 0 else (b, a)
    face_upper, face_lower = (face_a, face_b) if dy > 0 else (face_b, face_a)
    cut = (face_upper[3] + face_lower[1]) / 2
    upper = (upper[0], upper[1], upper[2], min(upper[3], cut))
    lower = (lower[0], max(lower[1], cut), lower[2], lower[3])
    return (upper, lower) if dy > 0 else (lower, upper)
