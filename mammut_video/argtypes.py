"""argparse ``type=`` functions shared by the sub-commands (light: imports nothing heavy)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting whole numbers >= ``minimum``, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """argparse type: cpu, cuda or cuda:N."""
    if DEVICE_PATTERN.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text
