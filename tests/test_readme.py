"""The README's promises about the command line and the settings, checked against the code.

Every `ganforge ...` command line the README shows (code blocks, inline code, the
command table with its `[--flag VALUE]` and `[ARG]` groups expanded), and those the
Makefile, Dockerfile and docker-compose.yml run, goes through the CLI's real parser
(typer's click command tree, `ganforge.cli.parse`). The command table lists every
command, every option it takes with the CLI's own metavar, and its arguments in
order; the settings table lists every GANFORGE_* setting and nothing else.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from ganforge.cli import app, main, parse
from models.settings import Settings
from tests.service import ROOT

README = (ROOT / "README.md").read_text()
# `ganforge <sub>` then its words, up to a comment, a backtick, a pipe, a bracket-less parenthesis or the line's end.
COMMAND = re.compile(r"(?<![\w./-])ganforge\s+[a-z][\w-]*(?:[ \t]+(?:\[[^\]\n]*\]|[^\s`#|;&()\[\]]+))*")
GROUP = re.compile(r"\[([^\[\]]+)\]")
# A value the CLI accepts, by the metavar the table shows.
SAMPLE_VALUES = {
    "PORT": "8011",
    "HOST": "127.0.0.1",
    "DIR": "./gf-data",
    "N": "10",
    "PX": "32",
    "PATH=VALUE": "loss.lr_d=1e-4",
    "KEY:VALUE": "team:vision",
    "STATUS": "running",
    "FILE": "out.bin",
    "NAME": "faces",
    "JSON": '{"categorical": 3}',
    "TEAM": "team-a",
    "SCOPES": "read,submit",
    "TTL": "30d",
    "KIND": "job.status",
    "TEXT": "nightly sweeps",
    "I": "0",
}


def commands() -> dict[str, Any]:
    """Every command the CLI runs, by its path (`up`, `datasets upload`), as click sees it."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            found[" ".join(path)] = command
            return
        for name, sub in subcommands.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def path_of(words: list[str]) -> str:
    """The command path that `ganforge WORDS...` runs: one word, or two for a group (`datasets upload`)."""
    return " ".join(words[:2]) if " ".join(words[:2]) in commands() else words[0]


def code_in(markdown: str) -> list[str]:
    """The text of every fenced code block's lines and every inline code span."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    return [line for block in fenced for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", prose)


def readme_commands() -> list[str]:
    return sorted({match.strip() for text in code_in(README) for match in COMMAND.findall(text)})


def expansions(line: str) -> list[list[str]]:
    """`line` with its optional `[--flag VALUE]` / `[ARG]` groups left out, each alone, and all together."""
    words = shlex.split(GROUP.sub("", line))
    groups = []
    for group in GROUP.findall(line):
        first, *metavars = group.split()
        groups.append([first] if not first.startswith("-") else [first, *(SAMPLE_VALUES[m] for m in metavars)])
    chosen = [(), *((g,) for g in groups), tuple(groups)]
    return [words[1:] + list(itertools.chain(*choice)) for choice in chosen]


def test_the_readme_shows_the_commands_it_promises() -> None:
    lines = readme_commands()
    assert any(c.startswith("ganforge up ") and "--demo" in c for c in lines), lines
    shown = {path_of(shlex.split(GROUP.sub("", c))[1:]) for c in lines}
    assert shown == set(commands()), shown  # every command, and none the CLI lacks


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_command_line_parses(line: str) -> None:
    for argv in expansions(line):
        try:
            parse(argv)
        except Exception as exc:  # click's usage errors
            raise AssertionError(f"README's `{line}` as {argv} does not parse: {exc}") from exc


def command_table() -> dict[str, str]:
    """Command path → its row's command cell in the README's "Command line" table."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(ganforge [^`]+)` \|", section, flags=re.M)
    return {path_of(shlex.split(GROUP.sub("", row))[1:]): row for row in rows}


# The client commands also take the global --url and --api-key after the command; the prose above the table
# says so once rather than every row.
GLOBAL_ONLY = {"url", "api_key"}


