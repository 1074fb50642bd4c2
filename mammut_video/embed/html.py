"""A search result as one self-contained HTML page: each hit a strip of frames from its window.

Frames are decoded from the hit's window (``read_clip``, uniformly spaced), scaled to
``height`` pixels and inlined as base64 JPEG, so the page needs no network and no other file.
A hit whose video cannot be read shows why instead of its frames.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mammut_video.embed.index import EmbeddingIndex, SearchHit
from mammut_video.runtime.rundir import write_text

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.about { color: #666; font-size: 13px; margin-bottom: 20px; }
.hit { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; margin-bottom: 14px; }
.meta { display: flex; gap: 14px; align-items: baseline; margin-bottom: 8px; font-size: 14px; }
.rank { font-weight: 700; font-size: 16px; min-width: 2.2em; }
.score { font-family: ui-monospace, monospace; color: #0a58ca; }
.path { font-family: ui-monospace, monospace; word-break: break-all; }
.window { color: #555; }
.strip { display: flex; gap: 4px; overflow-x: auto; }
.strip img { display: block; border-radius: 3px; }
.missing { color: #b00020; font-size: 13px; }
"""


def frame_strip(hit: SearchHit, frames: int, height: int) -> list[str]:
    """``frames`` JPEG images (base64) from the hit's window, ``height`` pixels high.

    Raises :class:`~mammut_video.video.VideoDecodeError` when the video cannot be read."""
    from PIL import Image

    from mammut_video.video import read_clip

    clip = read_clip(hit.file, frames, start=None if hit.whole else hit.start, end=None if hit.whole else hit.end)
    images = []
    for frame in clip.numpy():
        image = Image.fromarray(frame)
        width = max(1, round(image.width * height / image.height))
        buffer = io.BytesIO()
        image.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=85)
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return images


def _hit_html(hit: SearchHit, frames: int, height: int) -> str:
    from mammut_video.video import VideoDecodeError

    try:
        strip = "".join(f'<img src="data:image/jpeg;base64,{b64}" height="{height}" alt="frame {i + 1}">'
                        for i, b64 in enumerate(frame_strip(hit, frames, height)))
    except VideoDecodeError as err:
        log.warning("%s", err)
        strip = f'<p class="missing">cannot show frames: {html.escape(err.cause)}</p>'
    return (f'<section class="hit" data-rank="{hit.rank}">\n'
            f'<div class="meta"><span class="rank">#{hit.rank}</span>'
            f'<span class="score">{hit.score:.4f}</span>'
            f'<span class="path">{html.escape(hit.path)}</span>'
            f'<span class="window">{html.escape(hit.span())}</span></div>\n'
            f'<div class="strip">{strip}</div>\n</section>')


def write_results_html(path: str | os.PathLike, query: str, hits: Sequence[SearchHit], index: EmbeddingIndex,
                       frames: int = 8, height: int = 96) -> Path:
    """Write the page for ``hits`` of ``query`` to ``path`` (atomically); returns the path."""
    settings = index.settings
    model = settings.get("checkpoint") or f"preset {settings.get('preset')} (random weights)"
    when = _dt.datetime.now().replace(microsecond=0).isoformat(sep=" ")
    body = "\n".join(_hit_html(hit, frames, height) for hit in hits) or "<p>No results.</p>"
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(query)} - mammut-video search</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(query)}</h1>\n"
            f'<div class="about">{len(hits)} best of {html.escape(str(index.out_dir))} &middot; model '
            f"{html.escape(str(model))} &middot; {when}</div>\n{body}\n</body>\n</html>\n")
    write_text(path, page)
    return Path(path)
