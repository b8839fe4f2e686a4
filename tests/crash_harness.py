"""Run canon CLI commands in processes that are SIGKILLed at an exact point, or after a delay.

The product has no crash hooks: this script wraps real functions in the child
process only, and the wrapper sends SIGKILL to its own process at the chosen
point. Nothing is written to the product's code or files.

Kill points (``kill_at``):

``put``            entry of ``canon.zoo._objects.ObjectStore.put`` (before the object write)
``temp-written``   a temp object file (``.tmp-…``) is about to be renamed into place: its
                   bytes are written and fsynced, the rename has not happened
``renamed``        right after that rename (the object is in place; the index knows nothing)
``before-commit``  at the start of the commit of a transaction that writes a ``model`` row
                   (default ``EntryModel``: the add's index transaction)
``after-commit``   right after that transaction committed

``nth`` picks the nth time the point is reached (default 1): ``after-commit`` with
``model: "PairCacheModel"`` and ``nth: 2`` kills ``canon table`` once two pair results
are cached. A point that cannot be installed (a named function or model no longer
exists) makes the child exit with :data:`MISSING_POINT` and a message, and a point
that is never reached lets the command finish normally; either way the caller sees
that no SIGKILL happened (a killed child's ``returncode`` is ``-9``).

Three ways to run it::

    python tests/crash_harness.py --kill-at put -- add f.safetensors --name a --zoo z
        the process itself runs the command and is killed (its exit status says so)

    python tests/crash_harness.py --jobs jobs.json
        imports canon and torch once, then runs each job of the JSON list in a forked
        child (much faster than a fresh interpreter per kill; the modules a child imported are
        imported in the parent afterwards, so later children start warm) and prints one JSON line
        per job: ``{"returncode": -9, "elapsed": 0.8, "stdout": "...", "stderr": "..."}``

    python tests/crash_harness.py --serve
        the same, one job per line read from stdin, one result line per job on stdout
        (how the tests drive it: they check the zoo between kills)

A job is ``{"argv": [...], "kill_at": "renamed", "nth": 1, "model": "EntryModel"}``,
or ``{"argv": [...], "kill_after": 0.35}`` (the parent SIGKILLs the child that many
seconds after forking it), or just ``{"argv": [...]}``; ``"trace": true`` reports when the
run reached each kill point (``"trace": {"put": 0.41, ...}``, seconds after the fork).
The child's exit status for a normal run is the CLI's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MISSING_POINT = 97  # exit status of a child whose kill point could not be installed
KILL_POINTS = ("put", "temp-written", "renamed", "before-commit", "after-commit")


class MissingPoint(RuntimeError):
    """A patch point named by the harness no longer exists in the product."""


def die() -> None:
    """SIGKILL this process now (stdio flushed first, so its output up to here is kept)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught
    os._exit(98)


def _attr(module: str, dotted: str) -> tuple[Any, str, Any]:
    """(owner, attribute name, value) of ``module:dotted``, or MissingPoint."""
    import importlib

    try:
        owner: Any = importlib.import_module(module)
    except ImportError as exc:
        raise MissingPoint(f"cannot import {module}: {exc}") from exc
    *path, name = dotted.split(".")
    for part in path:
        if not hasattr(owner, part):
            raise MissingPoint(f"{module}.{'.'.join(path)} does not exist")
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise MissingPoint(f"{module}.{dotted} does not exist")
    return owner, name, getattr(owner, name)


def _counter(nth: int) -> Callable[[], bool]:
    """A function that returns True on its nth call (and only then)."""
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == nth

    return hit


def install(
    kill_at: str, nth: int = 1, model: str = "EntryModel", action: Callable[[], None] = die
) -> None:
    """Wrap the real functions so that this process SIGKILLs itself at ``kill_at``.

    (``action`` replaces the SIGKILL: the ``trace`` jobs record when each point is reached.)
    """
    if kill_at not in KILL_POINTS:
        raise MissingPoint(f"unknown kill point {kill_at!r}; choose one of {KILL_POINTS}")
    hit = _counter(nth)
    if kill_at == "put":
        owner, name, real_put = _attr("canon.zoo._objects", "ObjectStore.put")

        def put(self: Any, *args: Any, **kwargs: Any) -> Any:
            if hit():
                action()
            return real_put(self, *args, **kwargs)

        setattr(owner, name, put)
    elif kill_at in ("temp-written", "renamed"):
        _, _, prefix = _attr("canon.zoo._objects", "TEMP_PREFIX")
        _, _, suffix = _attr("canon.zoo._objects", "SUFFIX")
        _attr("canon.zoo._objects", "ObjectStore.put")  # the function whose rename we watch
        for fname in ("replace", "rename"):
            real = getattr(os, fname)

            def move(src: Any, dst: Any, *a: Any, _real: Any = real, **k: Any) -> Any:
                ours = Path(os.fsdecode(src)).name.startswith(prefix) and os.fsdecode(dst).endswith(
                    suffix
                )
                if ours and kill_at == "temp-written" and hit():
                    if not Path(os.fsdecode(src)).is_file():
                        raise MissingPoint(f"temp file {src} is not there before its rename")
                    action()
                result = _real(src, dst, *a, **k)
                if ours and kill_at == "renamed" and hit():
                    action()
                return result

            setattr(os, fname, move)
    else:
        _, _, model_cls = _attr("canon.zoo._models", model)
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        flag = f"crash_harness_writes_{model}_{id(hit)}"

        def writes(session: Session) -> bool:
            return bool(session.info.get(flag)) or any(
                isinstance(o, model_cls) for o in (*session.new, *session.dirty)
            )

        def after_flush(session: Session, _ctx: Any) -> None:
            if any(isinstance(o, model_cls) for o in (*session.new, *session.dirty)):
                session.info[flag] = True

        def before_commit(session: Session) -> None:
            if kill_at == "before-commit" and writes(session) and hit():
                action()

        def after_commit(session: Session) -> None:
            wrote = session.info.pop(flag, False)
            if kill_at == "after-commit" and wrote and hit():
                action()

        def after_rollback(session: Session) -> None:
            session.info.pop(flag, None)

        event.listen(Session, "after_flush", after_flush)
        event.listen(Session, "before_commit", before_commit)
        event.listen(Session, "after_commit", after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, _t: after_rollback(s))


