"""The errors mammut-video raises on purpose, under one base class.

Every failure that depends on the user's input (a file, a folder, an option, a checkpoint)
raises a subclass of :class:`MammutVideoError` whose message is one line naming what is at
fault. The command line catches this one class, prints the message and exits with status 2;
anything else is a bug and keeps its traceback. Light module: imports nothing heavy.
"""

from __future__ import annotations

import math


class MammutVideoError(Exception):
    """Base class of every error the package raises on purpose (one-line message)."""


class ConfigError(MammutVideoError, ValueError):
    """An option or setting that cannot be used as given (a value out of range, a conflict)."""


class MissingFileError(MammutVideoError, FileNotFoundError):
    """A file or folder the user named (or a checkpoint names) does not exist."""


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is a whole number >= ``minimum``; otherwise :class:`ConfigError`.

    The one check of counts (frames, batch sizes, workers, limits) used by the library's
    settings classes and by the command line's argument types (which pass ``name=""``: argparse
    names the option itself). A string of digits is accepted and converted.
    """
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {value!r}".lstrip(": ")) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected a whole number, got {value!r}".lstrip(": "))
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}".lstrip())
    return value


def error_text(err: BaseException) -> str:
    """``err`` for a one-line report: our own errors' messages as they are, others with their type
    (``KeyError: 'x'``), since their message alone may say nothing."""
    return str(err) if isinstance(err, MammutVideoError) else f"{type(err).__name__}: {err}"


def _seconds_or_none(value: object, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}") from None


def check_segment(start: float | None, end: float | None) -> tuple[float | None, float | None]:
    """``(start, end)`` in seconds as floats if they select a segment; otherwise :class:`ConfigError`.

    The settings of the commands that cut one segment out of every clip (caption, ask) check it
    when they are made, before any model is loaded or file decoded: ``start`` finite and >= 0,
    ``end`` finite and > 0, ``end`` after ``start``; None leaves that side open.
    """
    start, end = _seconds_or_none(start, "start"), _seconds_or_none(end, "end")
    if start is not None and not (math.isfinite(start) and start >= 0):
        raise ConfigError(f"start must be a finite number of seconds >= 0, got {start!r}")
    if end is not None and not (math.isfinite(end) and end > 0):
        raise ConfigError(f"end must be a finite number of seconds > 0, got {end!r}")
    if start is not None and end is not None and not end > start:
        raise ConfigError(f"end ({end}) must be after start ({start})")
    return start, end


def require_checkpoint(checkpoint: object) -> None:
    """:class:`ConfigError` when a command that runs a model was given no checkpoint (nothing is downloaded)."""
    if checkpoint is None:
        raise ConfigError("no checkpoint: pass --checkpoint DIR (a directory written by model.save_pretrained or "
                          "`mammut-video convert`); nothing is downloaded")
