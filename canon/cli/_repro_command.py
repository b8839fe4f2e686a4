"""``canon repro``: the paper's findings reproduced at small scale, with a report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from canon.cli._app import App, command, emit
from canon.cli._common import Reporter, reporter

__all__ = ["repro"]


@command(zoo=False)
@click.option("--quick", is_flag=True, help="The small plan (a few minutes; what CI runs).")
@click.option(
    "--out",
    default="repro",
    show_default=True,
    help="Folder for reproduction.md, reproduction.json and figures/.",
)
@click.option("--seed", default=0, show_default=True, help="Base seed of every network.")
@click.option(
    "--epoch-scale",
    type=click.FloatRange(min=0.0, min_open=True, max=1.0),
    default=None,
    help="Every training budget as this fraction of the paper's 300/200/500 epochs "
    "(default: 1, the paper's own; 1/60 with --quick).",
)
@click.option(
    "--keep-zoo",
    default=None,
    metavar="DIR",
    help="Keep the trained networks as a zoo in DIR (new or empty; default: discarded).",
)
def repro(
    app: App, quick: bool, out: str, seed: int, epoch_scale: float | None, keep_zoo: str | None
) -> None:
    """Reproduce the paper's findings at small scale and write a report with figures."""
    from canon.repro import run_reproduction

    scale = "" if epoch_scale is None else f" --epoch-scale {epoch_scale:g}"
    command = "canon repro" + (" --quick" if quick else "") + f" --out {out} --seed {seed}"
    command += scale
    with _stage_bar(app) as update:
        result = run_reproduction(
            out,
            quick=quick,
            seed=seed,
            epoch_scale=epoch_scale,
            device=app.device,
            zoo_dir=keep_zoo,
            progress=update,
            command=command,
        )

    emit(app, result.to_dict(), result.summary)


@contextmanager
def _stage_bar(app: App) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress reporter whose description follows the stage, or None when it is off."""
    with reporter(app, unit="step") as report:
        yield None if report is None else _by_stage(report)


def _by_stage(report: Reporter) -> Callable[[str, int, int], None]:
    def update(stage: str, done: int, total: int) -> None:
        report.update(done, total, desc=stage)

    return update
