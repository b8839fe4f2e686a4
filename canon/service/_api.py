"""The JSON API under ``/api``: entries, downloads, uploads, comparisons, tables, jobs.

Routes are plain ``def`` functions (FastAPI runs them in its thread pool) and
call the zoo API; only the upload reads its body on the event loop, counting
bytes, and hands the work to the pool.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from canon._options import parse_json, parse_tags
from canon.errors import CanonError, CorruptZooError, RequestTooLargeError
from canon.service._schemas import (
    MAX_POINTS,
    NAME_PATTERN,
    ComparablePath,
    CompareRequest,
    ComparisonOut,
    EntryDetail,
    EntryList,
    EntryOut,
    ErrorOut,
    InfoOut,
    JobList,
    JobOut,
    MidpointRequest,
    TableOut,
    TableRequest,
    job_out,
)
from canon.service._state import Service, ServiceDep, WriteAccess, canon_version
from canon.service._work import (
    DEFAULT_PATHS,
    cached_comparison,
    cached_table,
    check_upload,
    compare_params,
    comparison_figure,
    midpoint_params,
    table_params,
)
from canon.zoo import Comparison, Entry, JobState

__all__ = ["UPLOAD_PATH", "comparison_out", "entry_detail", "figure_url", "router"]

UPLOAD_PATH = "/api/entries"
SAFETENSORS = "application/octet-stream"
F = TypeVar("F", bound=Callable[..., Any])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in codes}


router = APIRouter(prefix="/api", responses=_errors(400, 422))


def _write_route(
    path: str, *, status_code: int, response_model: Any, errors: tuple[int, ...], **extra: Any
) -> Callable[[F], F]:
    """A POST route that changes the zoo: it needs the write token (answering 401 and 403
    without it), besides the ``errors`` of its own."""
    return router.post(
        path,
        status_code=status_code,
        response_model=response_model,
        dependencies=[WriteAccess],
        responses=_errors(401, 403, *errors),
        **extra,
    )


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobOut, "description": "Not cached: a job computes it."}
}
NameParam = Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=128)]
JobId = Annotated[str, PathParam(max_length=64)]
Tags = Annotated[list[str], Query(max_length=32, description="A tag filter KEY=VALUE.")]
ShortText = Annotated[str | None, Query(max_length=256)]


def entry_detail(service: Service, entry: Entry) -> EntryDetail:
    """Everything about an entry, with parents by name and its family reference."""
    zoo = service.zoo
    return EntryDetail.model_validate(
        {
            **entry.to_dict(),
            "parent_names": [zoo.get(p).name for p in entry.parents],
            "reference": zoo.reference(entry).name,
            "weights_url": f"/api/entries/{entry.name}/weights",
        }
    )


def figure_url(params: dict[str, Any], names: tuple[str, str], fmt: str = "svg") -> str:
    """Where the figure of a (cached) comparison is drawn."""
    query = [("a", names[0]), ("b", names[1]), ("points", params["points"])]
    query += [("path", p) for p in params["paths"]]
    return f"/api/compare/figure.{fmt}?{urlencode(query)}"


def comparison_out(comparison: Comparison, params: dict[str, Any]) -> ComparisonOut:
    """A comparison as the API returns it."""
    data = comparison.to_dict()
    return ComparisonOut.model_validate(
        {**data, "figure_url": figure_url(params, (comparison.a, comparison.b))}
    )


def _accepted(service: Service, kind: str, params: dict[str, Any]) -> JSONResponse:
    job = job_out(service.submit(kind, params))
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": job.url})


@router.get("/info", response_model=InfoOut)
def info(service: ServiceDep) -> InfoOut:
    """The server's zoo size, version and whether it accepts writes."""
    return InfoOut(
        status="ok",
        version=canon_version(),
        entries=len(service.zoo),
        read_only=service.read_only,
        max_upload_bytes=service.max_upload_bytes,
    )


@router.get("/entries", response_model=EntryList)
def entries(
    service: ServiceDep,
    tag: Tags = [],  # noqa: B006 (FastAPI copies defaults)
    arch: ShortText = None,
    dataset: ShortText = None,
    kind: Literal["solution", "midpoint"] | None = None,
) -> EntryList:
    """Entries matching every filter (tags ``KEY=VALUE``, architecture, dataset, kind)."""
    found = service.zoo.select(architecture=arch, dataset=dataset, kind=kind, tags=parse_tags(tag))
    return EntryList(
        count=len(found), entries=[EntryOut.model_validate(e.to_dict()) for e in found]
    )


@router.get("/entries/{name}", response_model=EntryDetail, responses=_errors(404))
def entry(service: ServiceDep, name: NameParam) -> EntryDetail:
    """One entry: metadata, metrics, parents and its family reference."""
    return entry_detail(service, service.zoo.get(name))


