"""`ganforge` on the command line: argument parsing, and how `ganforge up` stops.

The shutdown tests run the real thing: `ganforge up` (embedded: SQLite, the
file-system broker) as a process, told to stop the ways a user does — Ctrl-C,
its parent shell killed, `make run` told SIGINT — and check it stops its API and
worker within seconds, saying only INFO lines.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import typer

from ganforge.cli import main, parse
from ganforge.parent import ParentWatch, dying_of
from ganforge.supervisor import parent_watch
from tests.service import ROOT, free_port, service_env

# An idle Celery worker's warm shutdown alone takes ~4 s on Redis and ~8 s on the file-system broker
# (its event loop drains the broker for 2 s, twice, then its pool and timer threads wake each second).
STOP_WITHIN_SECONDS = 15.0


def _sigint_default() -> None:
    # A process started in the background by a non-interactive shell inherits SIGINT ignored; the user's doesn't.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- parsing ---------------------------------------------------------------------------------------------


def test_the_readme_fault_command_parses_with_the_global_option_after_the_subcommand() -> None:
    path, params = parse(["up", "--data-dir", "./gf-data", "--port", "8011"])
    assert (path, params["data_dir"], params["port"], params["host"], params["demo"]) == (
        ["up"],
        Path("./gf-data"),
        8011,
        "127.0.0.1",
        False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "/tmp/d", "up", "--port", "8011"],
        ["up", "--port", "8011", "--data-dir", "/tmp/d"],
        ["worker", "--data-dir", "/tmp/d"],
        ["--data-dir", "/tmp/d", "migrate"],
        ["api", "--data-dir", "/tmp/d", "--host", "0.0.0.0"],
        ["--data-dir", "/tmp/other", "api", "--data-dir", "/tmp/d"],  # after the command wins
    ],
)
def test_data_dir_parses_before_or_after_any_subcommand(argv: list[str]) -> None:
    assert parse(argv)[1]["data_dir"] == Path("/tmp/d")


def test_no_data_dir_leaves_the_setting_alone() -> None:
    assert parse(["worker"])[1]["data_dir"] is None


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error_naming_the_option(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--port", port]) == 2
    error = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "Invalid value for '--port'" in error, error


def test_an_option_the_subcommand_does_not_take_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--port", "8000"]) == 2
    assert "No such option: --port" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://a:1", "jobs", "--url", "http://b:2"],  # after the command wins
        ["jobs", "--url", "http://b:2", "--limit", "3"],
        ["datasets", "list", "--url", "http://b:2"],
        ["--url", "http://b:2", "show", "some-job"],
    ],
)
def test_url_and_api_key_parse_before_or_after_a_client_command(argv: list[str]) -> None:
    assert parse(argv)[1]["url"] == "http://b:2"
    assert parse([*argv, "--api-key", "k"])[1]["api_key"] == "k"


def test_a_url_given_after_the_command_is_the_one_used(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANFORGE_URL", "http://127.0.0.1:1")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert main(["jobs", "--url", nowhere]) == 5
    assert nowhere in capsys.readouterr().err


def test_help_puts_every_client_command_in_use_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    panels = re.split(r"╭─ ", capsys.readouterr().out)
    use = next(panel for panel in panels if panel.startswith("Use the service"))
    assert "datasets" in use and "submit" in use, use
    assert not any(panel.startswith("Commands") for panel in panels), panels


# --- input the CLI refuses: one line on stderr, exit 2, never a traceback -------------------------------------

NESTED = 100_000


@pytest.fixture
def refuse(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], str]:
    """Run `main(argv)` against a URL nothing listens on; assert exit 2 with one line; that line."""
    monkeypatch.setenv("GANFORGE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("GANFORGE_API_KEY", raising=False)

    def run(argv: list[str]) -> str:
        status = main(argv)
        error = capsys.readouterr().err
        assert status == 2 and len(error.splitlines()) == 1 and error.startswith("ganforge: "), (status, error)
        assert "\x1b" not in error, repr(error)  # printed escaped, if at all
        return error

    return run


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-4", 1e-4),
        ("2E-4", 2e-4),
        ("1.5e3", 1500.0),
        (".5e1", 5.0),
        ("1.0e-4", 1e-4),
        ("'1e-4'", "1e-4"),
        ("1e", "1e"),
    ],
)
def test_a_yaml_spec_reads_exponent_numbers_as_yaml_1_2_does(text: str, value: object) -> None:
    """PyYAML (YAML 1.1) reads `lr_d: 1e-4` as text, which the API refuses; a spec file reads it as the number."""
    from ganforge.specfile import load_spec_text

    assert load_spec_text(f"loss: {{name: wgan, lr_d: {text}}}", "spec.yaml")["loss"]["lr_d"] == value


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """The "billion laughs": 10 levels of 9 aliases each would expand to 10**9 strings."""
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [lol]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", "submit", str(bomb)],
        cwd=ROOT,
        env={**os.environ, "GANFORGE_URL": f"http://127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result
    assert "anchors and aliases" in result.stderr and "line 1" in result.stderr, result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("deep.json", "[" * NESTED + "]" * NESTED, "nested deeper than 32 levels"),
        ("deep.yaml", "[" * NESTED + "]" * NESTED, "nested deeper than 32 levels"),
        ("deep-block.yaml", "".join(f"{' ' * i}k{i}:\n" for i in range(40)), "nested deeper than 32 levels"),
        ("anchor.yaml", "loss: &l {name: nsgan}\n", "anchors and aliases"),
        ("nan.json", '{"loss": {"name": "nsgan", "lr_d": NaN}}', "NaN is not a number"),
        ("inf.yaml", "loss: {name: nsgan, lr_d: .inf}\n", "inf is not a number"),
        ("big.yaml", "name: " + "x" * (1024 * 1024), "larger than 1 MiB"),
        ("list.yaml", "- 1\n", "a spec is a mapping"),
        ("latin1.yaml", "name: caf\xe9", "not UTF-8"),
    ],
)
def test_a_spec_file_that_cannot_be_a_spec_is_one_line_exit_2(
    name: str, content: str, says: str, tmp_path: Path, refuse: Callable[[list[str]], str]
) -> None:
    path = tmp_path / name
    if name.startswith("latin1"):
        path.write_bytes(content.encode("latin-1"))
    else:
        path.write_text(content)
    error = refuse(["submit", str(path)])
    assert says in error and name in error, error


def test_a_deep_spec_on_stdin_is_refused_too(
    refuse: Callable[[list[str]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("[" * NESTED))
    assert "stdin: " in refuse(["submit", "-"])


@pytest.mark.parametrize("value", ["NaN", ".inf", "-.Inf", "Infinity", "-Infinity", ".NAN"])
def test_a_set_of_a_non_finite_number_is_refused(
    value: str, tmp_path: Path, refuse: Callable[[list[str]], str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("loss: {name: nsgan}\n")
    error = refuse(["submit", str(spec), "--set", f"loss.lr_d={value}"])
    assert f"--set 'loss.lr_d={value}'" in error and "no NaN or infinity" in error, error


def test_a_set_of_a_deep_or_aliased_value_is_a_plain_string() -> None:
    from ganforge.cli.overrides import parse_value

    assert parse_value("[" * NESTED) == "[" * NESTED
    bomb = "[&a [1, 1], *a, *a]"
    assert parse_value(bomb) == bomb


def test_a_set_of_a_yaml_flow_list_or_map_is_that_list_or_map(tmp_path: Path) -> None:
    """README: "the value is read as JSON or YAML, else as a string": `[nsgan, lsgan]` is a list, not its text."""
    from ganforge.cli.overrides import load_spec, parse_value

    spec = tmp_path / "study.yaml"
    spec.write_text("name: s\nlosses: [wgan]\n")
    overrides = ["losses=[nsgan, lsgan]", "loss={name: wgan, lr_d: 1e-4, betas: [0.5, 0.9]}", "tags.note=see: below"]
    loaded = load_spec(str(spec), overrides)
    assert loaded["losses"] == ["nsgan", "lsgan"], loaded
    assert loaded["loss"] == {"name": "wgan", "lr_d": 1e-4, "betas": [0.5, 0.9]}, loaded
    assert loaded["tags"] == {"note": "see: below"}, loaded  # not a flow collection: the text
    # what JSON cannot hold (a YAML date) leaves the text, as a date alone always did
    assert parse_value("[2026-01-01]") == "[2026-01-01]" and parse_value("2026-01-01") == "2026-01-01"


@pytest.mark.parametrize("value", ["[1, .inf]", "{lr: .nan}", "[1, NaN]"])
def test_a_set_of_a_list_or_map_holding_a_non_finite_number_is_refused(
    value: str, tmp_path: Path, refuse: Callable[[list[str]], str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("loss: {name: nsgan}\n")
    error = refuse(["submit", str(spec), "--set", f"loss.x={value}"])
    assert f"--set 'loss.x={value}'" in error and "is not a number" in error, error


@pytest.mark.parametrize(
    ("codes", "says"),
    [("{categorical: 3}", "not JSON"), ('{"continuous": [NaN]}', "NaN"), ("[3]", "expected a JSON object")],
)
def test_generate_codes_that_are_not_a_json_object_are_exit_2_naming_the_option(
    codes: str, says: str, refuse: Callable[[list[str]], str]
) -> None:
    error = refuse(["generate", "some-job", "--codes", codes])
    assert error.startswith("ganforge: --codes ") and says in error and '"categorical": 3' in error, error


def test_generate_sends_its_codes_to_the_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The API checks `codes` against the job before it looks for a checkpoint: its answer shows what was sent."""
    from tests.conftest import api_only

    spec = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "loss": {"name": "infogan", "categorical_codes": [4], "continuous_codes": 2},
        "training": {"steps": 50, "batch_size": 64},
    }
    with api_only("embedded", tmp_path) as deployment, deployment.client() as client:
        created = client.post("/v1/jobs", json=spec)
        assert created.status_code == 201, created.text
        job = created.json()["id"]  # queued: no worker, no checkpoint
        target = str(tmp_path / "x.npy")
        argv = ["--url", deployment.url, "--api-key", "key-a", "generate", job, "-n", "2", "-o", target]
        assert main([*argv, "--codes", '{"categorical": 7, "continuous": [0.5, -0.5]}']) == 2
        refused = capsys.readouterr().err
        assert "codes.categorical: 7 is out of range" in refused and "0..3" in refused, refused
        # codes that fit pass the check; the request then stops at the missing checkpoint
        status = main([*argv, "--codes", '{"categorical": 3, "continuous": [0.5, -0.5]}'])
        answered = capsys.readouterr().err
        assert status != 0 and "codes" not in answered and "checkpoint" in answered, (status, answered)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--url", "ftp://x", "jobs"], "ftp://x"),
        (["jobs", "--url", "http://[::1"], "http://[::1"),
        (["show", "a" * 100_000], "100000 characters"),
        (["show", "\x1b]0;TITLE\x07\x1b[31mX"], "\\x1b]0;TITLE\\x07\\x1b[31mX"),
        (["datasets", "show", "x\x9b31m"], "\\x9b31m"),
    ],
)
def test_an_argument_the_sdk_refuses_is_one_line_exit_2(
    argv: list[str], says: str, refuse: Callable[[list[str]], str]
) -> None:
    error = refuse(argv)
    assert says in error, error
    assert "\x1b" not in error and "\x07" not in error and "\x9b" not in error, repr(error)


