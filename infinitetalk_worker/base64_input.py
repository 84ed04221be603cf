"""``*_base64`` inputs: Base64 text (optionally a ``data:`` URI) decoded to disk in bounded chunks."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from .config import Settings
from .errors import InputError, shown

BASE64_CHUNK_CHARS = 4 * (1 << 20)
DATA_URI_FAMILIES = {"image": ("image",), "video": ("video", "image/gif"), "audio": ("audio", "video")}
BASE64_CLEANUP = str.maketrans("-_", "+/", " \t\n\r\v\f")  # URL-safe to standard, whitespace out
NOT_STANDARD_BASE64 = re.compile(r"[-_\s]")


def decode_base64(key: str, value: str, kind: str, target: Path, settings: Settings) -> None:
    """Decode Base64 (optionally a data URI) to disk in chunks, so a large input is never copied whole.

    Line breaks, the URL-safe alphabet and missing padding are cleaned up chunk by chunk as well: a
    clean-up of the whole string would copy it (and, for line breaks, split it into one string per line).
    """
    payload = _strip_data_uri(key, value, kind)
    if len(payload) > settings.max_base64_bytes:
        raise InputError(key, f"is {len(payload)} characters, over the {settings.max_base64_bytes}-character limit.")
    carry = ""  # the characters of the last chunk that do not make a whole 4-character group yet
    try:
        with open(target, "wb") as sink:
            for start in range(0, len(payload), BASE64_CHUNK_CHARS):
                chunk = carry + _standard_base64(payload[start : start + BASE64_CHUNK_CHARS])
                whole = len(chunk) - len(chunk) % 4
                sink.write(base64.b64decode(chunk[:whole], validate=True))
                carry = chunk[whole:]
            if carry:
                sink.write(base64.b64decode(carry + "=" * (-len(carry) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise InputError(key, "is not valid Base64.") from None


def _standard_base64(chunk: str) -> str:
    """A chunk without whitespace, in the standard alphabet ('-' and '_' become '+' and '/')."""
    return chunk.translate(BASE64_CLEANUP) if NOT_STANDARD_BASE64.search(chunk) else chunk


def _strip_data_uri(key: str, value: str, kind: str) -> str:
    if not value.startswith("data:"):
        return value
    header, comma, payload = value.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InputError(key, "is a data URI without ';base64,'; send the file's bytes as Base64.")
    mime = header[5:].split(";")[0].strip().lower()
    accepted = DATA_URI_FAMILIES[kind]
    if mime and mime != "application/octet-stream" and not mime.startswith(accepted):
        raise InputError(key, f"the data URI says {shown(mime)}, but this field takes {kind} data.")
    return payload
