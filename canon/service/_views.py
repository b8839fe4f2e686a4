"""The web view: server-rendered pages over the same zoo API as the JSON routes.

Pages: the entry list (filters, tags, metrics), an entry, a comparison with
its error-along-path figure, and the pairwise table as a heatmap. A result
that is not cached is computed by a job; the page shows its progress and
reloads itself (no scripts) until the result is there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from canon._options import parse_tags
from canon.service._api import figure_url
from canon.service._html import (
    CSP,
    cell_value,
    esc,
    heat_style,
    href,
    options,
    page,
    pct,
    pending,
    tag_chips,
)
from canon.service._schemas import (
    MAX_POINTS,
    MAX_SELECTION,
    NAME_PATTERN,
    ComparablePath,
    EntryName,
    Metric,
    SelectionKind,
)
from canon.service._state import Service, ServiceDep
from canon.service._work import (
    COMPARABLE_PATHS,
    DEFAULT_PATHS,
    METRICS,
    cached_comparison,
    cached_table,
    compare_params,
    table_params,
)
from canon.zoo import SELECTION_KINDS, Comparison, Entry, Table

__all__ = ["router"]

_PAGE: dict[str, Any] = {"content": {"text/html": {"schema": {"type": "string"}}}}
router = APIRouter(
    tags=["web view"],
    default_response_class=HTMLResponse,
    responses={
        404: {**_PAGE, "description": "No such entry or job (an error page)."},
        422: {**_PAGE, "description": "Invalid parameters (an error page)."},
    },
)
Name = Annotated[str, Query(pattern=NAME_PATTERN, max_length=128)]
Tags = Annotated[list[str], Query(max_length=32)]
Short = Annotated[str | None, Query(max_length=256)]
Points = Annotated[int, Query(ge=3, le=MAX_POINTS)]
JobParam = Annotated[str | None, Query(max_length=64)]


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Content-Security-Policy": CSP})


def _metric_cell(key: str, value: object) -> str:
    """A metric's value as escaped HTML: errors and barriers as percentages."""
    return esc(pct(value) if key.endswith(("error", "barrier")) else value)


def _hidden(fields: list[tuple[str, object]]) -> str:
    """Hidden form fields that carry ``fields`` into the next request."""
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields)


def _tag_inputs(tags: list[str]) -> str:
    """A text input holding the first tag filter; further ones ride along as hidden fields."""
    first = tags[0] if tags else ""
    field = f'<label>tag <input name="tag" placeholder="algo=sgd" value="{esc(first)}"></label>'
    return field + _hidden([("tag", t) for t in tags[1:]])


def _compare_form(entries: list[Entry], a: str | None = None, b: str | None = None) -> str:
    names = [e.name for e in entries]
    return (
        '<form class="inline" action="/compare" method="get">'
        f'<label>compare <select name="a">{options(names, a)}</select></label>'
        f'<label>with <select name="b">{options(names, b)}</select></label>'
        '<button type="submit">compare</button></form>'
    )


@router.get("/", summary="Entry list (HTML)")
def index(
    service: ServiceDep,
    tag: Tags = [],  # noqa: B006 (FastAPI copies defaults)
    arch: Short = None,
    dataset: Short = None,
    kind: Short = None,
) -> HTMLResponse:
    """The entries with their tags and metrics, filterable; forms to compare and tabulate."""
    zoo = service.zoo
    every = zoo.entries()
    shown = zoo.select(
        architecture=arch or None,
        dataset=dataset or None,
        kind=kind or None,
        tags=parse_tags([t for t in tag if t]),
    )
    archs = sorted({e.architecture for e in every})
    datasets = sorted({e.dataset for e in every if e.dataset})
    rows = "".join(
        "<tr>"
        f'<td><a href="{href(f"/entries/{e.name}")}">{esc(e.name)}</a></td>'
        f"<td>{esc(e.kind)}</td><td>{esc(e.architecture)}</td><td>{esc(e.dataset or '-')}</td>"
        f"<td>{tag_chips(e.tags)}</td>"
        f'<td class="num">{pct(e.metrics.get("train_error"))}</td>'
        f'<td class="num">{pct(e.metrics.get("test_error"))}</td>'
        f"<td><code>{esc(e.id[:12])}</code></td></tr>"
        for e in shown
    )
    filters = (
        '<form class="inline" action="/" method="get">'
        f"{_tag_inputs(tag)}"
        f'<label>architecture <select name="arch">{options(archs, arch, "any")}'
        f'</select></label><label>dataset <select name="dataset">'
        f'{options(datasets, dataset, "any")}</select></label><label>kind <select name="kind">'
        f"{options(['solution', 'midpoint'], kind, 'any')}</select></label>"
        '<button type="submit">filter</button></form>'
    )
    table = (
        '<table class="entries"><thead><tr><th>name</th><th>kind</th><th>architecture</th>'
        "<th>dataset</th><th>tags</th><th>train error</th><th>test error</th><th>id</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        if shown
        else '<p class="empty">no entries match</p>'
    )
    body = (
        f'<p class="summary">{len(shown)} of {len(every)} entries</p>{filters}{table}'
        f"{_compare_form(every, *(e.name for e in every[:2]))}"
        f'<p><a href="/table">pairwise barrier table of every entry</a></p>'
    )
    return _html(page("Entries", body))


