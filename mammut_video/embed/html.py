"""A search result as one self-contained HTML page: each hit a strip of frames from its window.

Frames are decoded from the hit's window (``read_clip``, uniformly spaced), scaled to
``width`` pixels and inlined as base64 JPEG, so the page needs no network and no other file;
each strip spans the page's width whatever the videos' aspect ratios.
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
.hit, .query { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; margin-bottom: 14px; }
.query { background: #eef4ff; border-color: #b6ccf5; }
.meta { display: flex; gap: 14px; align-items: baseline; margin-bottom: 8px; font-size: 14px; }
.rank { font-weight: 700; font-size: 16px; min-width: 2.2em; }
.score { font-family: ui-monospace, monospace; color: #0a58ca; }
.path { font-family: ui-monospace, monospace; word-break: break-all; }
.window { color: #555; }
.strip { display: grid; gap: 4px; }
.strip img { display: block; width: 100%; height: auto; border-radius: 3px; }
.missing { color: #b00020; font-size: 13px; }
"""


def frame_strip(file: str | os.PathLike, frames: int, width: int, start: float | None = None,
                end: float | None = None) -> list[str]:
    """``frames`` JPEG images (base64), uniformly spaced over ``[start, end)`` of ``file`` (None: the whole
    video), ``width`` pixels wide. Raises :class:`~mammut_video.video.VideoDecodeError` when the
    video cannot be read."""
    from PIL import Image

    from mammut_video.video import read_clip

    images = []
    for frame in read_clip(file, frames, start=start, end=end).numpy():
        image = Image.fromarray(frame)
        height = max(1, round(image.height * width / image.width))
        buffer = io.BytesIO()
        image.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=85)
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return images


def _strip_html(file: str | os.PathLike, frames: int, width: int, start: float | None = None,
                end: float | None = None) -> str:
    """The frames of :func:`frame_strip` side by side, each 1/``frames`` of the page's width, or why
    there are none."""
    from mammut_video.video import VideoDecodeError

    try:
        images = frame_strip(file, frames, width, start, end)
    except VideoDecodeError as err:
        log.warning("%s", err)
        return f'<p class="missing">cannot show frames: {html.escape(err.cause)}</p>'
    cells = "".join(f'<img src="data:image/jpeg;base64,{b64}" alt="frame {i + 1}">' for i, b64 in enumerate(images))
    return f'<div class="strip" style="grid-template-columns: repeat({frames}, minmax(0, 1fr))">{cells}</div>'


def _hit_html(hit: SearchHit, frames: int, width: int) -> str:
    window = (None, None) if hit.whole else (hit.start, hit.end)
    return (f'<section class="hit" data-rank="{hit.rank}">\n'
            f'<div class="meta"><span class="rank">#{hit.rank}</span>'
            f'<span class="score">{hit.score:.4f}</span>'
            f'<span class="path">{html.escape(hit.path)}</span>'
            f'<span class="window">{html.escape(hit.span())}</span></div>\n'
            f'{_strip_html(hit.file, frames, width, *window)}\n</section>')


def _query_html(video: str | os.PathLike, frames: int, width: int) -> str:
    return (f'<section class="query">\n<div class="meta"><span class="rank">query</span>'
            f'<span class="path">{html.escape(str(video))}</span></div>\n'
            f'{_strip_html(video, frames, width)}\n</section>')


def write_results_html(path: str | os.PathLike, query: str, hits: Sequence[SearchHit], index: EmbeddingIndex,
                       frames: int = 8, width: int = 240, query_video: str | os.PathLike | None = None) -> Path:
    """Write the page for ``hits`` of ``query`` to ``path`` (atomically); returns the path. Each hit shows
    ``frames`` frames of its window, stored ``width`` pixels wide. With ``query_video`` (a
    video-to-video search) the query's own frames come first."""
    settings = index.settings
    model = settings.get("checkpoint") or f"preset {settings.get('preset')} (random weights)"
    when = _dt.datetime.now().replace(microsecond=0).isoformat(sep=" ")
    body = "\n".join(_hit_html(hit, frames, width) for hit in hits) or "<p>No results.</p>"
    if query_video is not None:
        body = _query_html(query_video, frames, width) + "\n" + body
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(query)} - mammut-video search</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(query)}</h1>\n"
            f'<div class="about">{len(hits)} best of {html.escape(str(index.out_dir))} &middot; model '
            f"{html.escape(str(model))} &middot; {when}</div>\n{body}\n</body>\n</html>\n")
    write_text(path, page)
    return Path(path)
