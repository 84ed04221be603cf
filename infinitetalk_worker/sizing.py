"""The output size: explicit ``width``/``height``, or a resolution bucket in the input's aspect ratio.

The reference implementation (``--size infinitetalk-480|720``) and the hosted APIs (``resolution:
480p|720p``) pick the size from an area bucket and the input picture's shape, so a portrait photo
gives a portrait video without the caller working out pixel counts. The model works on a 16-pixel
grid, so every candidate is a multiple of 16.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import SIZE_MULTIPLE

#: bucket name -> the area (in pixels) the size may not exceed, as the reference implementation's buckets.
BUCKET_AREAS: dict[str, int] = {"480p": 640 * 640, "720p": 960 * 960}
#: the reference implementation's names for the same buckets
BUCKET_ALIASES: dict[str, str] = {"infinitetalk-480": "480p", "infinitetalk-720": "720p"}
#: how far the output's aspect ratio may stray from the input's, relative
ASPECT_TOLERANCE = 1 / 16


@dataclass(frozen=True)
class SizeChoice:
    """The size to generate and, when it is not what the caller might expect, a warning saying why."""

    width: int
    height: int
    warning: str | None = None


def bucket_name(resolution: str) -> str:
    """``480p``/``720p`` for either spelling."""
    return BUCKET_ALIASES.get(resolution, resolution)


def bucket_size(resolution: str, source: tuple[int, int], low: int, high: int) -> SizeChoice:
    """The largest 16-multiple size with area at most the bucket's and the source's aspect ratio (within 1/16).

    ``low``/``high`` bound each side (the request's size limits). When no size within the tolerance
    fits those bounds (an extreme panorama), the closest ratio that fits is taken and said.
    """
    area = BUCKET_AREAS[bucket_name(resolution)]
    ratio = source[0] / source[1]
    candidates = [(w, h) for w in range(low, high + 1, SIZE_MULTIPLE)
                  for h in [_largest_height(area, w, low, high)] if h]
    within = [(w, h) for w, h in candidates if abs(w / h - ratio) / ratio <= ASPECT_TOLERANCE]
    if within:
        width, height = max(within, key=lambda s: (s[0] * s[1], -abs(s[0] / s[1] - ratio)))
        return SizeChoice(width, height)
    every = [(w, h) for w in range(low, high + 1, SIZE_MULTIPLE) for h in range(low, high + 1, SIZE_MULTIPLE)
             if w * h <= area]
    width, height = min(every, key=lambda s: (abs(s[0] / s[1] - ratio) / ratio, -s[0] * s[1]))
    return SizeChoice(width, height, f"The input's aspect ratio {source[0]}x{source[1]} is outside the sizes "
                                     f"the worker makes; resolution {resolution} gave the closest, {width}x{height}.")


def _largest_height(area: int, width: int, low: int, high: int) -> int | None:
    """The tallest 16-multiple height within bounds that keeps ``width x height`` within ``area``."""
    height = min(high, area // width // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return height if height >= low else None


def bucket_of(width: int, height: int) -> str:
    """The bucket an explicit size is nearest to by area (for settings that differ by resolution)."""
    return min(BUCKET_AREAS, key=lambda name: abs(BUCKET_AREAS[name] - width * height))
