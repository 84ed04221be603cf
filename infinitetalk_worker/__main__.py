"""Command line: ``python -m infinitetalk_worker <command>``.

Commands: render, validate, lock, check, download-models, standins.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module adds its own subcommands through register_commands(subparsers).
COMMAND_MODULES = (
    "infinitetalk_worker.pipeline",
    "infinitetalk_worker.rehearsal",
    "infinitetalk_worker.node_lock",
    "infinitetalk_worker.startup_checks",
    "infinitetalk_worker.model_download",
    "infinitetalk_worker.schema",
    "infinitetalk_worker.standins",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infinitetalk_worker", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
