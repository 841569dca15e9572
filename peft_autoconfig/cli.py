"""`peft-autoconfig` command line: the sub-commands listed in `COMMANDS`, one module each in `peft_autoconfig.commands`.

Each command module defines `register(subparsers)`, which adds its parser and sets `func` (taking the parsed
arguments, returning an exit code). Commands import their heavy dependencies inside `func`, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

from .commands import prune_model, push, search, show, train

COMMANDS = (prune_model, push, search, show, train)
"""Every sub-command module (alphabetical, as `--help` lists them); a new command is added here."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peft-autoconfig",
        description="Search, train and share parameter-efficient fine-tuning configurations.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def strip_launcher_arguments(argv: Sequence[str]) -> list[str]:
    """Drop `--local_rank N` / `--local-rank=N`, which the `deepspeed` launcher puts before the sub-command.

    The rank also arrives as the `LOCAL_RANK` environment variable, which is what the runner reads.
    """
    cleaned: list[str] = []
    skip_next = False
    for argument in argv:
        if skip_next:
            skip_next = False
            continue
        if re.fullmatch(r"--local[_-]rank", argument):
            skip_next = True
            continue
        if re.fullmatch(r"--local[_-]rank=\d+", argument):
            continue
        cleaned.append(argument)
    return cleaned


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(strip_launcher_arguments(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        # user errors: one clear line, no traceback
        print(f"peft-autoconfig {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
