"""Fetch the model files of ``workflows/models.json``: parallel, resumable, verified, idempotent.

It runs when the image is built with ``BAKE_MODELS=true`` and by hand to fill a network volume;
the worker never downloads a model while a job runs. A file counts as present only once its size
and SHA-256 (from the manifest, else the hash Hugging Face reports for LFS files) have been checked;
the result is remembered in ``.verified.json`` beside the files, so the next run skips a 14 GB file
without reading it again. Where the manifest gives no SHA-256 (or size), the first verified download
records the file's in ``.recorded-hashes.json`` beside the files; from then on a file that differs from
that record is refused, exactly as one that differs from the manifest. Downloads go to ``<name>.part``
and resume from there with HTTP Range requests; a file that fails verification is deleted, never left
under its final name.

This module depends only on the standard library, requests and tqdm, so the Dockerfile can run it
as a plain script in a layer that no change to the rest of the worker invalidates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from tqdm import tqdm

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT / "workflows" / "models.json"
CACHE_NAME = ".verified.json"
RECORD_NAME = ".recorded-hashes.json"
PART_SUFFIX = ".part"
CHUNK_BYTES = 256 * 1024  # small enough that a dropped connection loses little
HASH_BLOCK_BYTES = 16 * 1024 * 1024
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
HUGGING_FACE_HOSTS = ("huggingface.co", "hf.co")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# Folders of files the worker itself reads, not ComfyUI (text to speech, infinitetalk_worker/speech.py): no
# workflow names them, and they are downloaded whichever workflows are selected.
WORKER_FOLDERS = frozenset({"kokoro"})


class ModelDownloadError(RuntimeError):
    """A manifest entry could not be fetched or verified; the message names the file and the step."""


class TransientDownloadError(ModelDownloadError):
    """A failure worth another try (connection dropped, server busy); the .part file is kept."""


class StaleRangeError(TransientDownloadError):
    """The server refused to resume (HTTP 416): the .part file belongs to another version; start over."""


@dataclass(frozen=True)
class ModelEntry:
    """One manifest row: where the file goes and what it must be."""

    file: str
    folder: str
    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def relative_path(self) -> Path:
        return Path(self.folder) / self.file


@dataclass(frozen=True)
class Expected:
    """What a file must look like; either part may be unknown until the server tells us."""

    sha256: str | None
    size: int | None


# ---------------------------------------------------------------- manifest and selection


def load_manifest(path: Path) -> list[ModelEntry]:
    """Read and check the manifest, so a typo fails before anything is downloaded."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelDownloadError(f"Model manifest {path} cannot be read: {exc.strerror}.") from exc
    except json.JSONDecodeError as exc:
        raise ModelDownloadError(f"Model manifest {path} is not valid JSON: {exc}.") from exc
    if not isinstance(rows, list):
        raise ModelDownloadError(f"Model manifest {path} must be a JSON list of objects.")
    return [_entry(row, index, path) for index, row in enumerate(rows)]


def _entry(row: Any, index: int, manifest: Path) -> ModelEntry:
    where = f"Model manifest {manifest}, entry {index}"
    if not isinstance(row, dict):
        raise ModelDownloadError(f"{where} must be an object with file, folder and url.")
    for key in ("file", "folder", "url"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ModelDownloadError(f"{where}: '{key}' must be a non-empty string.")
    for key in ("file", "folder"):
        parts = Path(row[key]).parts
        if Path(row[key]).is_absolute() or ".." in parts:
            raise ModelDownloadError(f"{where}: '{key}' must be a relative path without '..'.")
    sha = row.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not SHA256_PATTERN.match(sha.lower())):
        raise ModelDownloadError(f"{where} ({row['file']}): 'sha256' must be 64 hexadecimal digits.")
    size = row.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ModelDownloadError(f"{where} ({row['file']}): 'size' must be a positive whole number.")
    return ModelEntry(row["file"], row["folder"], row["url"], sha.lower() if sha else None, size)


