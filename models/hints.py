"""The `ganforge` command an operator can paste to reach the same job store a process uses.

    store_command(Path("/srv/gf-data"), "keys")   # 'ganforge --data-dir /srv/gf-data keys' (not the default)
    store_command(Path("ganforge-data").resolve(), "keys")  # 'ganforge keys'
    store_note()                                   # ' with the same GANFORGE_DATABASE_URL' when that is set

A hint that prints `ganforge keys create ...` for a service started with `--data-dir DIR` sent the user to an
empty store ("cannot open the job store"); the hints say what the command needs. Standard library only: the API
imports it (api/deps.py) without the command line's dependencies.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

DEFAULT_DATA_DIR = Path("ganforge-data")  # models/settings.py Settings.data_dir's default, relative to the cwd


def _database_url_set() -> bool:
    return bool(os.environ.get("GANFORGE_DATABASE_URL", "").strip())


def store_command(data_dir: Path, command: str) -> str:
    """`ganforge COMMAND`, with `--data-dir DIR` (shell-quoted) when `data_dir` is not the default in the current
    directory and no GANFORGE_DATABASE_URL is set (the data dir then names no store)."""
    if _database_url_set() or data_dir == DEFAULT_DATA_DIR.expanduser().resolve():
        return f"ganforge {command}"
    return f"ganforge --data-dir {shlex.quote(str(data_dir))} {command}"


def store_note() -> str:
    """' with the same GANFORGE_DATABASE_URL' when it is set (its value is not printed: it may hold a password);
    '' otherwise."""
    return " with the same GANFORGE_DATABASE_URL" if _database_url_set() else ""
