"""Where ``cancelpool serve`` gets its settings: the command line, ``CANCELPOOL_*``
environment variables, a TOML file (``--config FILE``), the defaults; in that order of
precedence (click's own: command line > environment > ``default_map`` > default).

The file holds the options by their long names, ``-`` or ``_`` alike::

    db = "/var/lib/cancelpool/queue.db"
    allow = ["myapp.tasks:*"]
    workers = 4
    on-shutdown = "requeue"
    grace = 30
    log-format = "json"

Every value goes through the same conversion and check as the command line's (a TOML
number or boolean is read as the text it would be typed as, so ``workers = 2.5`` is an
error, not 2), and a bad one is a usage error (exit 2) that names where it came from:
``$CANCELPOOL_WORKERS: ...`` or ``/etc/cancelpool.toml: workers: ...``. The file can
choose which code the server imports (``allow``, ``path``), so it must be the user's
own (or root's) and not writable by group or others: refused otherwise (exit 3).
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

#: ``ctx.meta`` key: the config file read, for error messages.
_META_FILE = "cancelpool.config_file"
#: The largest config file read (a few settings take a few hundred bytes).
_MAX_BYTES = 1 << 20


class ConfigError(click.ClickException):
    """A bad setting, from wherever it came: exit 2, like a usage error."""

    exit_code = 2


class UnsafeConfig(click.ClickException):
    """A config file others could write: exit 3, like any file refused as unsafe."""

    exit_code = 3


def option_key(param: click.Parameter) -> str:
    """The key of an option in the file: its long name without dashes, ``_`` for ``-``
    (``--cancel-grace`` -> ``cancel_grace``, ``--path`` -> ``path``)."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    name = longs[0] if longs else (param.name or "")
    return name.lstrip("-").replace("-", "_")


class SourcedOption(click.Option):
    """An option whose bad value is reported with its source: the environment variable
    or the config file and key it came from (the command line's are click's own)."""

    def consume_value(self, ctx: click.Context, opts: Any) -> tuple[Any, ParameterSource]:
        value, source = super().consume_value(ctx, opts)
        self._source = source
        return value, source

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.ClickException as exc:
            where = self._where(ctx)
            if where is None or exc.exit_code != 2:  # a usage error, not "no web extra"
                raise
            option = max(self.opts, key=len)
            raise ConfigError(f"{where}: invalid value for {option}: {exc.message}") from None

    def _where(self, ctx: click.Context) -> str | None:
        source = getattr(self, "_source", None)
        if source is ParameterSource.ENVIRONMENT:
            names = [self.envvar] if isinstance(self.envvar, str) else list(self.envvar or ())
            found = [name for name in names if name in os.environ]
            return f"${found[0] if found else names[0]}"
        if source is ParameterSource.DEFAULT_MAP:
            return f"{ctx.meta.get(_META_FILE, 'the config file')}: {option_key(self)}"
        return None


def load_config(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``--config FILE`` (eager): read the file into ``ctx.default_map``, checked for
    unknown keys and value types here, converted by each option later."""
    if value is None:
        return None
    path = Path(value)
    ctx.meta[_META_FILE] = str(path)
    options = {
        option_key(p): p
        for p in ctx.command.params
        if isinstance(p, click.Option) and p.name != param.name
    }
    table = _read(path)
    defaults: dict[str, Any] = dict(ctx.default_map or {})
    for key, raw in table.items():
        option = options.get(key.replace("-", "_"))
        if option is None or option.name is None:
            known = ", ".join(sorted(options))
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
        defaults[option.name] = _as_typed(path, key, raw, multiple=option.multiple)
    ctx.default_map = defaults
    return str(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        # O_NONBLOCK: a FIFO (or a device) opens at once and is refused below, instead
        # of blocking the server's start until someone writes to it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if info.st_uid not in (os.getuid(), 0) or info.st_mode & 0o022:
            raise UnsafeConfig(
                f"{path}: refused: the config file chooses the code the server runs, so it "
                "must belong to you (or root) and not be writable by group or others "
                f"(chmod go-w {path})"
            )
        with os.fdopen(fd, "rb") as file:
            fd = -1
            data = file.read(_MAX_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > _MAX_BYTES:  # never parse a cut file: what is past the cut would be lost
        raise ConfigError(f"{path}: larger than {_MAX_BYTES >> 20} MiB: not a config file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except ValueError as exc:  # TOMLDecodeError, and int()'s digit limit on a huge number
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _as_typed(path: Path, key: str, raw: Any, *, multiple: bool) -> Any:
    """The text a TOML value would be typed as (a list of them for a repeatable
    option), for the option's own conversion."""
    if multiple:
        items = raw if isinstance(raw, list) else [raw]
        return [_scalar(path, key, item) for item in items]
    if isinstance(raw, list):
        raise ConfigError(f"{path}: {key}: expected one value, not a list")
    return _scalar(path, key, raw)


def _scalar(path: Path, key: str, raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (str, int, float)):
        return str(raw)
    kind = type(raw).__name__
    raise ConfigError(f"{path}: {key}: expected a string, number or boolean, not a {kind}")
