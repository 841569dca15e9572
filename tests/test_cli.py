"""The command-line entry point."""

from __future__ import annotations

import pytest

from peft_autoconfig.cli import build_parser, main, strip_launcher_arguments


def test_every_subcommand_is_registered():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"search", "show", "train", "push"} <= set(commands)


@pytest.mark.parametrize(
    "argv",
    [
        ["--local_rank=1", "show", "x"],
        ["--local-rank", "0", "show", "x"],
        ["show", "x", "--local_rank=3"],
    ],
)
def test_deepspeed_launcher_local_rank_is_ignored(argv):
    assert strip_launcher_arguments(argv) == ["show", "x"]


def test_user_errors_are_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["show", str(tmp_path / "missing")])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "front.json" in err[0]
