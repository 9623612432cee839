"""The `ganforge` command line: the service's processes and a client of its API.

    ganforge up --demo                              # embedded default: migrate, API + one worker, a demo job
    ganforge submit spec.yaml --set loss.lr_d=1e-4 --follow
    ganforge jobs --status running
    ganforge study submit study.yaml --follow       # several losses and seeds, compared
    ganforge generate JOB -n 64 -o samples.png      # sample a trained job's generator on the service
    ganforge keys create --owner team-a --scopes read,submit --ttl 30d   # an API key, on the store itself
    ganforge quota                                  # your quotas and what you use of them

Server commands (`up`, `api`, `worker`, `migrate`, in server.py) import the server's
dependencies only when they run: `ganforge --help` and every client command work with
the client install alone (httpx, pydantic, typer, rich, pyyaml). Client commands talk
HTTP through `ganforge.client` to `--url` (GANFORGE_URL, default http://127.0.0.1:8000)
with `--api-key` (GANFORGE_API_KEY). Exit statuses: ganforge/cli/exits.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ganforge.cli import datasets, generate, jobs, keys, quota, server, studies, webhooks
from ganforge.cli.context import DEFAULT_URL, Options

app = typer.Typer(
    name="ganforge",
    help="GAN training as a service: run the service, or submit and follow jobs on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="GANFORGE_URL", metavar="URL", help=f"the service (default {DEFAULT_URL})"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="GANFORGE_API_KEY", metavar="KEY", help="API key (Bearer)")
    ] = None,
    data_dir: Annotated[Path | None, server.DATA_DIR] = None,
) -> None:
    """GAN training as a service: run the service, or submit and follow jobs on it."""
    ctx.obj = Options(url=url, api_key=api_key, data_dir=data_dir)


server.register(app)
jobs.register(app)
generate.register(app)
quota.register(app)
app.add_typer(datasets.app, name="datasets", rich_help_panel="Use the service")
app.add_typer(studies.app, name="study", rich_help_panel="Use the service")
app.add_typer(webhooks.app, name="webhooks", rich_help_panel="Use the service")
keys.register(app)  # `keys` and `whoami`


def _unparsed(context: Any) -> list[str]:
    # click 8.2+ (and typer's own copy of it) keeps the command's words in _protected_args; click 8.1 without "_".
    protected = getattr(context, "_protected_args", None)
    return [*(protected if protected is not None else context.protected_args), *context.args]


def parse(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse `argv` as `main` would, running nothing: the command path (`["datasets", "upload"]`) and its
    parameters, the global options' merged in (an option given after the command wins over the same before it).

    Raises the usage error click raises (its `exit_code` is 2) when `argv` does not parse.
    """
    command = typer.main.get_command(app)
    context = command.make_context("ganforge", list(argv))
    params = dict(context.params)
    path: list[str] = []
    # The group keeps the words after its own options unparsed until it runs; resolve them one level at a time.
    rest = _unparsed(context)
    while rest and hasattr(command, "resolve_command"):
        name, sub, rest = command.resolve_command(context, rest)
        assert name is not None and sub is not None
        context = sub.make_context(name, rest, parent=context)
        params.update({key: value for key, value in context.params.items() if value is not None or key not in params})
        path.append(name)
        command, rest = sub, _unparsed(context)
    return path, params


def main(argv: list[str] | None = None) -> int:
    """Run `ganforge` with `argv` (default sys.argv[1:]); the exit status. `api` and `worker` exec.

    Exit statuses (ganforge/cli/exits.py): 0 ok, 1 job failed, 2 usage, 3 not found, 4 auth, 5 unreachable.
    """
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="ganforge", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0