def test_a_value_error_of_our_own_code_is_not_hidden_as_usage() -> None:
    from ganforge.cli import app
    from ganforge.cli.context import connect

    context = typer.Context(typer.main.get_command(app))
    with pytest.raises(ValueError, match="a bug"), connect(context, "http://127.0.0.1:1"):
        raise ValueError("a bug")


def test_a_password_in_the_url_is_never_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GANFORGE_URL", raising=False)
    for url in (f"http://bob:s3cr3t@127.0.0.1:{free_port()}", "ftp://bob:s3cr3t@x", "http://bob:s3cr3t@[::1"):
        status = main(["jobs", "--url", url])
        error = capsys.readouterr().err
        assert status in (2, 5) and "s3cr3t" not in error, error
        assert "bob" not in error or "bob:***@" in error, error  # httpx names the URL without its user


# --- what is printed ---------------------------------------------------------------------------------------


def test_clean_escapes_control_characters_and_mask_url_hides_passwords() -> None:
    from ganforge.cli.text import clean, clean_tree, mask_url

    assert (
        clean("a\x1b]0;T\x07\x1b[31mb\n\t\x9b\u202e[bold]é") == "a\\x1b]0;T\\x07\\x1b[31mb\\x0a\\x09\\x9b\\u202e[bold]é"
    )
    assert clean_tree({"t\x1b": ["\x07", 1, None]}) == {"t\\x1b": ["\\x07", 1, None]}
    assert mask_url("http://bob:s3cr3t@host:8000/x") == "http://bob:***@host:8000/x"
    assert mask_url("http://bob:s3@cr3t@[::1") == "http://bob:***@[::1"
    assert mask_url("http://host:8000") == "http://host:8000"