def names_used_by_workflows(workflow_dir: Path) -> set[str]:
    """Every string input of every API-format graph in ``workflow_dir``: the model names they load.

    The graphs are read here, not through ``node_lock.load_graph`` (the worker's one graph reader),
    because the image build runs this file alone, without the package.
    """
    graphs = [p for p in sorted(workflow_dir.glob("*.json")) if p.name != "models.json"]
    names: set[str] = set()
    for path in graphs:
        try:
            graph = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelDownloadError(f"Workflow {path} cannot be read as JSON: {exc}.") from exc
        if not isinstance(graph, dict):
            continue
        for node in graph.values():
            if isinstance(node, dict) and "class_type" in node and isinstance(node.get("inputs"), dict):
                names.update(v.replace("\\", "/") for v in node["inputs"].values() if isinstance(v, str))
    if not names:
        raise ModelDownloadError(f"No API-format workflow with string inputs was found in {workflow_dir}.")
    return names


def select_used(entries: list[ModelEntry], workflow_dir: Path) -> list[ModelEntry]:
    """The manifest rows whose file name a workflow in ``workflow_dir`` names, and the worker's own files."""
    used = names_used_by_workflows(workflow_dir)
    return [entry for entry in entries if entry.file.replace("\\", "/") in used or entry.folder in WORKER_FOLDERS]


# ---------------------------------------------------------------- verified-hash cache