@router.get("/entries/{name}", summary="One entry (HTML)")
def entry_page(
    service: ServiceDep, name: Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=128)]
) -> HTMLResponse:
    """One entry: metadata, config, metrics, parents, reference, download, compare form."""
    zoo = service.zoo
    e = zoo.get(name)
    reference = zoo.reference(e)
    parents = ", ".join(
        f'<a href="{href(f"/entries/{p.name}")}">{esc(p.name)}</a>'
        for p in (zoo.get(pid) for pid in e.parents)
    )
    facts = [
        ("id", f"<code>{esc(e.id)}</code>"),
        ("kind", esc(e.kind)),
        ("architecture", esc(e.architecture)),
        ("config", f"<code>{esc(json.dumps(dict(e.config), sort_keys=True))}</code>"),
        ("dataset", esc(e.dataset or "-")),
        ("tags", tag_chips(e.tags) or "-"),
        ("parents", parents or "-"),
        (
            "family reference",
            f'<a href="{href(f"/entries/{reference.name}")}">{esc(reference.name)}</a>',
        ),
        ("created", esc(e.created.isoformat() if e.created else "-")),
    ]
    metrics = [(k, _metric_cell(k, v)) for k, v in e.metrics.items()]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in facts + metrics)
    family = [x for x in zoo.entries() if x.family == e.family and x.id != e.id]
    body = (
        f'<table class="facts">{rows}</table>'
        f'<p><a class="button" href="{href(f"/api/entries/{e.name}/weights")}">'
        "download safetensors</a></p>"
        + (_compare_form([e, *family], e.name, family[0].name) if family else "")
    )
    return _html(page(e.name, body))


def _waiting(
    service: Service,
    kind: str,
    params: dict[str, Any],
    job_id: str | None,
    retry: Callable[[str], str],
) -> tuple[str, str | None]:
    """The body of the page of an uncached result, and the URL it reloads from (if any).

    The result's job (given, or the active one for ``params``, or a new one)
    is shown with its progress; a failed job shows its error and stops there.
    """
    job = service.zoo.jobs.get(job_id) if job_id else None
    if job is not None and job.state == "failed" and job.error:
        error = f'<p class="error"><strong>{esc(job.error["type"])}</strong>: '
        return error + f"{esc(job.error['message'])}</p>", None
    if job is None or not job.active:
        job = service.submit(kind, params)
    return pending(job, retry(job.id)), retry(job.id)


def _comparison_body(result: Comparison, params: dict[str, Any]) -> str:
    dists = "".join(
        f'<tr><th>{esc(k)}</th><td class="num">{v:.4g}</td></tr>'
        for k, v in result.distances.to_dict().items()
    )
    curves = "".join(
        f'<tr><th>{esc(kind)}</th><td class="num">{pct(c.barrier)}</td>'
        f'<td class="num">{pct(c.excess)}</td></tr>'
        for kind, c in result.curves.items()
    )
    figure = esc(figure_url(params, (result.a, result.b)))
    return (
        f'<figure><img class="figure" src="{figure}" width="550" height="380" '
        f'alt="train error along the paths from {esc(result.a)} to {esc(result.b)}">'
        "<figcaption>train error along each path (x = 0 is the first network)</figcaption>"
        "</figure>"
        '<div class="columns"><table class="facts"><caption>distances</caption>'
        f"{dists}</table>"
        '<table class="facts"><caption>barriers</caption><tr><th>path</th><th>barrier</th>'
        f"<th>excess</th></tr>{curves}</table></div>"
    )


