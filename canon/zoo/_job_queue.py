"""A persistent job queue in the zoo's index: long work that survives a restart.

A job is a request (a ``kind`` and JSON ``params``) identified by a
deterministic key, so identical requests share one job while it is queued or
running (the unique ``active_key`` column makes this hold across threads and
processes). Workers claim the oldest queued job, report progress, and finish
or fail it; jobs left ``running`` by a process that died are re-queued on the
next start. ORM rows stay here: every method returns frozen :class:`Job` records.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from canon.errors import JobNotFoundError, QueueFullError
from canon.zoo._index import Index
from canon.zoo._models import JobModel
from canon.zoo._records import canonical_json

__all__ = [
    "ACTIVE_STATES",
    "JOB_STATES",
    "KEEP_FINISHED",
    "MAX_ACTIVE_JOBS",
    "MAX_ATTEMPTS",
    "Job",
    "JobQueue",
    "JobState",
    "job_key",
]

JobState = Literal["queued", "running", "done", "failed"]
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed")
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
#: A job whose process died this many times while running it is failed, not re-queued.
MAX_ATTEMPTS = 3
#: queued and running jobs a zoo holds at most: past it, a new request is refused
#: (:class:`~canon.errors.QueueFullError`; the service answers 503), never queued
MAX_ACTIVE_JOBS = 256
#: finished (done or failed) jobs kept, the newest; older ones are dropped as jobs come
KEEP_FINISHED = 1000
_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Job:
    """One job: what was asked, how far it got, and its result or error."""

    id: str
    kind: str
    key: str
    params: Mapping[str, Any]
    state: JobState
    done: int = 0
    total: int = 0
    attempts: int = 0
    result: Any = None
    error: Mapping[str, str] | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = field(default=None)

    @property
    def active(self) -> bool:
        """Whether the job is still queued or running."""
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "id": self.id,
            "kind": self.kind,
            "key": self.key,
            "params": dict(self.params),
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "attempts": self.attempts,
            "result": self.result,
            "error": dict(self.error) if self.error else None,
            "created": iso(self.created),
            "started": iso(self.started),
            "finished": iso(self.finished),
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the index stores naive UTC


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _record(row: JobModel) -> Job:
    """The frozen record of a job row (rows never leave the store)."""
    error = None
    if row.error_type is not None:
        error = {"type": row.error_type, "message": row.error_message or ""}
    return Job(
        id=row.id,
        kind=row.kind,
        key=row.key,
        params=json.loads(row.params),
        state=row.state,  # type: ignore[arg-type]
        done=row.done,
        total=row.total,
        attempts=row.attempts,
        result=None if row.result is None else json.loads(row.result),
        error=error,
        created=_aware(row.created),
        started=_aware(row.started),
        finished=_aware(row.finished),
    )


def job_key(kind: str, params: Mapping[str, Any]) -> str:
    """The deterministic key of a request: sha256 of its kind and canonical JSON params."""
    text = canonical_json({"kind": kind, "params": dict(params)})
    return hashlib.sha256(text.encode()).hexdigest()


def _row(s: Session, job_id: str) -> JobModel:
    row = s.get(JobModel, job_id) if isinstance(job_id, str) and _ID_RE.fullmatch(job_id) else None
    if row is None:
        raise JobNotFoundError(f"no job `{job_id}` in this zoo", job_id=str(job_id))
    return row


def _prune(s: Session) -> None:
    """Drop the finished jobs older than the newest :data:`KEEP_FINISHED`."""
    finished = JobModel.state.in_(("done", "failed"))
    cutoff = s.scalar(
        select(JobModel.created)
        .where(finished)
        .order_by(JobModel.created.desc())
        .offset(KEEP_FINISHED)
        .limit(1)
    )
    if cutoff is not None:
        s.execute(delete(JobModel).where(finished, JobModel.created <= cutoff))


class JobQueue:
    """The jobs kept in ``index``: submit, claim, report, finish, fail, release, recover."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def submit(self, kind: str, params: Mapping[str, Any]) -> tuple[Job, bool]:
        """The active job for this request, or a new queued one; and whether it was created.

        Runs in one write transaction (``BEGIN IMMEDIATE``), so two threads or
        processes submitting the same request at once get the same job.
        """
        key = job_key(kind, params)
        with self.index.session(write=True) as s:
            existing = s.scalar(select(JobModel).where(JobModel.active_key == key))
            if existing is not None:
                return _record(existing), False
            active = s.scalar(
                select(func.count()).select_from(JobModel).where(JobModel.active_key.is_not(None))
            )
            if (active or 0) >= MAX_ACTIVE_JOBS:
                raise QueueFullError(
                    f"the job queue holds {active} active jobs, as many as it may "
                    f"({MAX_ACTIVE_JOBS}); try again when some have finished"
                )
            _prune(s)
            row = JobModel(
                id=secrets.token_hex(16),
                kind=kind,
                key=key,
                active_key=key,
                params=canonical_json(dict(params)),
                state="queued",
                done=0,
                total=0,
                attempts=0,
                created=_now(),
            )
            s.add(row)
            s.flush()
            return _record(row), True

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; :class:`~canon.errors.JobNotFoundError` if there is none."""
        with self.index.session() as s:
            return _record(_row(s, job_id))

    def recent(self, *, state: JobState | None = None, limit: int = 50) -> list[Job]:
        """The most recent jobs (newest first), optionally only those in ``state``."""
        query = select(JobModel).order_by(JobModel.created.desc(), JobModel.id).limit(limit)
        if state is not None:
            query = query.where(JobModel.state == state)
        with self.index.session() as s:
            return [_record(row) for row in s.scalars(query)]

    def claim(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when the queue is empty)."""
        with self.index.session(write=True) as s:
            row = s.scalar(
                select(JobModel)
                .where(JobModel.state == "queued")
                .order_by(JobModel.created, JobModel.id)
                .limit(1)
            )
            if row is None:
                return None
            row.state = "running"
            row.started = _now()
            row.attempts += 1
            s.flush()
            return _record(row)

    def report_progress(self, job_id: str, done: int, total: int) -> None:
        """Record that a running job has done ``done`` of ``total`` steps."""
        with self.index.session(write=True) as s:
            s.execute(
                update(JobModel)
                .where(JobModel.id == job_id, JobModel.state == "running")
                .values(done=done, total=total)
            )

    def finish(self, job_id: str, result: Any) -> Job:
        """Store a running job's JSON ``result`` and mark it done (no longer shared)."""
        text = canonical_json(result)
        with self.index.session(write=True) as s:
            row = _row(s, job_id)
            row.state, row.result, row.active_key, row.finished = "done", text, None, _now()
            row.done = max(row.done, row.total)
            s.flush()
            return _record(row)

    def fail(self, job_id: str, error_type: str, message: str) -> Job:
        """Mark a job failed with an error type and message (a later request makes a new job)."""
        with self.index.session(write=True) as s:
            row = _row(s, job_id)
            row.state, row.active_key, row.finished = "failed", None, _now()
            row.error_type, row.error_message = error_type[:128], message
            s.flush()
            return _record(row)

    def release(self, job_id: str) -> Job:
        """Put a running job back in the queue (its worker stopped before finishing it)."""
        with self.index.session(write=True) as s:
            row = _row(s, job_id)
            if row.state == "running":
                row.state, row.started = "queued", None
                row.attempts = max(0, row.attempts - 1)  # an orderly stop is not a failed attempt
            s.flush()
            return _record(row)

    def recover(self) -> tuple[int, int]:
        """Re-queue jobs left running by a process that died; (re-queued, failed) counts.

        Call it when the only process working on the queue starts. A job that was
        already attempted :data:`MAX_ATTEMPTS` times is failed instead, so a job
        that kills its process cannot do so forever.
        """
        requeued = failed = 0
        with self.index.session(write=True) as s:
            for row in s.scalars(select(JobModel).where(JobModel.state == "running")):
                if row.attempts >= MAX_ATTEMPTS:
                    row.state, row.active_key, row.finished = "failed", None, _now()
                    row.error_type = "InterruptedError"
                    row.error_message = (
                        f"the server stopped {row.attempts} times while running this job; "
                        "it was given up"
                    )
                    failed += 1
                else:
                    row.state, row.started = "queued", None
                    requeued += 1
        return requeued, failed
