"""The README's promises about the command line and the settings, checked against the code.

Every `ganforge ...` command line the README shows (code blocks, inline code, the
command table with its `[--flag VALUE]` groups expanded), and those the Makefile,
Dockerfile and docker-compose.yml run, goes through the CLI's real parser. The
command table lists every option each subcommand takes, with the CLI's own
metavar; the settings table lists every GANFORGE_* setting and nothing else.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ganforge.cli import COMMANDS, build_parser
from models.settings import Settings
from tests.service import ROOT

README = (ROOT / "README.md").read_text()
# `ganforge <sub>` then its words, up to a comment, a backtick, a pipe, a bracket-less parenthesis or the line's end.
COMMAND = re.compile(r"(?<![\w./-])ganforge\s+[a-z][\w-]*(?:[ \t]+(?:\[[^\]\n]*\]|[^\s`#|;&()\[\]]+))*")
GROUP = re.compile(r"\[([^\[\]]+)\]")


def code_in(markdown: str) -> list[str]:
    """The text of every fenced code block's lines and every inline code span."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    return [line for block in fenced for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", prose)


def readme_commands() -> list[str]:
    return sorted({match.strip() for text in code_in(README) for match in COMMAND.findall(text)})


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def sample_value(command: str, option: str) -> str:
    """A value the parser accepts for `option` of subcommand `command`, by the option's type."""
    action = subparsers()[command]._option_string_actions[option]
    if action.type in (int, float) or getattr(action.type, "__name__", "") == "port":
        return "8011"
    if action.type is Path:
        return "./gf-data"
    return "127.0.0.1" if option == "--host" else "value"


def expansions(line: str) -> list[list[str]]:
    """`line` with its optional `[--flag VALUE]` groups left out, each alone, and all together."""
    words = shlex.split(GROUP.sub("", line))
    command = words[1]
    groups = []
    for group in GROUP.findall(line):
        option, *metavars = group.split()
        groups.append([option, *(sample_value(command, option) for _ in metavars)])
    chosen = [(), *((g,) for g in groups), tuple(groups)]
    return [words[1:] + list(itertools.chain(*choice)) for choice in chosen]


def test_the_readme_shows_the_commands_it_promises() -> None:
    commands = readme_commands()
    assert any(c.startswith("ganforge up ") and "--demo" in c for c in commands), commands
    shown = {c.split()[1] for c in commands}
    assert shown == set(COMMANDS), shown  # every subcommand, and none the CLI lacks


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_command_line_parses(line: str) -> None:
    parser = build_parser()
    for argv in expansions(line):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"README's `{line}` as {argv} does not parse") from exc


def command_table() -> dict[str, str]:
    """Subcommand → its row's command cell in the README's "Command line" table."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(ganforge [^`]+)` \|", section, flags=re.M)
    return {row.split()[1]: row for row in rows}


def test_the_command_table_shows_every_option_with_the_clis_metavar() -> None:
    table = command_table()
    assert set(table) == set(COMMANDS), table
    for name, sub in subparsers().items():
        shown = {group.split()[0]: group.split()[1:] for group in GROUP.findall(table[name])}
        accepted = {
            action.option_strings[-1]: [] if action.nargs == 0 else [action.metavar or action.dest.upper()]
            for action in sub._actions
            if action.option_strings and action.help != argparse.SUPPRESS and "--help" not in action.option_strings
        }
        assert shown == accepted, (name, table[name])


def test_the_exact_command_of_the_fault_report_parses() -> None:
    assert "ganforge up --data-dir ./gf-data --port 8011" in README
    args = build_parser().parse_args(shlex.split("up --data-dir ./gf-data --port 8011"))
    assert (args.data_dir, args.port) == (Path("./gf-data"), 8011)


def deployment_commands() -> list[list[str]]:
    """The `ganforge` command lines that the Makefile, the Dockerfile and docker-compose.yml run."""
    makefile = (ROOT / "Makefile").read_text()
    up_args = re.search(r"^UP_ARGS \?= (.*)$", makefile, flags=re.M)
    assert up_args is not None
    found = [
        shlex.split(line.replace("$(UP_ARGS)", up_args.group(1)).split("ganforge", 1)[1])
        for line in makefile.splitlines()
        if line.startswith("\t") and "/ganforge " in line
    ]
    found += [["up", *shlex.split(example)] for example in re.findall(r'UP_ARGS="([^"]*)"', makefile + README)]
    for path in ("Dockerfile", "docker-compose.yml"):
        for array in re.findall(r'(\["ganforge",[^\]]*\])', (ROOT / path).read_text()):
            found.append(json.loads(array)[1:])
    return found


def test_the_makefile_dockerfile_and_compose_commands_parse() -> None:
    commands = deployment_commands()
    assert {argv[0] for argv in commands} >= {"up", "api", "worker", "migrate"}, commands
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"`ganforge {' '.join(argv)}` does not parse") from exc


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_of_every_subcommand_runs(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", *command.split(), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: ganforge {command}".rstrip()), result.stdout
    assert "--data-dir DIR" in result.stdout


def settings_table() -> list[str]:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(GANFORGE_[A-Z0-9_]+)` \|", section, flags=re.M)


def test_the_settings_table_documents_every_setting_once() -> None:
    documented = settings_table()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == {f"GANFORGE_{name.upper()}" for name in Settings.model_fields}