def test_tables_print_names_literally_with_control_characters_escaped() -> None:
    from ganforge.cli import render

    job = {
        "id": "00000000-0000-4000-8000-000000000000",
        "name": "[bold]x[/bold] :x:\x1b]0;TITLE\x07",
        "status": "running",
        "owner": "o\x1b[2J",
        "progress": {"step": 1, "total_steps": 2, "steps_per_sec": None, "eta_seconds": None},
        "latest_metrics": {},
        "created_at": "2026-11-29T00:00:00Z",
        "attempt": 1,
        "max_attempts": 3,
        "error": "boom\x1b[31m",
        "tags": {"t\x1b[31m": "v\x07"},
        "spec": {"name": "[bold]x\x1b"},
    }
    for renderable in (render.jobs_table([job]), render.job_details(job)):
        console = render.SafeConsole(file=io.StringIO(), width=200, markup=False, emoji=False, color_system=None)
        console.print(renderable)
        out = console.file.getvalue()  # type: ignore[attr-defined]
        assert "\x1b" not in out and "\x07" not in out, repr(out)
        assert "[bold]x[/bold] :x:\\x1b]0;TITLE\\x07" in out, out
    assert "t\\x1b[31m:v\\x07" in out and "boom\\x1b[31m" in out, out
    console = render.SafeConsole(file=io.StringIO(), markup=False, color_system=None)
    console.print("say \x1b[31m[red]")
    assert console.file.getvalue() == "say \\x1b[31m[red]\n"  # type: ignore[attr-defined]


