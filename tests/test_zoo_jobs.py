"""The zoo's persistent job queue: shared requests, claiming, progress, results, recovery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from canon.errors import JobNotFoundError
from canon.zoo import MAX_ATTEMPTS, Zoo, job_key

PARAMS = {"a": "1" * 64, "b": "2" * 64, "paths": ["geodesic"], "points": 25}


@pytest.fixture
def zoo(tmp_path: Path) -> Zoo:
    return Zoo.open(tmp_path / "zoo")


def test_identical_requests_share_the_active_job(zoo: Zoo) -> None:
    """Submitting the same request twice gives one job; other params or kinds give others."""
    first, created = zoo.jobs.submit("compare", PARAMS)
    again, created_again = zoo.jobs.submit("compare", dict(reversed(PARAMS.items())))
    assert created and not created_again and again.id == first.id
    assert first.state == "queued" and first.key == job_key("compare", PARAMS)
    other, _ = zoo.jobs.submit("compare", {**PARAMS, "points": 9})
    table, _ = zoo.jobs.submit("table", PARAMS)
    assert len({first.id, other.id, table.id}) == 3


def test_claim_progress_finish(zoo: Zoo) -> None:
    """Workers claim the oldest job; progress and result are stored; done jobs are not shared."""
    job, _ = zoo.jobs.submit("compare", PARAMS)
    later, _ = zoo.jobs.submit("table", PARAMS)
    claimed = zoo.jobs.claim()
    assert claimed is not None and claimed.id == job.id
    assert claimed.state == "running" and claimed.attempts == 1 and claimed.started is not None
    zoo.jobs.report_progress(job.id, 1, 3)
    assert (zoo.jobs.get(job.id).done, zoo.jobs.get(job.id).total) == (1, 3)
    done = zoo.jobs.finish(job.id, {"barrier": 0.25})
    assert done.state == "done" and done.result == {"barrier": 0.25} and done.finished
    assert not done.active
    fresh, created = zoo.jobs.submit("compare", PARAMS)
    assert created and fresh.id != job.id
    assert [j.id for j in zoo.jobs.recent(state="done")] == [job.id]
    assert zoo.jobs.claim().id == later.id  # type: ignore[union-attr]


def test_failed_and_released_jobs(zoo: Zoo) -> None:
    """A failed job keeps its error and frees its key; a released one is queued again."""
    job, _ = zoo.jobs.submit("compare", PARAMS)
    zoo.jobs.claim()
    released = zoo.jobs.release(job.id)
    assert released.state == "queued" and released.attempts == 0
    zoo.jobs.claim()
    failed = zoo.jobs.fail(job.id, "ConfigError", "bad options")
    assert failed.state == "failed" and failed.error == {
        "type": "ConfigError",
        "message": "bad options",
    }
    assert zoo.jobs.submit("compare", PARAMS)[1]
    with pytest.raises(JobNotFoundError):
        zoo.jobs.get("0" * 32)
    with pytest.raises(JobNotFoundError):
        zoo.jobs.get("../../etc/passwd")


def test_recovery_requeues_running_jobs_until_attempts_run_out(zoo: Zoo) -> None:
    """Jobs left running by a dead process are re-queued, and failed after MAX_ATTEMPTS."""
    job, _ = zoo.jobs.submit("compare", PARAMS)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = zoo.jobs.claim()
        assert claimed is not None and claimed.attempts == attempt
        requeued, failed = zoo.jobs.recover()
        expected = (0, 1) if attempt == MAX_ATTEMPTS else (1, 0)
        assert (requeued, failed) == expected
    given_up = zoo.jobs.get(job.id)
    assert given_up.state == "failed" and given_up.error is not None
    assert given_up.error["type"] == "InterruptedError"


def test_concurrent_submits_from_threads_and_zoos_make_one_job(zoo: Zoo) -> None:
    """Eight threads, each with its own Zoo on one index, submitting at once share one job."""

    def submit(_: int) -> str:
        with Zoo.open(zoo.root) as own:
            return own.jobs.submit("table", PARAMS)[0].id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1 and len(zoo.jobs.recent()) == 1


@pytest.mark.slow  # about 3,000 write transactions
def test_the_queue_is_bounded_and_keeps_only_recent_finished_jobs(zoo: Zoo) -> None:
    """Past MAX_ACTIVE_JOBS queued or running jobs a new request is refused (the service
    answers 503), while one already queued is still shared; finished jobs beyond the
    newest KEEP_FINISHED are dropped as new ones come."""
    from canon.errors import QueueFullError
    from canon.zoo._job_queue import KEEP_FINISHED, MAX_ACTIVE_JOBS

    jobs = [zoo.jobs.submit("compare", {**PARAMS, "points": n})[0] for n in range(MAX_ACTIVE_JOBS)]
    with pytest.raises(QueueFullError, match="as many as it may"):
        zoo.jobs.submit("compare", {**PARAMS, "points": MAX_ACTIVE_JOBS})
    assert zoo.jobs.submit("compare", {**PARAMS, "points": 0})[0].id == jobs[0].id
    first = zoo.jobs.claim()
    assert first is not None
    zoo.jobs.finish(first.id, {})
    assert zoo.jobs.submit("compare", {**PARAMS, "points": MAX_ACTIVE_JOBS})[1]
    for n in range(KEEP_FINISHED + 5):
        claimed = zoo.jobs.claim()
        assert claimed is not None
        zoo.jobs.finish(claimed.id, {})
        zoo.jobs.submit("table", {**PARAMS, "points": n})
    finished = zoo.jobs.recent(state="done", limit=10 * KEEP_FINISHED)
    assert KEEP_FINISHED <= len(finished) <= KEEP_FINISHED + 1
    with pytest.raises(JobNotFoundError):
        zoo.jobs.get(first.id)
