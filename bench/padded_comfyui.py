"""The fake ComfyUI (testsupport/fake_comfyui.py) as a process whose videos can be made larger on demand.

``--pad-bytes N`` appends an MP4 ``free`` box of N random bytes to every video it renders: the file
stays a valid, playable MP4 (players skip ``free`` boxes) but weighs what a long real result weighs,
which is what the memory benchmark needs. With N = 0 it is the plain fake.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testsupport.fake_comfyui import FakeComfyUI  # noqa: E402


class PaddedComfyUI(FakeComfyUI):
    pad_bytes = 0

    def _render_vhs(self, graph, node_id, plan):
        result = super()._render_vhs(graph, node_id, plan)
        for item in result.get("gifs", []):
            _pad(Path(item["fullpath"]), self.pad_bytes)
        return result


def _pad(path: Path, size: int) -> None:
    if size <= 0:
        return
    with open(path, "ab") as video:
        video.write(struct.pack(">I", size + 8) + b"free")
        for start in range(0, size, 1 << 20):
            video.write(os.urandom(min(1 << 20, size - start)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--pad-bytes", type=int, default=0)
    args = parser.parse_args()
    PaddedComfyUI.pad_bytes = args.pad_bytes
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = PaddedComfyUI(args.root, port=args.port)
    server.start()
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