def shown_options(synopsis: str) -> dict[str, list[str]]:
    """The options a synopsis such as `submit FILE [--set PATH=VALUE] [--json]` shows: {--set: [PATH=VALUE], ...}
    (`[--event KIND ...]`, a repeatable option, shows KIND)."""
    return {
        group.split()[0]: [word for word in group.split()[1:] if word != "..."]
        for group in GROUP.findall(synopsis)
        if group.startswith("-")
    }


def accepted_options(command: Any) -> dict[str, list[str]]:
    """The options `command` takes, as a synopsis shows them (the long name, the metavar unless a flag)."""
    return {
        max(param.opts, key=len): [] if param.is_flag else [param.metavar]
        for param in command.params
        if param.param_type_name == "option" and "--help" not in param.opts and param.name not in GLOBAL_ONLY
    }


def test_the_command_table_shows_every_option_and_argument_with_the_clis_metavar() -> None:
    table = command_table()
    assert set(table) == set(commands()), table
    for path, command in commands().items():
        row = table[path]
        assert shown_options(row) == accepted_options(command), (path, row)
        arguments = [param.metavar for param in command.params if param.param_type_name == "argument"]
        words = shlex.split(row.replace("[", " ").replace("]", " "))
        assert [word for word in words if word in arguments] == arguments, (path, row)


def test_the_exact_command_of_the_fault_report_parses() -> None:
    assert "ganforge up --data-dir ./gf-data --port 8011" in README
    path, params = parse(shlex.split("up --data-dir ./gf-data --port 8011"))
    assert (path, params["data_dir"], params["port"]) == (["up"], Path("./gf-data"), 8011)


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
    found = deployment_commands()
    assert {argv[0] for argv in found} >= {"up", "api", "worker", "migrate"}, found
    for argv in found:
        try:
            parse(argv)
        except Exception as exc:  # click's usage errors
            raise AssertionError(f"`ganforge {' '.join(argv)}` does not parse: {exc}") from exc


def test_help_runs_as_a_process_without_the_servers_dependencies_loaded() -> None:
    code = (
        "import sys; from ganforge.cli import main; status = main(['--help']); "
        "heavy = {'torch', 'sqlalchemy', 'celery', 'uvicorn', 'fastapi', 'models'} & {m.split('.')[0] for m in sys.modules}; "
        "print('HEAVY', sorted(heavy)); sys.exit(status)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: ganforge [OPTIONS] COMMAND" in result.stdout and "HEAVY []" in result.stdout, result.stdout


@pytest.mark.parametrize("command", list(commands()))
def test_help_of_every_command_runs(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--help"]) == 0
    shown = capsys.readouterr().out
    assert f"Usage: ganforge {command}" in shown, shown
    # The commands on the store itself take --data-dir: the server's, and `keys` (create, list, revoke).
    on_the_store = command in ("up", "api", "worker", "migrate") or command.startswith("keys ")
    assert ("--data-dir" in shown) == on_the_store, shown


def settings_table() -> list[str]:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(GANFORGE_[A-Z0-9_]+)` \|", section, flags=re.M)


def test_the_settings_table_documents_every_setting_once() -> None:
    documented = settings_table()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == {f"GANFORGE_{name.upper()}" for name in Settings.model_fields}


def test_each_groups_help_summary_shows_its_commands_options() -> None:
    """`ganforge datasets --help` (and keys, study, webhooks) ends with one synopsis per command: each shows the
    options that command takes, as the README's table does."""
    groups = {name: group for name, group in typer.main.get_command(app).commands.items() if hasattr(group, "commands")}
    for name, group in groups.items():
        if not group.epilog:
            continue
        listed, _, common = group.epilog.partition("; each with ")  # options every command of the group takes
        synopses = {part.split()[0]: f"{part} {common}" for part in (p.strip() for p in listed.split(" | "))}
        assert set(synopses) == set(group.commands), (name, group.epilog)
        for sub, synopsis in synopses.items():
            assert shown_options(synopsis) == accepted_options(group.commands[sub]), (name, synopsis)
