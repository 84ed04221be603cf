"""ComfyUI client: submit a graph, follow it to the end, and fetch what it made.

HTTP with requests, progress over the websocket (websocket-client). Every wait is bounded: the
socket is read with a short timeout so the deadline and cancellation are checked between frames;
a dropped socket is reconnected, and meanwhile ``/history`` is polled, which is the record this
client trusts for the outcome. A ComfyUI that stops answering is reported with its log's tail.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket

from .errors import ComfyError, ComfyUnavailableError, JobTimeoutError, clipped

log = logging.getLogger(__name__)

RECV_TICK_S = 1.0
RECONNECT_EVERY_S = 2.0
# A websocket that served a prompt to its end is kept for the next one (the handshake costs ~2 ms per
# job); one idle longer than this is closed instead of trusted.
SOCKET_REUSE_S = 300.0
UNREACHABLE_AFTER_S = 5.0
FORGET_WAIT_S, FORGET_POLL_S = 30.0, 0.05  # how long a history deletion waits for the entry to exist
LOG_TAIL_LINES = 20
ProgressCallback = Callable[[dict[str, Any]], None]

# The start of the tip ComfyUI appends to an out-of-memory exception message (execution.py).
MAX_NODE_PROBLEMS = 5  # node errors quoted from a refused prompt; the rest are counted
COMFYUI_OOM_TIP = "This error means you ran out of memory on your GPU."


class CancelledByCaller(BaseException):
    """The job was cancelled while its prompt was running; the caller interrupts and re-raises.

    A ``BaseException`` (like ``asyncio.CancelledError`` and cog's cancel signal), so no
    ``except Exception`` on the way up can swallow a cancellation and carry on with the job.
    """


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported in history (VHS ``gifs`` or native ``images`` entries)."""

    filename: str
    subfolder: str
    type: str
    fullpath: str | None = None


@dataclass
class PromptResult:
    prompt_id: str
    files: list[OutputFile]
    execution_s: float | None
    history: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class _IdleSocket:
    client_id: str
    ws: websocket.WebSocket
    since: float


class ComfyClient:
    """One ComfyUI server; safe to share between jobs, also concurrent ones: each prompt has a websocket
    of its own, taken from the sockets that earlier prompts finished with, or a new one."""

    def __init__(self, base_url: str, http_timeout_s: float = 30.0, ws_idle_timeout_s: float = 30.0,
                 log_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http_timeout_s = http_timeout_s
        self.ws_idle_timeout_s = ws_idle_timeout_s
        self.log_file = log_file
        self.session = requests.Session()
        self.session.trust_env = False
        self._idle: list[_IdleSocket] = []
        self._lock = threading.Lock()  # guards _idle and _forgets
        self._forgets: queue.SimpleQueue[str | None] | None = None

    # -- plain HTTP -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, session: requests.Session | None = None,
                 **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.http_timeout_s)
        try:
            return (session or self.session).request(method, self.base_url + path, **kwargs)
        except requests.RequestException as exc:
            raise ComfyUnavailableError(self._unreachable(f"{method} {path} failed: {type(exc).__name__}")) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyError(f"ComfyUI answered {method} {path} with HTTP {response.status_code}.")
        return response.json()

    def system_stats(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._json("GET", "/system_stats", timeout=timeout_s or self.http_timeout_s)

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info")

    def history(self, prompt_id: str, session: requests.Session | None = None) -> dict[str, Any]:
        return self._json("GET", f"/history/{prompt_id}", session=session).get(prompt_id, {})

    def interrupt(self, prompt_id: str) -> None:
        """Drop our prompt from the queue if it waits, then stop it if it runs (best effort, bounded).

        In this order a prompt that starts between the two calls is still stopped: ComfyUI ignores a
        targeted /interrupt for a prompt that is not running yet, and cannot dequeue a running one.
        """
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self.session.post(self.base_url + path, json=body, timeout=5)
            except requests.RequestException as exc:
                log.warning("could not send %s for prompt %s: %s", path, prompt_id, type(exc).__name__)

    def forget(self, prompt_id: str, session: requests.Session | None = None) -> None:
        """Remove the prompt's history entry so a long-lived ComfyUI does not accumulate them.

        The worker takes the video on the output node's ``executed`` message; ComfyUI writes the entry a
        moment later (or after its deferred garbage collection), and deleting an entry that does not exist
        yet does nothing, so this waits (bounded) for the entry first.
        """
        ends = time.monotonic() + FORGET_WAIT_S
        try:
            while not _finished(self.history(prompt_id, session)) and time.monotonic() < ends:
                time.sleep(FORGET_POLL_S)
            self._request("POST", "/history", session, json={"delete": [prompt_id]}, timeout=5)
        except (ComfyError, requests.RequestException, AttributeError):
            log.debug("could not delete history of %s", prompt_id)

    def download(self, output: OutputFile, target: Path) -> None:
        """Stream an output file through ``/view`` (works whether or not we share ComfyUI's disk)."""
        params = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        response = self._request("GET", "/view", params=params, stream=True)
        with response:
            if response.status_code != 200:
                raise ComfyError(f"ComfyUI could not serve its output {output.filename} (HTTP {response.status_code}).")
            with open(target, "wb") as sink:
                for chunk in response.iter_content(1 << 20):
                    sink.write(chunk)

    def _unreachable(self, what: str) -> str:
        return f"ComfyUI at {self.base_url} is not answering ({what}).{self.log_tail()}"

    def log_tail(self) -> str:
        if not self.log_file or not self.log_file.is_file():
            return ""
        lines = self.log_file.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return " Last lines of its log:\n" + "\n".join(lines) if lines else ""

    # -- running a prompt ---------------------------------------------------------------------

    def submit(self, graph: dict[str, Any], client_id: str, prompt_id: str) -> None:
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        response = self._request("POST", "/prompt", json=body)
        body = _json_or_empty(response)
        if response.status_code == 200 and body.get("node_errors"):
            self.interrupt(prompt_id)  # queued with some outputs skipped: not the job that was asked for
        if response.status_code == 400 or body.get("node_errors"):
            raise ComfyError(describe_rejection(body))
        if response.status_code != 200:
            raise ComfyError(f"ComfyUI refused the prompt with HTTP {response.status_code}.")

    def run_prompt(self, graph: dict[str, Any], output_node: str, *, prompt_id: str, deadline: float,
                   cancel: threading.Event, on_progress: ProgressCallback | None = None) -> PromptResult:
        """Submit and follow one prompt to its end; raise with ComfyUI's own words if it fails."""
        watch = _PromptWatch(self, prompt_id, output_node, deadline, cancel, on_progress or (lambda _: None))
        watch.connect()
        try:
            self.submit(graph, watch.client_id, prompt_id)
            result = watch.wait()
        except BaseException:
            watch.close()
            raise
        watch.release()
        return result

    def take_socket(self) -> tuple[str, websocket.WebSocket] | None:
        """A websocket an earlier prompt finished with (and its client id), if one is fresh enough."""
        with self._lock:
            now = time.monotonic()
            stale = [s for s in self._idle if now - s.since >= SOCKET_REUSE_S]
            self._idle = [s for s in self._idle if now - s.since < SOCKET_REUSE_S]
            chosen = self._idle.pop() if self._idle else None
        for socket in stale:
            _close_quietly(socket.ws)
        return (chosen.client_id, chosen.ws) if chosen else None

    def keep_socket(self, client_id: str, ws: websocket.WebSocket) -> None:
        with self._lock:
            self._idle.append(_IdleSocket(client_id, ws, time.monotonic()))

    def close(self) -> None:
        """Close the idle websockets and the HTTP session, and end the ``forget`` thread."""
        with self._lock:
            idle, self._idle = self._idle, []
            forgets, self._forgets = self._forgets, None
        if forgets is not None:
            forgets.put(None)
        for socket in idle:
            _close_quietly(socket.ws)
        self.session.close()

    def fetch_output(self, output: OutputFile, target: Path, comfyui_dir: Path | None) -> str:
        """Put ComfyUI's file at ``target``: from its folder when this disk has it, else through ``/view``.

        Right after a prompt ComfyUI runs its deferred garbage collection and its HTTP answers stall
        for up to a second; a hard link (or copy) of the file on the same disk does not wait for that.
        Returns how the file came ("disk" or "http").
        """
        local = _local_path(output, comfyui_dir)
        if local is not None:
            try:
                os.link(local, target)
            except OSError:
                shutil.copyfile(local, target)
            return "disk"
        self.download(output, target)
        return "http"

    def forget_later(self, prompt_id: str) -> None:
        """``forget`` off the job's path: the call may wait behind ComfyUI's clean-up, the result need not.
        One thread does them all (starting a thread per job cost about 1 ms of the job's time)."""
        with self._lock:
            if self._forgets is None:
                self._forgets = queue.SimpleQueue()
                threading.Thread(target=self._forget_each, args=(self._forgets,), name="comfyui-forget",
                                 daemon=True).start()
            self._forgets.put(prompt_id)

    def _forget_each(self, prompt_ids: queue.SimpleQueue[str | None]) -> None:
        """The deletions' own HTTP session: one kept connection, not a second one in the jobs' pool
        whenever a deletion and a job's request overlap."""
        with requests.Session() as session:
            session.trust_env = False
            while (prompt_id := prompt_ids.get()) is not None:
                self.forget(prompt_id, session)


class _PromptWatch:
    """Follows one prompt: websocket when it works, ``/history`` polling when it does not."""

    def __init__(self, client: ComfyClient, prompt_id: str, output_node: str, deadline: float,
                 cancel: threading.Event, on_progress: ProgressCallback) -> None:
        self.client, self.prompt_id, self.deadline, self.cancel = client, prompt_id, deadline, cancel
        self.output_node, self.on_progress = output_node, on_progress
        self.ws_files: list[OutputFile] = []  # what the output node's `executed` message named
        self.started_ms: int | None = None  # ComfyUI's execution_start timestamp (ms since the epoch)
        self.executed_ms: int | None = None  # this clock when the output node's `executed` arrived
        reused = client.take_socket()
        self.client_id = reused[0] if reused else uuid.uuid4().hex
        self.ws: websocket.WebSocket | None = reused[1] if reused else None
        self.last_connect_try = 0.0
        self.last_poll = time.monotonic()
        self.unreachable_since: float | None = None

    def connect(self) -> None:
        self.last_connect_try = time.monotonic()
        if self.ws is not None:  # reused: ComfyUI still knows it by our client id, unless it restarted
            if _drained(self.ws):
                return
            self.close()
        url = _ws_url(self.client.base_url) + f"/ws?clientId={self.client_id}"
        try:
            # skip_utf8_validation: websocket-client checks UTF-8 in pure Python (~370 ms of CPU per job that
            # ComfyUI wants); the text is still decoded by CPython's C codec, which rejects bad UTF-8 anyway.
            self.ws = websocket.create_connection(url, timeout=min(10.0, self.client.http_timeout_s),
                                                  skip_utf8_validation=True)
            self.ws.settimeout(RECV_TICK_S)
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("websocket to ComfyUI unavailable (%s); following prompt by polling", type(exc).__name__)
            self.ws = None

    def close(self) -> None:
        if self.ws is not None:
            _close_quietly(self.ws)
            self.ws = None

    def release(self) -> None:
        """The prompt ended normally: the socket (if it still works) serves the next prompt."""
        if self.ws is not None:
            self.client.keep_socket(self.client_id, self.ws)
            self.ws = None

    def wait(self) -> PromptResult:
        """The prompt's result: from the websocket alone once the output node (the graph's only one, so
        the last to run) named its files, otherwise from ``/history`` (failures, a dropped socket)."""
        while True:
            self._check_limits()
            if self.ws is not None and self._read_socket():
                return self._ws_result() or _result_from_history(self.prompt_id, self._final_history(),
                                                                 self.output_node)
            if self.ws is None:
                time.sleep(min(RECV_TICK_S, max(0.0, self.deadline - time.monotonic())))
                if time.monotonic() - self.last_connect_try >= RECONNECT_EVERY_S:
                    self.connect()
            entry = self._poll_if_due()
            if entry:
                return _result_from_history(self.prompt_id, entry, self.output_node)

    def _ws_result(self) -> PromptResult | None:
        """Execution time from ComfyUI's start stamp to the output's message (same host, same clock; ComfyUI
        stamps execution_success a moment later, but that message may wait behind its gc.collect())."""
        if not self.ws_files:  # set, with executed_ms, by the output node's message
            return None
        start = self.started_ms
        execution_s = max(0.0, (self.executed_ms - start) / 1000.0) if start is not None else None
        return PromptResult(self.prompt_id, self.ws_files, execution_s)

    def _check_limits(self) -> None:
        if self.cancel.is_set():
            raise CancelledByCaller(self.prompt_id)
        if time.monotonic() >= self.deadline:
            self.client.interrupt(self.prompt_id)
            raise JobTimeoutError("The job ran past its deadline; ComfyUI was told to stop it.")

    def _read_socket(self) -> bool:
        """Handle one frame; True once ComfyUI says our prompt is finished."""
        try:
            frame = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        except UnicodeDecodeError:
            log.warning("ComfyUI sent a text frame that is not UTF-8; ignored")
            return False
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("websocket to ComfyUI dropped (%s); polling /history", type(exc).__name__)
            self.close()
            return False
        if not isinstance(frame, str) or not frame:
            return False  # binary preview / progress_text frames
        self.last_poll = time.monotonic()
        return self._handle(json.loads(frame))

    def _handle(self, message: dict[str, Any]) -> bool:
        kind, data = message.get("type"), message.get("data") or {}
        if data.get("prompt_id") != self.prompt_id:
            return False
        if kind == "execution_start" and isinstance(data.get("timestamp"), int):
            self.started_ms = data["timestamp"]
        if kind == "executed" and str(data.get("node")) == self.output_node:
            output = data.get("output") or {}
            self.ws_files = [_output_file(item) for item in output.get("gifs", []) + output.get("images", [])]
            self.executed_ms = int(time.time() * 1000)
            return bool(self.ws_files)  # the video is written; what ComfyUI sends next can wait behind its gc
        if kind == "executing" and data.get("node") is None:
            return True
        if kind == "progress":
            self.on_progress({"stage": "generating", "node": data.get("node"), "value": data.get("value"),
                              "max": data.get("max")})
        elif kind == "executing":
            self.on_progress({"stage": "running", "node": data.get("node")})
        return False

    def _poll_if_due(self) -> dict[str, Any]:
        interval = RECV_TICK_S if self.ws is None else self.client.ws_idle_timeout_s
        if time.monotonic() - self.last_poll < interval:
            return {}
        self.last_poll = time.monotonic()
        try:
            entry = self.client.history(self.prompt_id)
            self.unreachable_since = None
        except ComfyUnavailableError:
            self.unreachable_since = self.unreachable_since or time.monotonic()
            if time.monotonic() - self.unreachable_since >= UNREACHABLE_AFTER_S:
                raise
            return {}
        return entry if _finished(entry) else {}

    def _final_history(self) -> dict[str, Any]:
        """History is written before the final message, but allow a short grace for slow disks."""
        for _ in range(10):
            entry = self.client.history(self.prompt_id)
            if _finished(entry):
                return entry
            time.sleep(0.2)
        raise ComfyError(f"ComfyUI reported prompt {self.prompt_id} finished but has no history for it.")


def _drained(ws: websocket.WebSocket) -> bool:
    """Read what a kept socket holds from earlier prompts; False when ComfyUI closed it meanwhile."""
    try:
        while select.select([ws.sock], [], [], 0)[0]:
            ws.recv()
    except (OSError, TypeError, ValueError, websocket.WebSocketException, UnicodeDecodeError):
        return False
    return ws.connected


def _close_quietly(ws: websocket.WebSocket) -> None:
    try:
        ws.close(timeout=1)
    except (OSError, websocket.WebSocketException):
        pass


def _finished(entry: dict[str, Any]) -> bool:
    status = entry.get("status") or {}
    return bool(entry) and (status.get("completed") or status.get("status_str") in ("success", "error"))


def _result_from_history(prompt_id: str, entry: dict[str, Any], output_node: str) -> PromptResult:
    status = entry.get("status") or {}
    messages = {event: data for event, data in status.get("messages", [])}
    if status.get("status_str") != "success":
        raise ComfyError(describe_failure(messages))
    node_output = (entry.get("outputs") or {}).get(output_node) or {}
    files = [_output_file(item) for item in node_output.get("gifs", []) + node_output.get("images", [])]
    if not files:
        raise ComfyError(f"ComfyUI finished, but the output node {output_node} reported no video file.")
    started, succeeded = messages.get("execution_start", {}), messages.get("execution_success", {})
    execution_s = None
    if "timestamp" in started and "timestamp" in succeeded:
        execution_s = (succeeded["timestamp"] - started["timestamp"]) / 1000.0
    return PromptResult(prompt_id, files, execution_s, entry)


def _local_path(output: OutputFile, comfyui_dir: Path | None) -> Path | None:
    """The output's file on this disk, when this process can see ComfyUI's folders."""
    candidates = [Path(output.fullpath)] if output.fullpath else []
    if comfyui_dir is not None:
        candidates.append(comfyui_dir / output.type / output.subfolder / output.filename)
    return next((path for path in candidates if path.is_file()), None)


def _output_file(item: dict[str, Any]) -> OutputFile:
    return OutputFile(item["filename"], item.get("subfolder", ""), item.get("type", "output"), item.get("fullpath"))


def describe_rejection(body: dict[str, Any]) -> str:
    """A 400 from /prompt in plain words: the top-level reason, then each node's errors."""
    error = body.get("error") or {}
    reason = error.get("message") or "the workflow failed validation" if isinstance(error, dict) else str(error)
    parts = [f"ComfyUI refused the workflow: {clipped(reason)}"]
    if isinstance(error, dict) and error.get("details"):
        parts[0] += f" ({clipped(error['details'])})"
    problems = [(node_id, node, problem) for node_id, node in (body.get("node_errors") or {}).items()
                for problem in node.get("errors", [])]
    for node_id, node, problem in problems[:MAX_NODE_PROBLEMS]:
        detail = problem.get("details") or problem.get("message", "")
        parts.append(f"node {clipped(node_id, 40)} ({clipped(node.get('class_type', '?'), 80)}): {clipped(detail)}")
    if len(problems) > MAX_NODE_PROBLEMS:
        parts.append(f"and {len(problems) - MAX_NODE_PROBLEMS} more problems")
    return "; ".join(parts) + "."


def describe_failure(messages: dict[str, dict[str, Any]]) -> str:
    """What an unsuccessful history says: the failing node, its class and the exception."""
    if "execution_error" in messages:
        data = messages["execution_error"]
        text = str(data.get("exception_message", "")).strip()
        node = f"node {clipped(data.get('node_id'), 40)} ({clipped(data.get('node_type'), 80)})"
        if str(data.get("exception_type", "")).endswith("OutOfMemoryError"):
            return _out_of_memory(node, text)
        return f"ComfyUI failed at {node}: {clipped(data.get('exception_type', 'error'), 120)}: {clipped(text)}"
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        return f"ComfyUI interrupted the job at node {data.get('node_id')} ({data.get('node_type')})."
    return "ComfyUI ended the job with an error but did not say why."


def _out_of_memory(node: str, text: str) -> str:
    """ComfyUI's own tip (about batch_size) does not apply to these workflows; say what does."""
    detail = clipped(text.split(COMFYUI_OOM_TIP, 1)[0]).rstrip(".")
    return (f"The GPU ran out of memory at {node}: {detail}. Ask for a smaller width and height, "
            "or deploy the endpoint on a GPU with more memory.")


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ws_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def delete_output_files(files: list[OutputFile], file_stem: str, comfyui_dir: Path | None) -> None:
    """Remove every file ComfyUI wrote for this job (video, silent copy, metadata PNG)."""
    folders: set[Path] = set()
    for output in files:
        if output.fullpath and Path(output.fullpath).exists():
            folders.add(Path(output.fullpath).parent)
        elif comfyui_dir is not None:
            folders.add(comfyui_dir / output.type / output.subfolder)
    for folder in folders:  # listed, not glob()bed: a new pattern per job would crowd re's and pathlib's caches
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name.startswith(f"{file_stem}_"):
                path.unlink(missing_ok=True)