def run_cli(argv: list[str]) -> int:
    """Run ``canon ARGV`` in this process; its exit code."""
    from canon.cli import cli

    try:
        cli.main(args=argv, prog_name="canon", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def trace(times: dict[str, float], start: float, model: str = "EntryModel") -> None:
    """Record in ``times`` when each kill point is first reached (seconds after ``start``)."""
    for point in KILL_POINTS:

        def record(point: str = point) -> None:
            times.setdefault(point, round(time.monotonic() - start, 4))

        install(point, 1, model, action=record)


def run_one(argv: list[str], kill_at: str | None, nth: int, model: str) -> int:
    """Install the kill point (if any) and run the command; the exit code."""
    if kill_at is not None:
        try:
            install(kill_at, nth, model)
        except MissingPoint as exc:
            print(f"crash_harness: kill point `{kill_at}` missing: {exc}", file=sys.stderr)
            return MISSING_POINT
    return run_cli(argv)


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def run_job(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one job in a forked child; its return code, run time and output."""
    out, err, learned = workdir / "stdout", workdir / "stderr", workdir / "modules"
    traced = workdir / "trace"
    learned.unlink(missing_ok=True)
    traced.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        baseline = set(sys.modules)
        try:
            fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            times: dict[str, float] = {}
            if job.get("trace"):
                trace(times, start, job.get("model", "EntryModel"))
            code = run_one(
                list(job["argv"]),
                job.get("kill_at"),
                int(job.get("nth", 1)),
                job.get("model", "EntryModel"),
            )
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                names = [m for m in list(sys.modules) if m not in baseline]
                learned.write_text("\n".join(names))
                if job.get("trace"):
                    traced.write_text(json.dumps(times))
            finally:
                os._exit(code)
    kill_after = job.get("kill_after")
    killed_by_parent = False
    if kill_after is None:
        _, wait_status = os.waitpid(pid, 0)
    else:
        deadline = start + float(kill_after)
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed_by_parent = True
                _, wait_status = os.waitpid(pid, 0)
                break
            time.sleep(min(left, 0.005))
    elapsed = time.monotonic() - start
    if learned.is_file():
        learn_imports(learned.read_text().split())
    return {
        "returncode": _status(wait_status),
        "elapsed": round(elapsed, 4),
        "killed_by_parent": killed_by_parent,
        "trace": json.loads(traced.read_text()) if traced.is_file() else None,
        "stdout": out.read_text(errors="replace"),
        "stderr": err.read_text(errors="replace"),
    }


def learn_imports(names: list[str]) -> None:
    """Import here the modules a finished child imported, so later children start warm.

    Only imports: no torch work happens in this process, whose children are forked.
    """
    import importlib

    for name in names:
        if name in sys.modules or name == "__main__":
            continue
        # (an alias, or a module that only imports in context, is skipped)
        with contextlib.suppress(BaseException):
            importlib.import_module(name)


def warm_imports() -> None:
    """Import what the commands need, once, before forking (no torch work is done here)."""
    import torch  # noqa: F401

    import canon.cli
    import canon.zoo._analysis
    import canon.zoo._models
    import canon.zoo._objects  # noqa: F401

    # what an add with a dataset and a table import on first use (best effort: the rest is
    # learned from the children, see learn_imports)
    learn_imports(["sklearn.datasets", "torch.fx.experimental.symbolic_shapes", "scipy.stats"])


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=Path, help="a JSON list of jobs, run in forked children")
    parser.add_argument("--serve", action="store_true", help="jobs as JSON lines on stdin")
    parser.add_argument("--kill-at", choices=KILL_POINTS, default=None)
    parser.add_argument("--nth", type=int, default=1)
    parser.add_argument("--model", default="EntryModel")
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- canon arguments")
    ns = parser.parse_args(args)
    if ns.jobs is not None:
        jobs = json.loads(ns.jobs.read_text())
        warm_imports()
        with tempfile.TemporaryDirectory(prefix="crash-harness-") as tmp:
            for job in jobs:
                print(json.dumps(run_job(job, Path(tmp))), flush=True)
        return 0
    if ns.serve:
        warm_imports()
        with tempfile.TemporaryDirectory(prefix="crash-harness-") as tmp:
            print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
            for line in sys.stdin:
                if line.strip():
                    print(json.dumps(run_job(json.loads(line), Path(tmp))), flush=True)
        return 0
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    return run_one(argv, ns.kill_at, ns.nth, ns.model)


if __name__ == "__main__":
    sys.exit(main())
