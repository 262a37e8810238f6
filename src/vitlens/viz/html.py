"""Self-contained HTML pages (the study report, the demo page) and PNG data URLs (also used by the web app):
every image is embedded as a base64 PNG, no external files or scripts."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """A uint8 image (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``) as PNG bytes (zlib level ``compress_level``)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def png_data_uri(image: np.ndarray, compress_level: int = 6) -> str:
    """The image as a ``data:image/png;base64,...`` URL, for self-contained pages."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, compress_level)).decode("ascii")


@dataclass
class Row:
    title: str
    cells: list[tuple[str, np.ndarray]]  # (caption, uint8 RGB image)
    note: str = ""
    wide: bool = False  # plots: natural aspect ratio instead of square thumbnails


@dataclass
class Section:
    heading: str
    rows: list[Row] = field(default_factory=list)
    text: str = ""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.row{display:flex;gap:8px;align-items:flex-start;margin:10px 0;flex-wrap:wrap}
.row .t{width:170px;font-size:12px} figure{margin:0;text-align:center}
figure img{width:140px;height:140px;image-rendering:pixelated;border:1px solid #ccc}
figure img.wide{width:380px;height:auto;image-rendering:auto}
figcaption{font-size:11px;max-width:140px;word-wrap:break-word}
.ok{color:#17803d}.bad{color:#b42318} p.meta{font-size:13px;color:#555}
"""


def render_page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p class='meta'>{intro}</p>")
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
        if sec.text:
            parts.append(f"<p class='meta'>{sec.text}</p>")
        for row in sec.rows:
            parts.append(f"<div class='row'><div class='t'>{row.title}<br>{row.note}</div>")
            cls = " class='wide'" if row.wide else ""
            for caption, img in row.cells:
                parts.append(
                    f"<figure><img{cls} alt='{html.escape(caption)}' src='{png_data_uri(img)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
