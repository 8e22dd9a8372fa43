"""Server-sent events: a byte decoder for `data:` payloads, and `Retry-After` in seconds.

Why the SSE parsing is done by hand: models emit U+2028, U+0085 and friends inside content;
`str.splitlines()` and httpx's `aiter_lines()` treat those as line breaks and cut JSON chunks
in half (seen at 32 users). SSE lines end with `\\n` only, so we decode bytes incrementally
and split on `\\n` alone.
"""

from __future__ import annotations

import codecs
import email.utils
from datetime import UTC, datetime


class SSEDecoder:
    """Bytes in, `data:` payloads out; split on `\\n` only (see the module docstring).

    UTF-8 is decoded incrementally, so a multi-byte character split across two network
    reads is joined, not replaced. `\\r` before `\\n` is dropped (JSON escapes every raw
    `\\r`, so it cannot be content). Comments (`:`) and other fields are ignored.
    """

    __slots__ = ("_data", "_decode", "_tail")

    def __init__(self) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._tail = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        lines = (self._tail + self._decode(chunk)).split("\n")
        self._tail = lines.pop()
        events: list[str] = []
        data = self._data
        for line in lines:
            if line[-1:] == "\r":
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else "\n".join(data))
                    data.clear()
            elif line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
        return events

    def finish(self) -> list[str]:
        """At end of stream: an event whose blank line never came is still delivered; a
        line cut off before its `\\n` is not (it is incomplete)."""
        try:
            self._decode(b"", True)
        except UnicodeDecodeError:
            pass  # a character cut off by the end of the stream: part of an incomplete line
        events = ["\n".join(self._data)] if self._data else []
        self._data.clear()
        return events


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