@router.get(
    "/entries/{name}/weights",
    response_class=FileResponse,
    responses={
        200: {"content": {SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **_errors(404),
    },
)
def weights(request: Request, service: ServiceDep, name: NameParam) -> Response:
    """The entry's safetensors object, byte for byte; the ETag is its sha256."""
    e = service.zoo.get(name)
    path = service.zoo.objects.path(e.id)
    if not path.is_file():
        raise CorruptZooError(f"the object of `{e.name}` is missing on the server; run verify")
    etag = f'"{e.id}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        path,
        media_type=SAFETENSORS,
        filename=f"{e.name}.safetensors",
        headers={"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"},
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes by header or by count."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the body is {declared} bytes; at most {limit}", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLargeError(f"the body is over {limit} bytes", limit=limit)
    return bytes(body)


def _add_upload(service: Service, data: bytes, fields: dict[str, Any]) -> Entry:
    """Add uploaded safetensors bytes as ``canon add`` would; nothing changes if it fails."""
    with tempfile.TemporaryDirectory(prefix="canon-upload-") as tmp:
        path = Path(tmp) / "upload.safetensors"
        path.write_bytes(data)
        try:
            check_upload(service.zoo, path, fields["architecture"], fields["dataset"])
            return service.zoo.add(path, device=service.device, **fields)
        except CanonError as exc:  # name the upload, not the server's temp file
            exc.args = (str(exc).replace(f"`{path}`", "the upload"), *exc.args[1:])
            raise


@_write_route(
    "/entries",
    status_code=201,
    response_model=EntryDetail,
    errors=(409, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    request: Request,
    service: ServiceDep,
    name: Annotated[str, Query(pattern=NAME_PATTERN, max_length=128)],
    arch: ShortText = None,
    config: Annotated[str | None, Query(max_length=65536, description="JSON object.")] = None,
    dataset: ShortText = None,
    tag: Tags = [],  # noqa: B006 (FastAPI copies defaults)
    kind: Literal["solution", "midpoint"] = "solution",
) -> JSONResponse:
    """Add a safetensors checkpoint (the body) with the fields of ``canon add``; needs the token."""
    fields = {
        "name": name,
        "architecture": arch,
        "config": parse_json(config, "config") if config is not None else None,
        "dataset": dataset,
        "tags": parse_tags(tag),
        "kind": kind,
    }
    data = await _read_body(request, service.max_upload_bytes)
    added = await run_in_threadpool(_add_upload, service, data, fields)
    detail = await run_in_threadpool(entry_detail, service, added)
    return JSONResponse(
        detail.model_dump(mode="json"), status_code=201, headers={"Location": detail.weights_url}
    )


@router.post(
    "/compare",
    response_model=ComparisonOut,
    responses={**ACCEPTED, **_errors(404)},
)
def compare(service: ServiceDep, request: CompareRequest) -> Response:
    """The comparison from the cache (200), or the job that computes it (202)."""
    params = compare_params(
        service.zoo,
        request.a,
        request.b,
        request.paths,
        request.points,
        request.match,
        request.align,
    )
    found = cached_comparison(service.zoo, params)
    if found is None:
        return _accepted(service, "compare", params)
    return JSONResponse(comparison_out(found, params).model_dump(mode="json"))


@router.get(
    "/compare/figure.{fmt}",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}},
        **_errors(404),
    },
)
def compare_figure(
    service: ServiceDep,
    fmt: Literal["svg", "png"],
    a: Annotated[str, Query(pattern=NAME_PATTERN, max_length=128)],
    b: Annotated[str, Query(pattern=NAME_PATTERN, max_length=128)],
    path: Annotated[list[ComparablePath], Query(max_length=5)] = [],  # noqa: B006
    points: Annotated[int, Query(ge=3, le=MAX_POINTS)] = 25,
) -> Response:
    """The error-along-path figure of a cached comparison (404 until it is computed)."""
    params = compare_params(service.zoo, a, b, path or DEFAULT_PATHS, points)
    found = cached_comparison(service.zoo, params)
    if found is None:
        raise HTTPException(
            404, "this comparison is not computed yet; POST /api/compare to start it"
        )
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(comparison_figure(found, fmt), media_type=media)


@router.post(
    "/table",
    response_model=TableOut,
    responses={**ACCEPTED, **_errors(404)},
)
def table(service: ServiceDep, request: TableRequest) -> Response:
    """The pairwise table from the cache (200), or the job that computes it (202)."""
    params = table_params(
        service.zoo,
        request.names,
        request.tags,
        request.path,
        request.metric,
        request.points,
        request.match,
        request.kind,
        request.align,
    )
    found = cached_table(service.zoo, params)
    if found is None:
        return _accepted(service, "table", params)
    return JSONResponse(TableOut.model_validate(found.to_dict()).model_dump(mode="json"))


@_write_route("/midpoints", status_code=202, response_model=JobOut, errors=(404, 409))
def midpoint(service: ServiceDep, request: MidpointRequest) -> Response:
    """Queue the optimization of a midpoint between two entries; needs the token."""
    params = midpoint_params(
        service.zoo,
        request.a,
        request.b,
        request.name,
        request.path,
        request.epochs,
        request.lr,
        request.lr_halvings,
    )
    return _accepted(service, "midpoint", params)


@router.get("/jobs", response_model=JobList)
def jobs(
    service: ServiceDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    """The most recent jobs, newest first."""
    return JobList(jobs=[job_out(j) for j in service.zoo.jobs.recent(state=state, limit=limit)])


@router.get("/jobs/{job_id}", response_model=JobOut, responses=_errors(404))
def job(service: ServiceDep, job_id: JobId) -> JobOut:
    """A job's state, progress, and its result or error."""
    return job_out(service.zoo.jobs.get(job_id))