def test_json_output_escapes_every_control_character_and_still_parses(capsys: pytest.CaptureFixture[str]) -> None:
    from ganforge.cli import render

    value = {"name\x1b": ["\x9b31m", "\u202eevil", "\x7f", "café"]}
    render.print_json(value)
    render.print_json_line(value)
    out = capsys.readouterr().out
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", out), repr(out)
    pretty, line = out.split("\n}\n")
    assert json.loads(pretty + "}") == json.loads(line) == value and "café" in out


@pytest.mark.parametrize("width", [80, 60, 40])
def test_the_follow_bar_fits_a_narrow_terminal_without_wrapping(width: int) -> None:
    from ganforge.cli import render

    console = render.SafeConsole(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress = render.follow_progress(console)
    latest = {"loss_d": 1.481, "loss_g": 0.8585, "modes_covered": 7, "hq_fraction": 0.169}
    progress.add_task(
        "cancelling", total=1_000_000, completed=290_000, metrics=render.metrics_text(latest), rate=1234.5, eta=3725
    )
    console.print(progress.get_renderable())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
    assert "290000/1000000" in lines[0] and "ETA 1h02m" in lines[0], lines
    assert "loss_d 1.481" in lines[1], lines
    if width >= 72:
        assert "1234.5 steps/s" in lines[0], lines


def test_the_follow_bar_is_one_line_in_a_log() -> None:
    from ganforge.cli import render

    console = render.SafeConsole(file=io.StringIO(), width=render.WIDE, color_system=None)
    progress = render.follow_progress(console)
    progress.add_task("succeeded", total=2000, completed=2000, metrics="loss_d 1.2  loss_g 0.8", rate=15.9, eta=None)
    console.print(progress.get_renderable())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "2000/2000 15.9 steps/s ETA - loss_d 1.2" in lines[0], lines


def test_migrate_says_what_it_migrated_without_alembic_plugin_lines(tmp_path: Path) -> None:
    env = service_env(tmp_path, None, None)
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result
    assert "setup plugin" not in result.stderr and "Running upgrade" in result.stderr, result.stderr


# --- watching the parent -----------------------------------------------------------------------------------

BLOCKS_SIGINT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
    "print('ready', flush=True); time.sleep(60)\n"
)
CATCHES_SIGINT = "import time\nprint('ready', flush=True); time.sleep(60)\n"  # Python catches SIGINT


