"""``cancelpool serve``'s log, on the standard library's ``logging``.

The server logs to the ``cancelpool.serve`` logger with the job and node as fields of
the record (``extra``): ``job`` (queue id), ``job_name``, ``node`` (the server's id)
and ``node_label`` (``--node-name``). The CLI installs one handler on stderr:

* ``text``: ``12:00:01 cancelpool serve: message`` (the line it always printed), with
  every job-provided character made visible, so a job name cannot forge a log line or
  drive the terminal;
* ``json``: one JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, ``node``, ``node_label``, ``job``, ``name``. ``json.dumps`` escapes every
  non-ASCII and control character, so a line is valid JSON and one line whatever a job
  is called.

A record with ``always=True`` (the dashboard's address, the only way in) passes
whatever the level.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

from .._visible import visible

LOGGER_NAME = "cancelpool.serve"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

#: Record attributes the server sets (``extra``) and the JSON key each is written as.
_FIELDS = {"node": "node", "node_label": "node_label", "job": "job", "job_name": "name"}


class TextFormatter(logging.Formatter):
    """``HH:MM:SS cancelpool serve: message``; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{stamp} cancelpool serve: {level}{visible(text)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, ASCII only."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attribute, key in _FIELDS.items():
            value = getattr(record, attribute, None)
            if value is not None:
                entry[key] = value if isinstance(value, (int, str)) else str(value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


class _Threshold(logging.Filter):
    """Records at ``level`` or above, and those marked ``always``."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or bool(getattr(record, "always", False))


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> logging.Logger:
    """Send ``cancelpool.serve`` (and the pool's ``cancelpool`` logger, whose records
    get the same format) to ``stream`` (stderr) at ``level`` in ``fmt``; returns the
    server's logger. Replaces what an earlier call installed (tests run several)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    threshold = getattr(logging, level.upper())
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Threshold(threshold))
    handler.set_name("cancelpool-serve")
    logger = logging.getLogger("cancelpool")  # the pool's records too, in one format
    for old in [h for h in logger.handlers if h.get_name() == "cancelpool-serve"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    # Records below INFO are not even made unless asked for; the handler's filter
    # lets the ``always`` ones through above that.
    logger.setLevel(min(threshold, logging.INFO))
    logger.propagate = False
    return logging.getLogger(LOGGER_NAME)
