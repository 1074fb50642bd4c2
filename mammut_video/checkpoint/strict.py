"""All-or-nothing state-dict loading with one readable error.

``torch.nn.Module.load_state_dict(strict=True)`` stops at the first shape mismatch and
prints key lists that run for pages; here every problem is collected first (unknown keys,
missing keys, shape mismatches), summarised in one message naming the source, and nothing
is loaded unless the whole dict fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from mammut_video.checkpoint.files import CheckpointError, StateDict

_SHOW = 12  # keys listed per category before "... and N more"


def _listing(title: str, items: list[str]) -> str:
    shown = "\n".join(f"    {item}" for item in items[:_SHOW])
    more = f"\n    ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"  {title} ({len(items)}):\n{shown}{more}"


def state_dict_problems(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    ignore_missing: Iterable[str] = (),
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Return ``(unknown, missing, mismatched)`` keys of ``state_dict`` vs ``expected``; mismatches as
    ``(key, "file (...) vs model (...)")``."""
    ignore = set(ignore_missing)
    unknown = sorted(k for k in state_dict if k not in expected)
    missing = sorted(k for k in expected if k not in state_dict and k not in ignore)
    mismatched = [
        (k, f"file {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}")
        for k in sorted(expected)
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    return unknown, missing, mismatched


def check_state_dict(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    what: str = "the model",
    source_name: Callable[[str], str] | None = None,
) -> None:
    """Raise one :class:`CheckpointError` listing every key problem, or return quietly.

    ``source_name`` maps a key of ``expected`` / ``state_dict`` back to its name in the source
    file (importers rename keys), so the message speaks the file's language.
    """
    unknown, missing, mismatched = state_dict_problems(expected, state_dict)
    if not (unknown or missing or mismatched):
        return
    name = source_name or (lambda k: k)
    parts = [f"{source}: weights do not fit {what}; nothing was loaded."]
    if source_name is not None:
        parts[0] += " Keys are named as in the source file."
    if unknown:
        parts.append(_listing("unknown keys", sorted(map(name, unknown))))
    if missing:
        parts.append(_listing("missing keys", sorted(map(name, missing))))
    if mismatched:
        parts.append(_listing("shape mismatches", [f"{name(k)}: {rest}" for k, rest in mismatched]))
    raise CheckpointError("\n".join(parts))


def load_state_dict_strict(model: nn.Module, state_dict: StateDict, source: str) -> None:
    """Load ``state_dict`` into ``model`` only if every key and shape matches exactly."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, state_dict, source, what=type(model).__name__)
    model.load_state_dict(state_dict, strict=True)