@pytest.mark.parametrize(("code", "expected"), [(BLOCKS_SIGINT, signal.SIGINT), (CATCHES_SIGINT, None)])
def test_dying_of_sees_a_stop_signal_held_blocked_at_its_default_action(
    code: str, expected: signal.Signals | None
) -> None:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, preexec_fn=_sigint_default)
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        assert dying_of(process.pid) == expected
    finally:
        process.kill()
        process.wait()


def test_dying_of_a_missing_process_is_none() -> None:
    assert dying_of(2**22 + 1) is None  # above Linux's largest pid


def test_parent_watch_says_why_once_the_parent_is_gone() -> None:
    watch = ParentWatch(pid=os.getppid())
    assert watch.reason_to_stop() is None
    assert ParentWatch(pid=1).reason_to_stop() is None  # started by init: nothing to follow
    gone = ParentWatch(pid=os.getppid() + 1 if os.getppid() > 1 else 2)
    assert gone.reason_to_stop() == f"its parent process {gone.pid} exited"


def test_under_nohup_up_does_not_follow_its_parent() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert parent_watch() is None
    finally:
        signal.signal(signal.SIGHUP, previous)
    watch = parent_watch()
    assert watch is not None and watch.pid == os.getppid()


# --- `ganforge up` stopping ---------------------------------------------------------------------------------


