"""Progress of long work: a tqdm bar on a terminal, a log line a minute otherwise, nothing when quiet.

Only the caller knows whether it is rank 0 and whether the user asked for quiet, so it passes
``enabled``; a bar with nothing to count is never shown (a resumed run that is already complete
prints no empty bar).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class Progress:
    """What every progress display offers: ``update(n)``, ``set_postfix(**values)`` and ``close()``."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Bar(Progress):
    def __init__(self, total: int, desc: str, unit: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.05, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        self._bar.close()


class _LogLines(Progress):
    """For a log file or a pipe: ``desc: done/total unit (rate/s, ETA)`` once a minute and at the end."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, Any] = {}

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {(self.total - self.done) / rate / 60:.1f} min" if rate > 0 and self.done < self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self.done}/{self.total} {self.unit}s ({rate:.2f}/s{eta}{extra})"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            log.info(self._line())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.done:
            log.info(self._line())


def progress(total: int, desc: str, unit: str = "item", enabled: bool = True) -> Progress:
    """A progress display for ``total`` units: a bar when stderr is a terminal, else a log line a minute.

    Returns a silent :class:`Progress` when ``enabled`` is false or there is nothing to do.
    """
    if not enabled or total <= 0:
        return Progress()
    if sys.stderr.isatty():
        return _Bar(total, desc, unit)
    return _LogLines(total, desc, unit)
