"""Logging set-up for cancelpool's own logger, as ``configure_logging`` in the seed.

cancelpool logs on the standard library logger ``"cancelpool"`` and configures
nothing by itself. :func:`configure_logging` is a one-call set-up for that logger
only (never the root logger): a level, and plain or JSON lines.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

__all__ = ("JsonFormatter", "configure_logging", "get_logger")

LOGGER_NAME = "cancelpool"

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``extra=`` fields
    (an operation's ``log_context()``, say) and the traceback if any.

    Values JSON cannot hold are written as their ``repr``, so a log call never
    fails on what it was given.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=repr)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (so a second call replaces it)."""


def configure_logging(
    level: int | str = "INFO",
    *,
    json_output: bool = False,
    log_level: int | str | None = None,
    stream: IO[str] | None = None,
) -> logging.Logger:
    """Send cancelpool's log records to ``stream`` (stderr by default) at ``level``.

    Example::

        configure_logging("DEBUG")                     # see the cancellation flow
        configure_logging(logging.INFO, json_output=True)

    Calling it again replaces the earlier set-up (no duplicate lines). Only the
    ``cancelpool`` logger is touched; it stops propagating to the root logger so
    that a line is not printed twice.

    Args:
        level: a logging level (``logging.DEBUG``) or its name (``"DEBUG"``).
        json_output: one JSON object per line (:class:`JsonFormatter`) instead of
            plain text.
        log_level: the seed library's name for ``level``; wins when given.
        stream: where to write.

    Returns:
        The ``cancelpool`` logger.

    Raises:
        ValueError: ``level`` is not a logging level.
    """
    chosen = log_level if log_level is not None else level
    if isinstance(chosen, str):
        number = logging.getLevelName(chosen.upper())
        if not isinstance(number, int):
            raise ValueError(
                f"unknown log level {chosen!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
    elif isinstance(chosen, int) and not isinstance(chosen, bool):
        number = chosen
    else:
        raise ValueError(f"log level must be a level name or number, not {chosen!r}")
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
        old.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_output else logging.Formatter(_PLAIN_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(number)
    logger.propagate = False
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """A standard library logger: ``name``, or cancelpool's own when None."""
    return logging.getLogger(name or LOGGER_NAME)
