"""Pydantic models of the API's requests and responses (they make the OpenAPI schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from canon.engine.kinds import (
    MIDPOINT_LR,
    MIDPOINT_LR_HALVINGS,
    MIDPOINT_LR_HALVINGS_MAX,
    MIDPOINT_LR_MAX,
)
from canon.service._work import (
    COMPARABLE_PATHS,
    DEFAULT_PATHS,
    MATCHING_METHODS,
    METRICS,
    MIDPOINT_PATHS,
)
from canon.zoo import ALIGN_MODES, SELECTION_KINDS, Entry, Job, check_name
from canon.zoo import NAME_PATTERN as _ENTRY_NAME

__all__ = [
    "NAME_PATTERN",
    "CompareRequest",
    "ComparisonOut",
    "EntryDetail",
    "EntryList",
    "EntryName",
    "EntryOut",
    "ErrorOut",
    "InfoOut",
    "JobList",
    "JobOut",
    "MidpointRequest",
    "SelectionKind",
    "TableOut",
    "TableRequest",
    "entry_out",
    "job_out",
]

#: The entry-name rule of :func:`canon.zoo._records.check_name`, anchored for JSON Schema.
NAME_PATTERN = f"^{_ENTRY_NAME}$"
MAX_POINTS = 201
MAX_SELECTION = 500


def _member_of(choices: Sequence[str], what: str) -> AfterValidator:
    """A validator accepting only ``choices`` (a clear message names them)."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {what} `{value}`; choose one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _enum(choices: Sequence[str]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "enum": list(choices)})


EntryName = Annotated[
    str,
    AfterValidator(check_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}),
]
ComparablePath = Annotated[str, _member_of(COMPARABLE_PATHS, "path kind"), _enum(COMPARABLE_PATHS)]
MidpointPath = Annotated[str, _member_of(MIDPOINT_PATHS, "midpoint path"), _enum(MIDPOINT_PATHS)]
Metric = Annotated[str, _member_of(METRICS, "metric"), _enum(METRICS)]
Points = Annotated[int, Field(ge=3, le=MAX_POINTS, description="Points along each path.")]
MatchMethod = Annotated[
    str, _member_of(MATCHING_METHODS, "matching method"), _enum(MATCHING_METHODS)
]
AlignMode = Annotated[str, _member_of(ALIGN_MODES, "alignment"), _enum(ALIGN_MODES)]
SelectionKind = Annotated[str, _member_of(SELECTION_KINDS, "entry kind"), _enum(SELECTION_KINDS)]
TagValue = Annotated[str, Field(max_length=256)]
JobKind = Literal["compare", "table", "midpoint"]
JobStateName = Literal["queued", "running", "done", "failed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """What went wrong."""

    type: str = Field(description="The error's class, e.g. EntryNotFoundError.")
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    """Every error response."""

    error: ErrorBody


class EntryOut(BaseModel):
    """One zoo entry as listed."""

    id: str = Field(description="sha256 of the stored safetensors object.")
    name: str
    architecture: str
    config: dict[str, Any]
    family: str
    dataset: str | None
    kind: Literal["solution", "midpoint"]
    tags: dict[str, str]
    parents: list[str] = Field(description="Parent entry ids.")
    metrics: dict[str, Any]
    created: str | None


class EntryDetail(EntryOut):
    """One entry with its parents' names, its family reference and its download link."""

    parent_names: list[str]
    reference: str
    weights_url: str


class EntryList(BaseModel):
    """Entries matching a filter, sorted by name."""

    count: int
    entries: list[EntryOut]


class InfoOut(BaseModel):
    """The server: its zoo's size and whether it accepts writes."""

    status: Literal["ok"]
    version: str
    entries: int
    read_only: bool
    max_upload_bytes: int


class CompareRequest(_Strict):
    """Compare two entries along path kinds."""

    a: EntryName
    b: EntryName
    paths: list[ComparablePath] = Field(
        default_factory=lambda: list(DEFAULT_PATHS), min_length=1, max_length=5
    )
    points: Points = 25
    match: MatchMethod = "auto"
    align: AlignMode = "pair"


class CurveOut(BaseModel):
    """The train error along one path, its barrier and excess."""

    model_config = ConfigDict(extra="allow")

    kind: str
    x: list[float]
    train_error: list[float]
    barrier: float
    excess: float
    distances: dict[str, float]
    options: dict[str, Any]


class ComparisonOut(BaseModel):
    """Distances between two entries and the error curve along each path kind."""

    a: str
    b: str
    distances: dict[str, float]
    curves: dict[str, CurveOut]
    figure_url: str


class TableRequest(_Strict):
    """A pairwise barrier or distance table over named entries, or entries with tags."""

    names: list[EntryName] | None = Field(
        default=None, max_length=MAX_SELECTION, description="Entries in order; default all."
    )
    tags: dict[Annotated[str, Field(max_length=64)], TagValue] | None = Field(
        default=None, max_length=32, description="Keep only entries with every tag."
    )
    path: ComparablePath = "geodesic"
    metric: Metric = "barrier"
    points: Points = 25
    match: MatchMethod = "auto"
    align: AlignMode = "pair"
    kind: SelectionKind = "solution"


class TableOut(BaseModel):
    """A symmetric matrix over named entries (zero diagonal)."""

    names: list[str]
    metric: str
    path: str | None
    matrix: list[list[float]]
    computed: int
    options: dict[str, Any]


class MidpointRequest(_Strict):
    """Optimize a midpoint between two entries and add it to the zoo as ``name``."""

    a: EntryName
    b: EntryName
    name: EntryName
    path: MidpointPath = "geodesic"
    epochs: int = Field(default=300, ge=1, le=10_000)
    lr: float = Field(default=MIDPOINT_LR, ge=0, le=MIDPOINT_LR_MAX)
    lr_halvings: int = Field(default=MIDPOINT_LR_HALVINGS, ge=0, le=MIDPOINT_LR_HALVINGS_MAX)


class JobError(BaseModel):
    """Why a job failed."""

    type: str
    message: str


class JobOut(BaseModel):
    """A job: what it computes, how far it got, its result or error."""

    id: str
    kind: JobKind
    state: JobStateName
    done: int
    total: int
    attempts: int
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: JobError | None
    created: str | None
    started: str | None
    finished: str | None
    url: str


class JobList(BaseModel):
    """Recent jobs, newest first."""

    jobs: list[JobOut]


def entry_out(entry: Entry) -> dict[str, Any]:
    """An entry as :class:`EntryOut` data."""
    return entry.to_dict()


def job_out(job: Job) -> JobOut:
    """A job record as :class:`JobOut`."""
    data = job.to_dict()
    data.pop("key")
    return JobOut.model_validate({**data, "url": f"/api/jobs/{job.id}"})
