"""A static HTML gallery (``index.html``) of an inference run's pictures: one row per image.

Only relative links, no script, no server: open the file from disk in any browser, or copy the whole folder.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from scripts.atomic import atomic_path

__all__ = ["DEFAULT_COLUMNS", "write_gallery"]

#: (key, column header) in display order; a row's picture for ``key`` is shown under the header.
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("input", "input"),
    ("label", "ground truth"),
    ("overlay", "prediction"),
    ("confidence", "confidence"),
    ("difficult", "difficult pixels"),
    ("refined", "refined"),
    ("features", "feature maps"),
)

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px; vertical-align: top; text-align: center; }
td img { max-width: 256px; image-rendering: pixelated; }
td.name { text-align: left; font-family: monospace; }
"""


def _link(output_dir: Path, path: str | os.PathLike) -> str:
    """A relative, URL-quoted link from ``output_dir`` to ``path`` (which must lie inside it)."""
    path = Path(path)
    rel = os.path.relpath(path if path.is_absolute() else output_dir / path, output_dir)
    if rel.startswith(".."):
        raise ValueError(f"{path} lies outside the gallery folder {output_dir}; the gallery links only inside it.")
    return quote(Path(rel).as_posix())


def write_gallery(
    output_dir: str | os.PathLike,
    rows: Sequence[tuple[str, Mapping[str, str | os.PathLike]]],
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    title: str = "Segmentation pictures",
    legend: str | os.PathLike | None = None,
    filename: str = "index.html",
) -> Path:
    """Write ``output_dir/filename`` (atomically), a table with one row per image and one column per picture kind.

    Columns without any picture are left out; a missing picture in a row is an empty cell. Each picture links to
    the full-size PNG.

    Args:
        output_dir: the run's picture folder; every picture must lie inside it.
        rows: ``(image name, {column key: picture path})``, paths absolute or relative to ``output_dir``.
        columns: ``(key, header)`` pairs in display order. Defaults to :data:`DEFAULT_COLUMNS`.
        title: page title.
        legend: optional legend picture shown above the table.
        filename: the HTML file's name.

    Returns:
        the path of the written HTML file.

    Raises:
        ValueError: a picture path outside ``output_dir``.
    """
    output_dir = Path(output_dir)
    used = [(k, h) for k, h in columns if any(k in pics for _, pics in rows)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(rows)} image(s). Click a picture for the full-size PNG (same size as the image).</p>",
    ]
    if legend is not None:
        parts.append(f'<p><img src="{_link(output_dir, legend)}" alt="legend"></p>')
    parts.append("<table><tr><th>image</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h in used) + "</tr>")
    for name, pictures in rows:
        cells = [f'<td class="name">{html.escape(name)}</td>']
        for key, header in used:
            if key in pictures:
                link = _link(output_dir, pictures[key])
                alt = html.escape(f"{name} {header}")
                cells.append(f'<td><a href="{link}"><img src="{link}" alt="{alt}" loading="lazy"></a></td>')
            else:
                cells.append("<td></td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / filename
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out
