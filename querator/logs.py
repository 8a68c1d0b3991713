"""Log output an operator can search: `key=value` text (the default) or one JSON object a line.

Events carry their details as fields (`extra={"fields": {...}}`) rather than inside the sentence, so
`user=`, `addr=` can be filtered on; the message stays a fixed phrase. Passwords are never a field.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _quoted(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\\'):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """`time=... level=info logger=querator msg="..." user=alice addr=127.0.0.1:5000`."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        line = " ".join(f"{key}={_quoted(value)}" for key, value in pairs.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """`{"time": ..., "level": ..., "logger": ..., "msg": ..., <fields>}`; a traceback goes in `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure(level: str, fmt: str) -> None:
    """The process's one handler, on stderr, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