@dataclass
class Up:
    """A `ganforge up` under test, its output in a file."""

    launcher: subprocess.Popen[bytes]  # `ganforge up` itself, or the shell or make that started it
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Wait for /readyz and for the worker's ' ready.' line (its pool exists: the idle case is real)."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.launcher.poll() is None, self.output()
            try:
                api_ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                api_ready = False
            if api_ready and " ready." in self.output():
                return
            time.sleep(0.2)
        raise AssertionError("ganforge up did not become ready:\n" + self.output())

    def up_pid(self) -> int:
        """`ganforge up`'s pid: the launcher's one child (make runs its recipe without a shell)."""
        children = subprocess.run(["pgrep", "-P", str(self.launcher.pid)], capture_output=True, text=True)
        pids = [int(pid) for pid in children.stdout.split()]
        assert len(pids) == 1, (children.stdout, self.output())
        assert "ganforge" in Path(f"/proc/{pids[0]}/cmdline").read_text(), self.output()
        return pids[0]

    def descendants(self, pid: int) -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return [int(c) for c in children] + [d for c in children for d in self.descendants(int(c))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> float:
    """Seconds until none of `pids` runs; fails past `timeout`."""
    start = time.monotonic()
    while any(alive(pid) for pid in pids):
        assert time.monotonic() - start < timeout, [pid for pid in pids if alive(pid)]
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[[list[str]], Up]]:
    """Start a command that runs `ganforge up` (embedded, free port, temp data dir); kill what is left after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], cwd: Path = ROOT) -> Up:
        port = free_port()
        env = service_env(tmp_path / "data", None, None)
        log = tmp_path / "up.log"
        command = [part.replace("{port}", str(port)).replace("{data}", str(tmp_path / "data")) for part in argv]
        launcher = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_sigint_default,
        )
        started.append(launcher)
        return Up(launcher, port, log)

    yield start
    for launcher in started:
        for pid in Up(launcher, 0, Path()).descendants(launcher.pid) + [launcher.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.wait()


UP = [sys.executable, "-m", "ganforge", "up", "--data-dir", "{data}", "--port", "{port}"]


def assert_quiet_stop(up: Up) -> None:
    output = up.output()
    assert "ERROR" not in output and "Traceback" not in output, output
    assert "No hostname was supplied" not in output and "setup plugin" not in output, output  # start-up noise
    assert "hand" not in output.lower(), output  # no job ran: nothing was handed back
    assert "got SIGINT" in output or "parent process" in output, output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{up.port}/healthz", timeout=2)


def test_ctrl_c_stops_an_idle_up_promptly_with_info_lines_only(start_up: Callable[[list[str]], Up]) -> None:
    up = start_up(UP)
    up.wait_ready()
    processes = [up.launcher.pid, *up.descendants(up.launcher.pid)]
    assert len(processes) >= 4, processes  # up, the API, the worker and its pool process
    up.launcher.send_signal(signal.SIGINT)
    seconds = wait_gone(processes, STOP_WITHIN_SECONDS)
    assert up.launcher.wait() == 0
    assert_quiet_stop(up)
    print(f"\nidle `ganforge up` stopped {seconds:.1f} s after SIGINT")


def test_ctrl_c_of_up_running_a_job_hands_the_job_back(start_up: Callable[[list[str]], Up]) -> None:
    """`up --demo` with API keys on submits the demo as the first key's owner and says where to watch it."""
    up = start_up([*UP, "--demo"])
    up.wait_ready()
    deadline = time.monotonic() + 60
    while not (announced := re.search(r"demo job (\S+) submitted", up.output())):
        assert time.monotonic() < deadline, up.output()
        time.sleep(0.2)
    job = {"id": announced.group(1)}
    url = f"http://127.0.0.1:{up.port}"
    assert f"{url}/#/jobs/{job['id']}" in up.output() and f"ganforge --url {url} follow {job['id']}" in up.output()
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer key-a"}) as client:
        deadline = time.monotonic() + 90
        while client.get(f"/v1/jobs/{job['id']}", timeout=30).json()["progress"]["step"] < 50:
            assert time.monotonic() < deadline, up.output()
            time.sleep(0.2)
    processes = [up.launcher.pid, *up.descendants(up.launcher.pid)]
    up.launcher.send_signal(signal.SIGINT)
    seconds = wait_gone(processes, STOP_WITHIN_SECONDS)
    output = up.output()
    assert up.launcher.wait() == 0 and "Traceback" not in output, output
    assert f"to checkpoint job {job['id']} and put it back in the queue" in output, output
    with sqlite3.connect(up.log.parent / "data" / "ganforge.db") as store:
        status, step = store.execute(
            "SELECT j.status, max(c.step) FROM jobs j JOIN checkpoints c ON c.job_id = j.id WHERE j.id = ?",
            (job["id"],),
        ).fetchone()
    assert status == "queued" and step >= 50, (status, step)  # checkpointed at shutdown, back in the queue
    print(f"\n`ganforge up` running a job stopped {seconds:.1f} s after SIGINT, job handed back at step {step}")


def test_up_runs_its_own_packages_from_a_folder_with_same_named_ones(
    start_up: Callable[[list[str]], Up], tmp_path: Path
) -> None:
    """An ML project often has its own `models/` or `api/`: `ganforge up` started there (the installed command, as
    the README runs it) serves and trains with ganforge's packages, never imports the project's."""
    project = tmp_path / "project"
    for package in ("api", "models", "worker", "migrations"):
        (project / package).mkdir(parents=True)
        trap = f"raise SystemExit('imported the project folder {package}/ instead of ganforge\\'s')\n"
        for module in ("__init__.py", "app.py", "celery_app.py", "settings.py"):
            (project / package / module).write_text(trap)
    up = start_up([str(Path(sys.executable).parent / "ganforge"), *UP[3:], "--demo"], cwd=project)
    up.wait_ready()
    deadline = time.monotonic() + 90
    while not (announced := re.search(r"demo job (\S+) submitted", up.output())):
        assert time.monotonic() < deadline, up.output()
        time.sleep(0.2)
    with httpx.Client(base_url=f"http://127.0.0.1:{up.port}", headers={"Authorization": "Bearer key-a"}) as client:
        while client.get(f"/v1/jobs/{announced.group(1)}", timeout=30).json()["progress"]["step"] < 1:
            assert time.monotonic() < deadline, up.output()
            time.sleep(0.2)
    assert "imported the project folder" not in up.output(), up.output()


