"""Small HTML builders for the web view: every value is escaped with ``html.escape``."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode

from canon._format import pct
from canon.zoo import Job

__all__ = [
    "CSP",
    "cell_value",
    "error_page",
    "esc",
    "heat_style",
    "href",
    "options",
    "page",
    "pct",
    "pending",
    "tag_chips",
]

#: The web view's Content-Security-Policy: no scripts, nothing from elsewhere.
CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def esc(value: object) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def href(path: str, query: Iterable[tuple[str, object]] = ()) -> str:
    """An escaped URL: ``path`` with an encoded query string."""
    pairs = [(k, str(v)) for k, v in query if v is not None]
    return esc(f"{path}?{urlencode(pairs)}" if pairs else path)


def cell_value(value: float, metric: str) -> str:
    """A table cell: barriers, excesses and fractions as percentages, distances as numbers."""
    if metric in ("barrier", "excess") or metric.endswith("fraction"):
        return pct(value)
    return f"{value:.4g}"


def heat_style(value: float, low: float, high: float) -> str:
    """Inline colours of a heatmap cell: light for ``low``, dark red for ``high``."""
    t = 0.0 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    start, end = (255, 245, 235), (127, 20, 20)
    r, g, b = (round(s + t * (e - s)) for s, e in zip(start, end, strict=True))
    text = "#fff" if t > 0.55 else "#1b1b1b"
    return f"background:rgb({r},{g},{b});color:{text}"


def tag_chips(tags: Mapping[str, str]) -> str:
    """Tags as small labelled chips."""
    return " ".join(f'<span class="tag">{esc(k)}={esc(v)}</span>' for k, v in tags.items())


def options(values: Sequence[str], selected: str | None, blank: str | None = None) -> str:
    """``<option>`` elements for ``values`` (with a first blank option labelled ``blank``)."""
    items = [f'<option value="">{esc(blank)}</option>'] if blank is not None else []
    for v in values:
        chosen = " selected" if v == selected else ""
        items.append(f'<option value="{esc(v)}"{chosen}>{esc(v)}</option>')
    return "".join(items)


def page(title: str, body: str, *, refresh: str | None = None) -> str:
    """A whole page: the header with navigation, then ``body`` (already HTML)."""
    meta = f'<meta http-equiv="refresh" content="1;url={refresh}">' if refresh else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>{esc(title)} · canon</title>
<link rel="stylesheet" href="/static/canon.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header><a class="brand" href="/">canon</a>
<nav><a href="/">entries</a><a href="/table">barrier table</a><a href="/docs">API</a></nav>
</header>
<main>
<h1>{esc(title)}</h1>
{body}
</main>
</body>
</html>
"""


def pending(job: Job, refresh: str) -> str:
    """A page body for a job still running (the page reloads itself from ``refresh``)."""
    total = max(job.total, 1)
    unit = {"compare": "paths", "table": "pairs", "midpoint": "epochs"}.get(job.kind, "steps")
    return (
        f'<p class="pending">Computing: job <code>{esc(job.id)}</code> is {esc(job.state)}'
        f" ({job.done} of {job.total or '?'} {unit}). This page reloads until it is done.</p>"
        f'<progress value="{job.done}" max="{total}"></progress>'
        f'<p><a href="{refresh}">reload now</a></p>'
    )


def error_page(status: int, kind: str, message: str) -> str:
    """The page shown for an error in the web view."""
    body = f'<p class="error"><strong>{esc(kind)}</strong>: {esc(message)}</p>'
    return page(f"Error {status}", body + '<p><a href="/">back to the entries</a></p>')
