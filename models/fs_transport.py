"""kombu's file-system transport with atomic message files: the embedded default's broker.

kombu's own `_put` opens `<ms>_<uuid>.<queue>.msg` and then writes the body, so a
consumer listing the folder in between moves away an empty or half-written file and
its worker dies on `JSONDecodeError` (seen with many jobs posted at once). Here the
body is written to a hidden temporary name the consumer never matches (its name does
not end in `.<queue>.msg`), then renamed into place: a rename within one folder is
atomic, so a consumer sees a whole message or none.

`models.queue` registers this class under the `filesystem://` scheme, so the broker
URL users see does not change.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """A file-system channel whose messages appear in the queue folder whole."""

    def _put(self, queue: Any, message: Any, **_options: Any) -> None:  # type: ignore[override]  # kombu passes options
        """Put `message` onto `queue`: write a temporary file, then rename it to the message name.

        Raises kombu's ChannelError when the folder cannot be written.
        """
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(message)))  # type: ignore[no-untyped-call]
            os.replace(temporary, final)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """kombu's file-system transport with the atomic Channel above."""

    Channel = Channel