def test_up_stops_when_its_parent_shell_is_killed(start_up: Callable[[list[str]], Up]) -> None:
    # `; true` keeps the shell alive as up's parent instead of exec-ing up.
    shell = start_up(["/bin/sh", "-c", " ".join(UP) + "; true"])
    shell.wait_ready()
    up_pid = shell.up_pid()
    processes = [up_pid, *shell.descendants(up_pid)]
    shell.launcher.kill()
    shell.launcher.wait()
    seconds = wait_gone(processes, STOP_WITHIN_SECONDS)
    assert_quiet_stop(shell)
    print(f"\n`ganforge up` stopped {seconds:.1f} s after its parent shell was killed")


def test_sigint_to_make_alone_stops_make_run(start_up: Callable[[list[str]], Up]) -> None:
    # -o: the venv is there; make must not rebuild it however new pyproject.toml is.
    make = start_up(
        ["make", "--no-print-directory", "-o", ".venv/bin/ganforge", "run", "UP_ARGS=--data-dir {data} --port {port}"]
    )
    make.wait_ready()
    up_pid = make.up_pid()
    processes = [make.launcher.pid, up_pid, *make.descendants(up_pid)]
    make.launcher.send_signal(signal.SIGINT)  # make's pid alone, not its process group
    seconds = wait_gone(processes, STOP_WITHIN_SECONDS)
    assert make.launcher.wait() == -signal.SIGINT
    assert_quiet_stop(make)
    print(f"\n`make run` stopped {seconds:.1f} s after SIGINT to make alone")


@pytest.mark.parametrize("command", ["migrate", "up"])
def test_invalid_settings_refuse_to_start_with_one_clear_line(command: str, tmp_path: Path) -> None:
    env = service_env(tmp_path, None, None, GANFORGE_ENVIRONMENT="production", GANFORGE_API_KEYS=" ")
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("ganforge: refusing to start, the GANFORGE_* settings are invalid:"), result.stderr
    assert "only whitespace" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "ganforge.db").exists()  # nothing was started or created


def test_an_invalid_setting_is_named_in_the_refusal(tmp_path: Path) -> None:
    env = service_env(tmp_path, None, None, GANFORGE_LEASE_TIMEOUT_SECONDS="soon")
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "GANFORGE_LEASE_TIMEOUT_SECONDS: Input should be a valid number" in result.stderr, result.stderr


def test_a_killed_up_takes_its_api_and_worker_with_it(start_up: Callable[[list[str]], Up]) -> None:
    up = start_up(UP)
    up.wait_ready()
    children = up.descendants(up.launcher.pid)
    up.launcher.kill()  # no handler runs: the kernel's parent-death signal must stop them
    up.launcher.wait()
    seconds = wait_gone(children, STOP_WITHIN_SECONDS)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{up.port}/healthz", timeout=2)
    print(f"\nAPI and worker of a SIGKILLed `ganforge up` gone {seconds:.1f} s later")


def test_a_server_pins_the_packages_its_install_can_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker extra brings no Alembic: `ganforge worker` from such an install skips pinning `migrations`
    (which imports it) instead of failing; a missing package of ganforge's own is still an error."""
    from ganforge import child

    monkeypatch.delitem(sys.modules, "migrations", raising=False)
    monkeypatch.setitem(sys.modules, "alembic", None)  # `import alembic` raises ImportError(name="alembic")
    assert child.pin_packages() == ["api", "worker", "models", "ganforge"]
    monkeypatch.delitem(sys.modules, "migrations", raising=False)
    monkeypatch.setattr(child, "PACKAGES", ("api", "no_such_ganforge_package"))
    with pytest.raises(ImportError):
        child.pin_packages()
