"""Errors a job can end with; each carries the English sentence the client will read.

A message that quotes what the user sent goes through ``shown`` (or ``shown_url``), so an error never
echoes more than ``MAX_SHOWN_CHARS`` of it, however long the value is.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

#: The most characters of a user's value an error or warning repeats.
MAX_SHOWN_CHARS = 60
#: The most characters of a text from ComfyUI (an exception message, a validation detail) an error quotes.
MAX_QUOTED_CHARS = 400

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2


def shown(value: Any) -> str:
    """A user's value as a message quotes it: its repr, the middle cut out when it is long, with the length."""
    if isinstance(value, float):
        return f"{value:g}"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer too long for Python to print
        return "a number too long to show"
    if isinstance(value, str) and len(repr(value[:MAX_SHOWN_CHARS])) > MAX_SHOWN_CHARS:  # reprlib cut it
        return f"{text} ({len(value)} characters)"
    return text


def shown_url(url: str) -> str:
    """A URL as scheme://host:port/path, quoted and bounded: no credentials, no query (it may carry a signature)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return shown(f"{parts.scheme}://{host}{parts.path}" if parts.scheme or host else parts.path)


def clipped(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """Another program's text in a message: one line, the middle cut out past ``limit`` characters.

    ComfyUI's exception messages can carry whole tensors or the user's own values; the client gets the
    start (what failed) and the end (usually the reason).
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} [...] {text[-half:]}"


def english_list(items: Iterable[str], last: str = "or") -> str:
    """``a, b or c``: how a message names a choice."""
    words = list(items)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"

class WorkerError(Exception):
    """A job failure whose message is safe and useful to show to the caller."""

    #: Ask RunPod to replace this worker after the job (its ComfyUI is gone or broken).
    refresh_worker: bool = False


class InputError(WorkerError):
    """The request itself is wrong; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class WorkflowError(WorkerError):
    """The workflow set cannot serve this request (a missing role, an unknown role, bad JSON)."""


class ComfyError(WorkerError):
    """ComfyUI refused or failed the prompt."""


class ComfyUnavailableError(ComfyError):
    """ComfyUI stopped answering; the worker should be replaced."""

    refresh_worker = True


class JobTimeoutError(ComfyError):
    """The job ran past its deadline and was interrupted."""


class DeliveryError(WorkerError):
    """The finished video could not be handed back (too large, volume full, S3 refused)."""
