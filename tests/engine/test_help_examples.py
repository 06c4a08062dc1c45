"""Every command's --help ends with an example, and every example parses as written."""

from __future__ import annotations

import re
import shlex

import pytest
from fedkube.cli.help_examples import EXAMPLES, subcommands
from fedkube.cli.main import build_parser


def test_every_command_has_an_example_in_its_help() -> None:
    commands = subcommands(build_parser())
    assert len(commands) >= 19
    assert sorted(set(commands) - set(EXAMPLES)) == []
    assert sorted(set(EXAMPLES) - set(commands)) == []  # none for a command that is gone
    for words, sub in commands.items():
        assert sub.format_help().rstrip().endswith(EXAMPLES[words].splitlines()[-1]), words


def _command_lines() -> list[str]:
    lines = []
    for example in EXAMPLES.values():
        for line in example.splitlines():
            for part in re.split(r"&&|\|", line.strip()):
                part = part.split(">")[0].strip()
                if part.startswith("fedkube "):
                    lines.append(part)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_each_example_parses(line: str) -> None:
    build_parser().parse_args(shlex.split(line)[1:])  # exits 2 on an unknown flag