@router.get("/compare", summary="Comparison of two entries (HTML)")
def compare_page(
    service: ServiceDep,
    a: Name,
    b: Name,
    path: Annotated[list[ComparablePath], Query(max_length=5)] = [],  # noqa: B006
    points: Points = 25,
    job: JobParam = None,
) -> HTMLResponse:
    """Distances, barriers and the error-along-path figure of two entries."""
    params = compare_params(service.zoo, a, b, path or DEFAULT_PATHS, points)
    found = cached_comparison(service.zoo, params)

    def retry(job_id: str) -> str:
        query = [("a", a), ("b", b), ("points", points), *(("path", p) for p in path)]
        return href("/compare", [*query, ("job", job_id)])

    title = f"{a} vs {b}"
    if found is None:
        body, refresh = _waiting(service, "compare", params, job, retry)
        return _html(page(title, body, refresh=refresh))
    return _html(page(title, _comparison_body(found, params)))


def _heatmap(result: Table, path: str, points: int) -> str:
    values = [
        v for i, row in enumerate(result.matrix.tolist()) for j, v in enumerate(row) if i != j
    ]
    low, high = (min(0.0, *values), max(values)) if values else (0.0, 0.0)  # white at 0
    head = "".join(f'<th class="col">{esc(n)}</th>' for n in result.names)
    rows = []
    for i, (name, row) in enumerate(zip(result.names, result.matrix.tolist(), strict=True)):
        cells = []
        for j, v in enumerate(row):
            if i == j:
                cells.append('<td class="diag">-</td>')
                continue
            link = href(
                "/compare",
                [("a", name), ("b", result.names[j]), ("points", points), ("path", path)],
            )
            cells.append(
                f'<td style="{heat_style(v, low, high)}"><a href="{link}">'
                f"{esc(cell_value(v, result.metric))}</a></td>"
            )
        rows.append(f'<tr><th class="row">{esc(name)}</th>{"".join(cells)}</tr>')
    legend = (
        f'<p class="legend"><span style="{heat_style(low, low, high)}">'
        f"{esc(cell_value(low, result.metric))}</span> to "
        f'<span style="{heat_style(high, low, high)}">{esc(cell_value(high, result.metric))}'
        "</span></p>"
    )
    return (
        f'<table class="heatmap"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{legend}"
    )


@router.get("/table", summary="Pairwise table as a heatmap (HTML)")
def table_page(
    service: ServiceDep,
    name: Annotated[list[EntryName], Query(max_length=MAX_SELECTION)] = [],  # noqa: B006
    tag: Tags = [],  # noqa: B006
    path: ComparablePath = "geodesic",
    metric: Metric = "barrier",
    points: Points = 25,
    kind: SelectionKind = "solution",
    job: JobParam = None,
) -> HTMLResponse:
    """The pairwise barrier (or distance) table of a selection, as a heatmap; without names,
    of the entries of ``kind`` (solutions unless asked, as ``canon table``)."""
    wanted = parse_tags([t for t in tag if t])
    params = table_params(service.zoo, name, wanted, path, metric, points, kind=kind)
    found = cached_table(service.zoo, params)
    query: list[tuple[str, object]] = [("path", path), ("metric", metric), ("points", points)]
    query += [("kind", kind)] + [("name", n) for n in name] + [("tag", t) for t in tag]

    def retry(job_id: str) -> str:
        return href("/table", [*query, ("job", job_id)])

    form = (
        '<form class="inline" action="/table" method="get">'
        f"{_tag_inputs(tag)}{_hidden([('name', n) for n in name] + [('points', points)])}"
        f'<label>path <select name="path">{options(COMPARABLE_PATHS, path)}</select>'
        f'</label><label>metric <select name="metric">{options(METRICS, metric)}</select>'
        f'</label><label>kind <select name="kind">{options(SELECTION_KINDS, kind)}</select>'
        '</label><button type="submit">show</button></form>'
    )
    title = f"{metric} ({path})" if metric in ("barrier", "excess") else f"{metric} distance"
    if found is None:
        body, refresh = _waiting(service, "table", params, job, retry)
        return _html(page(title, form + body, refresh=refresh))
    return _html(page(title, form + _heatmap(found, path, points)))