class VerifiedCache:
    """Remembers (size, mtime, sha256) of files already checked, so re-runs need not re-hash them."""

    def __init__(self, models_dir: Path) -> None:
        self.path = models_dir / CACHE_NAME
        self._lock = threading.Lock()
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self._records: dict[str, dict[str, Any]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, json.JSONDecodeError):
            self._records = {}

    def matches(self, entry: ModelEntry, dest: Path) -> bool:
        """True when ``dest`` is unchanged since it was verified against what the manifest asks now."""
        record = self._records.get(entry.relative_path.as_posix())
        try:
            stat = dest.stat()
        except OSError:
            return False
        if not record or record.get("size") != stat.st_size or record.get("mtime_ns") != stat.st_mtime_ns:
            return False
        if entry.size is not None and entry.size != stat.st_size:
            return False
        return entry.sha256 is None or record.get("sha256") == entry.sha256

    def record(self, entry: ModelEntry, dest: Path, sha256: str | None) -> None:
        stat = dest.stat()
        with self._lock:
            self._records[entry.relative_path.as_posix()] = {
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256,
            }
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(json.dumps(self._records, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.path)


class RecordedHashes:
    """SHA-256 and size of files the manifest does not pin, as first downloaded; later files must match."""

    def __init__(self, models_dir: Path) -> None:
        self.path = models_dir / RECORD_NAME
        self._lock = threading.Lock()
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self._records: dict[str, dict[str, Any]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, json.JSONDecodeError):
            self._records = {}

    def expected(self, entry: ModelEntry) -> Expected:
        """The manifest's values, completed from the record (the manifest wins where it has a value)."""
        record = self._records.get(entry.relative_path.as_posix(), {})
        if record.get("url") not in (None, entry.url):
            record = {}  # the manifest now points at another file: its first download is recorded anew
        sha = record.get("sha256") if isinstance(record.get("sha256"), str) else None
        size = record.get("size") if isinstance(record.get("size"), int) else None
        return Expected(entry.sha256 or sha, entry.size or size)

    def record(self, entry: ModelEntry, sha256: str, size: int) -> None:
        """Keep the first verified values of a file the manifest leaves open; never overwrite them."""
        key = entry.relative_path.as_posix()
        if entry.sha256 and entry.size:
            return
        with self._lock:
            if self._records.get(key, {}).get("url") == entry.url:
                return
            self._records[key] = {"url": entry.url, "sha256": sha256, "size": size}
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(json.dumps(self._records, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.path)
        log.info("%s: recorded SHA-256 %s and %d bytes in %s; a later download must match them.",
                 entry.relative_path, sha256, size, self.path)


# ---------------------------------------------------------------- downloading


def auth_headers(url: str, token: str | None) -> dict[str, str]:
    """The Hugging Face token goes to Hugging Face only, never to another host in the manifest."""
    host = (urlparse(url).hostname or "").lower()
    if token and any(host == h or host.endswith("." + h) for h in HUGGING_FACE_HOSTS):
        return {"Authorization": f"Bearer {token}"}
    return {}


def remote_expectation(session: requests.Session, url: str, headers: dict[str, str], timeout: float) -> Expected:
    """What the hub says about a file: HF answers a resolve URL with X-Linked-Etag (sha256) and X-Linked-Size."""
    try:
        response = session.head(url, headers=headers, allow_redirects=False, timeout=timeout)
    except requests.RequestException as exc:
        log.warning("Could not ask %s for its hash: %s", url, exc)
        return Expected(None, None)
    etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or ""
    etag = etag.removeprefix("W/").strip('"').lower()
    size_text = response.headers.get("X-Linked-Size")
    if size_text is None and response.status_code == 200:
        size_text = response.headers.get("Content-Length")
    size = int(size_text) if size_text and size_text.isdigit() and int(size_text) > 0 else None
    return Expected(etag if SHA256_PATTERN.match(etag) else None, size)


class Downloader:
    """Makes each manifest entry present and verified under ``models_dir``; safe to call from threads."""

    def __init__(
        self,
        models_dir: Path,
        progress: tqdm,
        token: str | None = None,
        retries: int = 4,
        retry_wait_s: float = 2.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.models_dir = models_dir
        self.progress = progress
        self.token = token
        self.retries = retries
        self.retry_wait_s = retry_wait_s
        self.timeout_s = timeout_s
        self.cache = VerifiedCache(models_dir)
        self.recorded = RecordedHashes(models_dir)
        self._progress_lock = threading.Lock()
        self._reported: dict[Path, int] = {}

    def ensure(self, entry: ModelEntry) -> str:
        """Return what was done: "skipped" (verified earlier), "verified" (found good) or "downloaded"."""
        dest = self.models_dir / entry.relative_path
        pinned = self.recorded.expected(entry)
        if self.cache.matches(ModelEntry(entry.file, entry.folder, entry.url, pinned.sha256, pinned.size), dest):
            log.info("%s: already verified, skipped.", entry.relative_path)
            self._report(entry, dest.stat().st_size, entry.size)
            return "skipped"
        with requests.Session() as session:
            expected = self._expectation(session, entry)
            if dest.is_file() and self._existing_file_is_good(entry, dest, expected):
                self._report(entry, dest.stat().st_size, expected.size)
                return "verified"
            self._download(session, entry, dest, expected)
        return "downloaded"

    def _expectation(self, session: requests.Session, entry: ModelEntry) -> Expected:
        """The manifest's values, else the first download's record, else what the hub says."""
        pinned = self.recorded.expected(entry)
        if pinned.sha256 and pinned.size:
            return pinned
        remote = remote_expectation(session, entry.url, auth_headers(entry.url, self.token), self.timeout_s)
        return Expected(pinned.sha256 or remote.sha256, pinned.size or remote.size)

    def _existing_file_is_good(self, entry: ModelEntry, dest: Path, expected: Expected) -> bool:
        """A file put there by hand or by an older run is kept when it verifies; otherwise replaced."""
        size = dest.stat().st_size
        if expected.size is not None and size != expected.size:
            log.warning("%s: has %d bytes, expected %d; downloading it again.",
                        entry.relative_path, size, expected.size)
            return False
        if expected.sha256 is None and expected.size is None:
            return False
        digest = self._hash_file(dest, f"verify {entry.file}")
        if expected.sha256 and digest != expected.sha256:
            log.warning("%s: SHA-256 is not the expected one; downloading it again.", entry.relative_path)
            return False
        self.cache.record(entry, dest, digest)
        if expected.sha256 is None:
            self.recorded.record(entry, digest, size)
        log.info("%s: present and verified%s.", entry.relative_path, "" if expected.sha256 else " (by size only)")
        return True

    def _download(self, session: requests.Session, entry: ModelEntry, dest: Path, expected: Expected) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        log.info("%s: downloading from %s", entry.relative_path, entry.url)
        for attempt in range(self.retries + 1):
            try:
                hasher, total = self._fetch_into(session, entry, part, expected)
                break
            except TransientDownloadError as exc:
                if isinstance(exc, StaleRangeError):
                    part.unlink(missing_ok=True)
                if attempt == self.retries:
                    raise ModelDownloadError(
                        f"{entry.relative_path}: download failed after {attempt + 1} attempts: {exc}"
                    ) from exc
                wait = self.retry_wait_s * (2**attempt)
                log.warning("%s: %s; resuming in %.0f s.", entry.relative_path, exc, wait)
                time.sleep(wait)
        self._verify_part(entry, part, hasher.hexdigest(), Expected(expected.sha256, expected.size or total))
        os.replace(part, dest)
        self.cache.record(entry, dest, hasher.hexdigest())
        self.recorded.record(entry, hasher.hexdigest(), dest.stat().st_size)
        log.info("%s: downloaded and verified.", entry.relative_path)

    def _fetch_into(
        self, session: requests.Session, entry: ModelEntry, part: Path, expected: Expected
    ) -> tuple[Any, int | None]:
        """Append the missing bytes to ``part``; returns the hash of the whole part and the server's size."""
        offset = part.stat().st_size if part.exists() else 0
        if expected.size is not None and offset > expected.size:
            part.unlink()
            offset = 0
        hasher = hashlib.sha256()
        if offset:
            self._hash_into(hasher, part, offset)
        if expected.size is not None and offset == expected.size:
            self._report(entry, offset, expected.size)
            return hasher, expected.size
        headers = auth_headers(entry.url, self.token) | ({"Range": f"bytes={offset}-"} if offset else {})
        try:
            with session.get(entry.url, headers=headers, stream=True, timeout=self.timeout_s) as response:
                offset, total = self._check_response(entry, response, offset)
                if offset == 0:
                    hasher = hashlib.sha256()
                done = offset
                self._report(entry, done, expected.size or total)
                with part.open("ab" if offset else "wb") as sink:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        sink.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        self._report(entry, done)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientDownloadError(f"connection lost ({type(exc).__name__})") from exc
        return hasher, total

    def _check_response(self, entry: ModelEntry, response: requests.Response, offset: int) -> tuple[int, int | None]:
        """Decide where writing starts (resume or restart) and what total size the server announces."""
        status = response.status_code
        if status == 206 and offset:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise ModelDownloadError(f"{entry.relative_path}: server resumed at the wrong byte offset.")
            return offset, int(match.group(2)) if match.group(2) != "*" else None
        if status == 200:
            length = response.headers.get("Content-Length")
            return 0, int(length) if length and length.isdigit() else None
        if status == 416 and offset:
            raise StaleRangeError("the partial file does not fit the remote file; starting over")
        if status in TRANSIENT_STATUS:
            raise TransientDownloadError(f"HTTP {status} from {entry.url}")
        hint = " (set HF_TOKEN for gated or private Hugging Face files)" if status in (401, 403) else ""
        raise ModelDownloadError(f"{entry.relative_path}: GET {entry.url} answered HTTP {status}{hint}.")

    def _verify_part(self, entry: ModelEntry, part: Path, digest: str, expected: Expected) -> None:
        """Delete the download when it is not exactly the expected file."""
        size = part.stat().st_size
        problem = None
        if expected.size is None and expected.sha256 is None:
            problem = "neither the manifest nor the server gives its size or SHA-256, so it cannot be verified"
        elif expected.size is not None and size != expected.size:
            problem = f"size is {size} bytes, expected {expected.size}"
        elif expected.sha256 is not None and digest != expected.sha256:
            problem = f"SHA-256 is {digest}, expected {expected.sha256}"
            if entry.sha256 is None and self.recorded.expected(entry).sha256 == expected.sha256:
                problem += f" (recorded at its first download in {self.recorded.path})"
        if problem:
            part.unlink()
            raise ModelDownloadError(f"{entry.relative_path}: {problem}; the download was deleted.")
        if expected.sha256 is None:
            log.warning("%s: no SHA-256 known; verified by size only.", entry.relative_path)

    def _hash_file(self, path: Path, label: str) -> str:
        hasher = hashlib.sha256()
        size = path.stat().st_size
        with tqdm(total=size, unit="B", unit_scale=True, desc=label, leave=False,
                  mininterval=_progress_interval()) as bar:
            self._hash_into(hasher, path, size, bar.update)
        return hasher.hexdigest()

    @staticmethod
    def _hash_into(hasher: Any, path: Path, length: int, tick: Callable[[int], Any] | None = None) -> None:
        with path.open("rb") as source:
            remaining = length
            while remaining > 0:
                block = source.read(min(HASH_BLOCK_BYTES, remaining))
                if not block:
                    break
                hasher.update(block)
                remaining -= len(block)
                if tick:
                    tick(len(block))

    def _report(self, entry: ModelEntry, done: int, size: int | None = None) -> None:
        """Move the shared bar to ``done`` bytes for this file; a size learned late grows the total."""
        with self._progress_lock:
            if size and not entry.size and entry.relative_path not in self._reported:
                self.progress.total = (self.progress.total or 0) + size
                self.progress.refresh()
            self.progress.update(done - self._reported.get(entry.relative_path, 0))
            self._reported[entry.relative_path] = done


# ---------------------------------------------------------------- running


def download_models(
    entries: list[ModelEntry],
    models_dir: Path,
    jobs: int = 4,
    token: str | None = None,
    retries: int = 4,
    retry_wait_s: float = 2.0,
) -> dict[str, str]:
    """Fetch every entry (``jobs`` at a time); returns {relative path: outcome}, raises listing all failures."""
    models_dir.mkdir(parents=True, exist_ok=True)
    sizes = _sizes(entries, models_dir, token)
    _check_free_space(entries, models_dir, sizes)
    total = sum(entry.size or 0 for entry in entries)  # sizes learned later grow the bar as files start
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="models",
              mininterval=_progress_interval()) as progress:
        downloader = Downloader(models_dir, progress, token, retries, retry_wait_s)
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="download") as pool:
            futures = {entry: pool.submit(downloader.ensure, entry) for entry in entries}
            for entry, future in futures.items():
                try:
                    outcomes[entry.relative_path.as_posix()] = future.result()
                except ModelDownloadError as exc:
                    failures.append(str(exc))
                except OSError as exc:
                    failures.append(f"{entry.relative_path}: cannot be written: {exc}")
    if failures:
        raise ModelDownloadError("Some model files are missing or bad:\n  " + "\n  ".join(failures))
    return outcomes


def _sizes(entries: list[ModelEntry], models_dir: Path, token: str | None) -> dict[ModelEntry, int | None]:
    """Each file's size: the manifest's, the first download's record, else what the hub says (HEAD)."""
    recorded = RecordedHashes(models_dir)
    sizes: dict[ModelEntry, int | None] = {}
    with requests.Session() as session:
        for entry in entries:
            size = recorded.expected(entry).size
            if size is None and not (models_dir / entry.relative_path).exists():
                size = remote_expectation(session, entry.url, auth_headers(entry.url, token), 60.0).size
            sizes[entry] = size
    return sizes


def _check_free_space(entries: list[ModelEntry], models_dir: Path, sizes: dict[ModelEntry, int | None]) -> None:
    """Fail before hours of downloading rather than on a full disk near the end; every missing file counts."""
    needed, unknown = 0, []
    for entry in entries:
        dest = models_dir / entry.relative_path
        part = dest.with_name(dest.name + PART_SUFFIX)
        if dest.exists():
            continue
        if sizes.get(entry) is None:
            unknown.append(entry.file)
            continue
        needed += sizes[entry] - (part.stat().st_size if part.exists() else 0)
    free = shutil.disk_usage(models_dir).free
    if needed > free:
        raise ModelDownloadError(
            f"{models_dir} has {free / 1e9:.1f} GB free but the missing model files need {needed / 1e9:.1f} GB."
        )
    if unknown:
        log.warning("Free space checked without %s: neither the manifest nor the server gives its size.",
                    ", ".join(unknown))


def _progress_interval() -> float:
    """Frequent redraws on a terminal; a line every half minute in build logs."""
    return 0.5 if sys.stderr.isatty() else 30.0


def warm_models(entries: list[ModelEntry], roots: Iterable[Path], jobs: int = 4) -> int:
    """Read each model file once so the first job loads it from the page cache; returns bytes read."""
    found = list(_locate(entries, list(roots)))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="warm") as pool:
        total = sum(pool.map(_read_through, found))
    log.info("Warmed %d model files (%.1f GB) in %.0f s.", len(found), total / 1e9, time.monotonic() - started)
    return total


