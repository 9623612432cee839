"""Text from users and the service made safe to print: control characters shown escaped, passwords masked.

    clean("name\\x1b]0;TITLE\\x07")            # 'name\\\\x1b]0;TITLE\\\\x07': the terminal sees no escape sequence
    mask_url("http://bob:s3cr3t@host:8000")  # 'http://bob:***@host:8000'

A job name, a tag, an error message or a field path comes from whoever submitted the job or
from the server; printed raw, an ESC could retitle the terminal, move the cursor or hide
text. Rich markup is off on every console of the CLI (render.py), so `[bold]` prints as is.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, and the bidirectional overrides that can reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object) -> str:
    """`str(text)` with every control character (newlines and tabs too) written as `\\x1b`, `\\u202e`."""
    return _UNSAFE.sub(_escape, str(text))


def clean_tree(value: Any) -> Any:
    """`value` (the JSON of an API answer) with `clean` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(key): clean_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_tree(item) for item in value]
    return value


def mask_url(url: str) -> str:
    """`url` with the password of its user info replaced by `***` (the SDK's masking, one for both)."""
    # Imported here: `ganforge --help` must not load the SDK (it brings models.spec).
    from ganforge.client.config import mask_url as masked

    return masked(url)
