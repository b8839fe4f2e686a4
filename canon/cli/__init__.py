"""The ``canon`` command line (click). Commands parse, call the library, print."""

from __future__ import annotations

import os
import sys

import click

from canon._options import parse_json
from canon.cli import _analysis_commands as analysis
from canon.cli import _hub_commands as hub
from canon.cli import _plot_commands as plots
from canon.cli import _repro_command as reproduction
from canon.cli import _serve_command as serving
from canon.cli import _zoo_commands as zoo
from canon.cli._app import App, CanonGroup, command, emit

__all__ = ["cli", "main"]


@click.group(cls=CanonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="canon-zoo", prog_name="canon")
def cli() -> None:
    """canon: canonical forms, distances and error barriers between trained networks."""


@command(group=cli, zoo=False)
@click.option("--seed", default=0, show_default=True, help="Seed of the networks and copies.")
def demo(app: App, seed: int) -> None:
    """Show that symmetry-scrambled copies of networks have the same canonical form."""
    from canon.demo import run_demo
    from canon.device import resolve_device

    rows = run_demo(resolve_device(app.device), seed=seed)

    def table() -> str:
        head = f"{'architecture':<12} {'params':>9} {'raw dist':>9} {'canon dist':>11} " + (
            f"{'same pred':>9} {'time':>8}"
        )
        lines = [
            "A random network vs. a copy with its hidden units permuted, rescaled and",
            "sign-flipped (same function). Distances are relative: ||a - b|| / ||a||.",
            "",
            head,
            "-" * len(head),
        ]
        for r in rows:
            lines.append(
                f"{r.architecture:<12} {r.parameters:>9,} {r.raw_distance:>9.3f} "
                f"{r.canonical_distance:>11.1e} {r.same_predictions:>9.1%} "
                f"{r.seconds * 1000:>6.1f}ms"
            )
        return "\n".join(lines)

    emit(app, {"rows": [r.to_dict() for r in rows]}, table)


#: What ``canon spec`` says of a router's rows, which no layer reads.
ROUTED = "none (a router: its rows pick the experts)"


@command(group=cli, zoo=False)
@click.argument("architecture")
@click.option("--config", "config_json", default="{}", help="Architecture config as JSON.")
def spec(app: App, architecture: str, config_json: str) -> None:
    """Show the structure spec (unit groups and symmetries) of an architecture."""
    from canon.architectures import build_model, resolve_config
    from canon.core import spec_from_module
    from canon.core.experts import EXPERTS_LINK

    config = parse_json(config_json)
    model = build_model(architecture, config)
    derived = spec_from_module(model)

    def text() -> str:
        lines = [f"{architecture} {resolve_config(architecture, config)}"]
        for g in derived.groups:
            inv = ", scale-invariant" if g.scale_invariant else ""
            if g.linear_only and g.symmetry == "scale":
                inv += " (linear: sign flips and invertible mixing are not removed)"
            elif g.linear_only:
                inv += " (linear: invertible mixing is not removed)"
            layers = ", ".join(
                p.weight.rsplit(".", 1)[0]
                + (f" rows {p.start}+" if p.start or p.stride else "")
                + (f" in runs of {p.head} every {p.stride}" if p.stride else "")
                + (f" + BatchNorm {p.batchnorm.weight.rsplit('.', 1)[0]}" if p.batchnorm else "")
                for p in g.producers
            )
            experts = g.link.endswith(EXPERTS_LINK)  # a mixture's experts, or its router's rows
            if g.heads > 1:
                what = "experts" if experts else "heads"
                inv += f", in {g.heads} {what} of {g.size // g.heads} (order shared: {g.link})"
            if g.heads_only:
                inv += ", only whole heads move (dimensions pinned)"
            if g.blocks > 1 and g.blocks != g.heads:  # GroupNorm groups, heads kept in place
                inv += f", permuting only within {g.blocks} blocks"
            bn = f", produced by {layers}"
            if g.carried:
                bn += f", carries {len(g.carried)} tensors"
            outs = ", ".join(
                f"{o.name}[axis {o.axis}{f', blocks of {o.block}' if o.block > 1 else ''}"
                f"{f', from {o.start}' if o.start else ''}"
                f"{f', in runs of {o.head} every {o.stride}' if o.stride else ''}]"
                for o in g.outgoing
            )
            lines.append(
                f"  group {g.name}: {g.size} units, symmetry {g.symmetry}{inv}{bn}; "
                f"outgoing {outs or (ROUTED if experts else 'none (summed)')}"
            )
        out = derived.output
        none = "  output: none to scale (a fixed read-out, or tied to the embedding, or capped)"
        lines.append(f"  output {out.weight}: {out.size} units" if out else none)
        return "\n".join(lines)

    emit(app, {"architecture": architecture, "spec": derived.to_dict()}, text)


for _command in (
    zoo.init,
    zoo.add,
    zoo.list_entries,
    zoo.show,
    zoo.edit,
    zoo.rm,
    zoo.verify,
    zoo.reference,
    analysis.compare,
    analysis.table,
    analysis.train,
    analysis.energy,
    analysis.plane,
    analysis.midpoint,
    hub.push,
    hub.pull,
    serving.serve,
    plots.plot,
    reproduction.repro,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    _allocator_defaults()
    cli()


def _allocator_defaults() -> None:
    """Have PyTorch (imported later, by the commands that compute) back its large CPU
    tensors with transparent huge pages on Linux (``THP_MEM_ALLOC_ENABLE``, read at its
    first allocation; a value already set is kept). A network-sized copy is then mostly
    the copy: normalizing, matching and moving a VGG's 400 MB layer spend most of their
    time in page faults on 4 KB pages."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