def _locate(entries: list[ModelEntry], roots: list[Path]) -> Iterator[Path]:
    for entry in entries:
        candidates = [root / entry.relative_path for root in roots]
        present = next((path for path in candidates if path.is_file()), None)
        if present is None:
            log.warning("Cannot warm %s: not found under %s.", entry.relative_path, ", ".join(map(str, roots)))
        else:
            yield present


def _read_through(path: Path) -> int:
    count = 0
    with path.open("rb", buffering=0) as source:
        while block := source.read(HASH_BLOCK_BYTES):
            count += len(block)
    return count


# ---------------------------------------------------------------- command line


def default_models_dir(env: Mapping[str, str] = os.environ) -> Path | None:
    """MODEL_DIR, else ComfyUI's own models folder."""
    if env.get("MODEL_DIR", "").strip():
        return Path(env["MODEL_DIR"].strip())
    if env.get("COMFYUI_DIR", "").strip():
        return Path(env["COMFYUI_DIR"].strip()) / "models"
    return None


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``download-models`` and ``warm-models`` to ``python -m infinitetalk_worker``."""
    download = subparsers.add_parser(
        "download-models",
        help="fetch and verify the model files of the manifest (build time or to fill a network volume)",
        description="Download the files listed in the model manifest, resuming partial downloads and "
        "checking each file's size and SHA-256. Files verified before are skipped.",
    )
    _add_common_arguments(download)
    download.add_argument("--retries", type=int, default=4, help="extra attempts per file after a dropped connection")
    download.set_defaults(func=run_download)

    warm = subparsers.add_parser(
        "warm-models",
        help="read the model files the workflows use into the page cache before the first job",
    )
    _add_common_arguments(warm)
    warm.set_defaults(func=run_warm)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="model manifest (JSON list)")
    parser.add_argument(
        "--models-dir", type=Path, default=None,
        help="ComfyUI models folder to fill (default: $MODEL_DIR, else $COMFYUI_DIR/models)",
    )
    parser.add_argument(
        "--only-used-by", type=Path, metavar="WORKFLOW_DIR", default=None,
        help="take only the files that the workflows in this folder name",
    )
    parser.add_argument("--jobs", type=int, default=4, help="files fetched at the same time")


def _entries_and_dir(args: argparse.Namespace) -> tuple[list[ModelEntry], Path]:
    models_dir = args.models_dir or default_models_dir()
    if models_dir is None:
        raise ModelDownloadError("Give --models-dir, or set MODEL_DIR or COMFYUI_DIR.")
    entries = load_manifest(args.manifest)
    if args.only_used_by is not None:
        entries = select_used(entries, args.only_used_by)
    return entries, models_dir


def run_download(args: argparse.Namespace) -> int:
    try:
        entries, models_dir = _entries_and_dir(args)
        outcomes = download_models(
            entries, models_dir, jobs=args.jobs, token=os.environ.get("HF_TOKEN") or None, retries=args.retries
        )
    except ModelDownloadError as exc:
        log.error("%s", exc)
        return 1
    counts = {kind: list(outcomes.values()).count(kind) for kind in ("downloaded", "verified", "skipped")}
    log.info("Model files in %s: %s.", models_dir, ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return 0


def run_warm(args: argparse.Namespace) -> int:
    try:
        entries, models_dir = _entries_and_dir(args)
    except ModelDownloadError as exc:
        log.error("%s", exc)
        return 1
    volume_models = Path(os.environ.get("VOLUME_ROOT", "").strip() or "/runpod-volume") / "models"
    warm_models(entries, [models_dir, volume_models], jobs=args.jobs)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python model_download.py download-models ...``), used by the Dockerfile."""
    parser = argparse.ArgumentParser(prog="model_download.py")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main())
