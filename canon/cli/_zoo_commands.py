"""Zoo bookkeeping commands: init, add, list, show, edit, rm, verify, reference."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canon._format import pct
from canon._limits import clip
from canon._options import parse_json, parse_tags
from canon.cli._app import App, command, emit
from canon.cli._common import (
    entry_summary,
    index_path,
    open_zoo,
    progress,
    read_entries,
    zoo_path,
)
from canon.errors import ConfigError

if TYPE_CHECKING:
    from canon.zoo import Entry

__all__ = ["add", "edit", "init", "list_entries", "reference", "rm", "show", "verify"]

KIND_CHOICE = click.Choice(["solution", "midpoint"])
tag_option = click.option("--tag", "tags", multiple=True, metavar="K=V", help="A tag (repeatable).")


@command()
def init(app: App) -> None:
    """Create a zoo (fine if it already exists)."""
    from pathlib import Path

    from canon.zoo import INDEX

    root = Path(app.zoo or "zoo")
    existed = (root / INDEX).is_file()
    with open_zoo(app, create=True) as zoo:
        count = len(zoo)
    message = f"zoo at {root} " + (f"already exists ({count} entries)" if existed else "created")
    emit(app, {"zoo": str(root), "created": not existed, "entries": count}, lambda: message)


@command()
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option(
    "--name",
    default=None,
    help="A unique entry name (for hf://, default the repository's name; for a model "
    "folder, the folder's).",
)
@click.option("--arch", default=None, help="Architecture name or module:function.")
@click.option("--config", "config_json", default=None, help="Architecture config as JSON.")
@click.option("--dataset", default=None, help="The dataset it was trained on.")
@click.option(
    "--input-shape",
    default=None,
    metavar="SHAPE",
    help="One input sample's shape, e.g. 3,32,32 or [3,32,32], for a module:function "
    "network that does not say it (recorded; else taken from --dataset).",
)
@click.option(
    "--key",
    default=None,
    metavar="NAME",
    help="The key of the checkpoint dict that holds the state dict (default: a plain state "
    "dict, else state_dict, model_state_dict, model, ...).",
)
@tag_option
@click.option("--kind", type=KIND_CHOICE, default="solution", show_default=True)
@click.option(
    "--sha256",
    default=None,
    metavar="HEX",
    help="hf:// only: the sha256 the weights file must have (as sha256sum prints it).",
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="hf:// and model folders: accept a config.json that names its own code (auto_map); "
    "canon builds the library's own model type and never runs that code.",
)
@click.option(
    "--token",
    envvar="HF_TOKEN",
    default=None,
    help="hf:// only: Hub access token (else $HF_TOKEN, else the saved login).",
)
@click.option("--cache-dir", default=None, help="hf:// only: the Hub cache folder.")
def add(
    app: App,
    files: tuple[str, ...],
    name: str | None,
    arch: str | None,
    config_json: str | None,
    dataset: str | None,
    input_shape: str | None,
    key: str | None,
    tags: tuple[str, ...],
    kind: str,
    sha256: str | None,
    trust_remote_code: bool,
    token: str | None,
    cache_dir: str | None,
) -> None:
    """Add a checkpoint (.safetensors, or .pt/.pth/.ckpt read as weights only) to the zoo,
    or the model of a Hub repository, hf://ORG/REPO[@REVISION][/FILE], or of a folder a
    library saved it in (config.json and safetensors weights).

    A checkpoint dict ({'model': ..., 'epoch': ...}, Lightning's {'state_dict': ...}) is
    read under its usual key, or --key; prefixes such as DataParallel's 'module.' are
    stripped when the architecture's names then match. A module:function architecture is
    imported from the Python path or the current folder. From the Hub or a model folder
    (save_pretrained's, a downloaded snapshot), config.json names the architecture
    (transformers or timm) and the safetensors weights are checked against it; the Hub's
    repository, commit and sha256s are recorded as hf.* tags.

    Several checkpoint files add as one (all of them or none), each named after its file,
    or after its folder where the files' names repeat (runs/seed0/model.pt: seed0).
    """
    from canon.hub import is_hub_url

    hub_only = {"--sha256": sha256, "--cache-dir": cache_dir}
    if len(files) > 1:
        _check_several(files, name, {**hub_only, "--trust-remote-code": trust_remote_code or None})
        config = parse_json(config_json) if config_json is not None else None
        shape = _parse_shape(input_shape) if input_shape is not None else None
        with open_zoo(app) as zoo, _notes_to(app), progress(app, "checkpoints") as bar:
            entries = zoo.add_files(
                files, architecture=arch, config=config, dataset=dataset,
                tags=parse_tags(tags), kind=kind, device=app.device, input_shape=shape,
                key=key, progress=bar,
            )  # fmt: skip
        _no_errors_note(app, entries, dataset)
        emit(
            app,
            {"entries": [e.to_dict() for e in entries]},
            lambda: "\n".join(f"added {entry_summary(e)}" for e in entries),
        )
        return
    (file,) = files

    from_config = {
        "--arch": arch,
        "--config": config_json,
        "--input-shape": input_shape,
        "--key": key,
    }
    folder = not is_hub_url(file) and Path(file).is_dir()
    if is_hub_url(file) or folder:
        what = "hf:// models" if not folder else "model folders"
        given = [flag for flag, value in from_config.items() if value is not None]
        if given:
            raise ConfigError(
                f"`{given[0]}` does not apply to {what}: their config.json names the "
                "architecture and its config"
            )
    if folder:
        given = [flag for flag, value in hub_only.items() if value is not None]
        if given:
            raise ConfigError(f"`{given[0]}` applies to hf:// models only")
        from canon.hub import add_from_folder

        with open_zoo(app) as zoo, _notes_to(app):
            entry = add_from_folder(
                zoo, file, name=name, dataset=dataset, tags=parse_tags(tags), kind=kind,
                device=app.device, trust_remote_code=trust_remote_code,
            )  # fmt: skip
        _added(app, entry, dataset)
        return
    if is_hub_url(file):
        from canon.hub import add_from_hub  # the Hub client loads only when it is used

        with open_zoo(app) as zoo, _notes_to(app):
            entry = add_from_hub(
                zoo, file, name=name, dataset=dataset, tags=parse_tags(tags), kind=kind,
                token=token, device=app.device, sha256=sha256,
                trust_remote_code=trust_remote_code, cache_dir=cache_dir,
            )  # fmt: skip
        _added(app, entry, dataset)
        return
    given = [flag for flag, value in hub_only.items() if value is not None]
    if given:
        raise ConfigError(f"`{given[0]}` applies to hf:// models only")
    if trust_remote_code:
        raise ConfigError("`--trust-remote-code` applies to hf:// models and model folders only")
    if name is None:
        raise click.UsageError("Missing option '--name': give the entry a unique name")
    config = parse_json(config_json) if config_json is not None else None
    shape = _parse_shape(input_shape) if input_shape is not None else None
    tag_values = parse_tags(tags)
    with open_zoo(app) as zoo, _notes_to(app):
        entry = zoo.add(
            file,
            name=name,
            architecture=arch,
            config=config,
            dataset=dataset,
            tags=tag_values,
            kind=kind,
            device=app.device,
            input_shape=shape,
            key=key,
        )
    _added(app, entry, dataset)


def _check_several(files: tuple[str, ...], name: str | None, hub_only: dict[str, object]) -> None:
    """Refuse what ``canon add FILE FILE ...`` cannot take: --name, a Hub-only flag, a Hub
    address or a folder among the files."""
    from canon.hub import is_hub_url

    if name is not None:
        raise ConfigError(
            "`--name` names one entry; several files are named after themselves (or their "
            "folders): add a file at a time to name it"
        )
    given = [flag for flag, value in hub_only.items() if value is not None]
    if given:
        raise ConfigError(f"`{given[0]}` applies to one hf:// model or model folder at a time")
    odd = next((f for f in files if is_hub_url(f) or Path(f).is_dir()), None)
    if odd is not None:
        raise ConfigError(
            f"`{clip(odd, 120)}` is a Hub address or a folder, which add one at a time; "
            "several at once are checkpoint files"
        )


def _added(app: App, entry: Entry, dataset: str | None) -> None:
    """Say what ``add`` added (and that no errors were computed when the dataset is absent)."""
    _no_errors_note(app, [entry], dataset)
    emit(app, {"entry": entry.to_dict()}, lambda: f"added {entry_summary(entry)}")


def _no_errors_note(app: App, entries: list[Entry], dataset: str | None) -> None:
    """Say so where a ``dataset`` was named and no errors were computed on it (not here)."""
    if dataset is not None and any("train_error" not in e.metrics for e in entries):
        app.log(f"note: dataset `{dataset}` cannot be loaded here; no errors computed")


def _parse_shape(text: str) -> list[int]:
    """``--input-shape`` typed as 3,32,32, 3x32x32, (3, 32, 32) or JSON [3, 32, 32]: a list of
    integers (the zoo checks their bounds)."""
    raw = text.strip()
    value: object = None
    if len(raw) <= 200:
        if raw.startswith("["):
            with contextlib.suppress(ValueError):
                value = json.loads(raw)
        else:
            parts = re.split(r"[\s,x]+", raw.strip("()").strip())
            if all(p.isascii() and p.isdigit() for p in parts):
                value = [int(p) for p in parts]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(
            "`--input-shape` must be the shape of one input sample without the batch axis, "
            f"integers such as 3,32,32 or [3, 32, 32]; got {clip(repr(text), 80)}"
        )
    return value


class _AppHandler(logging.Handler):
    """Log records as the command's log lines (stderr, silent with --quiet)."""

    def __init__(self, app: App) -> None:
        super().__init__(logging.INFO)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        self.app.log(clip(record.getMessage(), 400))


@contextmanager
def _notes_to(app: App) -> Iterator[None]:
    """Show what reading the checkpoint noted (the key and prefix used, an inferred input
    shape) as log lines while the block runs."""
    logger = logging.getLogger("canon.zoo")
    handler = _AppHandler(app)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@command("list")
@tag_option
@click.option("--arch", default=None, help="Only this architecture.")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--kind", type=KIND_CHOICE, default=None, help="Only this kind.")
def list_entries(
    app: App, tags: tuple[str, ...], arch: str | None, dataset: str | None, kind: str | None
) -> None:
    """List the entries (optionally filtered), one per line."""
    entries = read_entries(
        app, architecture=arch, dataset=dataset, kind=kind, tags=parse_tags(tags)
    )

    def table() -> str:
        if not entries:
            return "no entries"
        rows = [
            tuple(
                clip(cell, 60)  # stored text is echoed escaped: no terminal control from data
                for cell in (
                    e.name,
                    e.kind,
                    e.architecture,
                    e.dataset or "-",
                    ",".join(f"{k}={v}" for k, v in e.tags.items()) or "-",
                    pct(e.metrics.get("train_error")),
                    pct(e.metrics.get("test_error")),
                    e.id[:12],
                )
            )
            for e in entries
        ]
        head = ("name", "kind", "architecture", "dataset", "tags", "train", "test", "id")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        header = "  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))
        return "\n".join(
            [header.rstrip(), "-" * len(header.rstrip()), *(x.rstrip() for x in lines)]
        )

    emit(app, {"entries": [e.to_dict() for e in entries]}, table)


@command()
@click.argument("name")
def show(app: App, name: str) -> None:
    """Show everything recorded about an entry."""
    from canon.zoo import entry_details

    details = entry_details(index_path(app), name)  # straight from the index: no torch
    if details is not None:
        entry, parents, ref = details.entry, details.parent_names, details.reference
    else:  # not found (the zoo's error suggests close names) or not readable that way
        with open_zoo(app) as zoo:
            entry = zoo.get(name)
            parents = [zoo.get(p).name for p in entry.parents]
            ref = zoo.reference(entry).name
    data = {**entry.to_dict(), "parent_names": parents, "reference": ref}

    def text() -> str:
        lines = [
            f"name:         {entry.name}",
            f"id:           {entry.id}",
            f"kind:         {entry.kind}",
            f"architecture: {entry.architecture} {dict(entry.config)}",
            f"family:       {entry.family[:12]} (reference `{ref}`)",
            f"dataset:      {entry.dataset or '-'}",
            f"tags:         {', '.join(f'{k}={v}' for k, v in entry.tags.items()) or '-'}",
            f"parents:      {', '.join(parents) or '-'}",
            f"created:      {entry.created.isoformat() if entry.created else '-'}",
        ]
        lines += [f"metric {k}: {v}" for k, v in entry.metrics.items()]
        return "\n".join(clip(line, 400) for line in lines)

    emit(app, data, text)


@command()
@click.argument("name")
@click.option("--name", "new_name", default=None, help="A new name for the entry.")
@click.option("--dataset", default=None, help="The dataset it was trained on.")
@tag_option
@click.option("--untag", multiple=True, metavar="KEY", help="Remove a tag (repeatable).")
def edit(
    app: App,
    name: str,
    new_name: str | None,
    dataset: str | None,
    tags: tuple[str, ...],
    untag: tuple[str, ...],
) -> None:
    """Rename an entry, name its dataset, set or remove tags.

    Its weights (and id) never change. A new dataset drops the entry's cached
    comparisons, which were computed on the old data, and measures its train and
    test errors on the new data (dropping them when that data is not here).
    """
    if new_name is None and dataset is None and not tags and not untag:
        raise click.UsageError("nothing to change: give --name, --dataset, --tag or --untag")
    with open_zoo(app) as zoo:
        entry = zoo.edit(
            name,
            rename=new_name,
            dataset=dataset,
            tags=parse_tags(tags),
            untag=untag,
            device=app.device,
        )
    emit(app, entry.to_dict(), lambda: entry_summary(entry))


@command()
@click.argument("name")
def rm(app: App, name: str) -> None:
    """Remove an entry and its object."""
    with open_zoo(app) as zoo:
        entry = zoo.get(name)
        zoo.rm(entry)
    emit(app, {"removed": entry.name, "id": entry.id}, lambda: f"removed `{entry.name}`")


@command()
@click.option(
    "--repair",
    is_flag=True,
    help="Index the objects no entry references (as recovered-<id>, or under their "
    "manifest.json entry), delete temp files of interrupted writes; rebuild a missing index "
    "without the bad entries. Never deletes an object.",
)
def verify(app: App, repair: bool) -> None:
    """Check that every entry's object is present and intact; report what no entry holds.

    Exits 1 when an object is missing or damaged (or, for a zoo without an
    index, when a manifest entry cannot be indexed). Objects no entry
    references (an add killed before it finished, an index rebuilt from an
    older manifest) and temp files are reported, not failures; --repair
    indexes those objects as entries and deletes the temp files. It never
    deletes an object.
    """
    from canon.zoo import Zoo

    report = Zoo.check(zoo_path(app), repair=repair, trust_code=app.trust_code)
    problems = {
        "bad hashes": report.bad_hashes,
        "missing objects": report.missing_objects,
        "skipped entries": report.skipped_entries,
    }
    found = {
        "orphan objects": report.orphan_objects,
        "orphan temp files": tuple(str(p) for p in report.orphan_temp_files),
        "unindexed objects": report.unindexed_objects,
    }
    data: dict[str, object] = {
        "ok": report.ok,
        "checked": report.checked,
        "rebuilt": report.rebuilt,
        "repaired": list(report.repaired),
        "recovered": list(report.recovered),
        "kept_objects": list(report.kept_objects),
    }
    data.update({k.replace(" ", "_"): list(v) for k, v in {**problems, **found}.items()})

    def summary(parts: dict[str, tuple[str, ...]]) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in parts.items() if v)

    if not report.ok:
        if app.json:
            emit(app, data, str)
        if report.skipped_entries:
            raise click.ClickException(
                f"{len(report.skipped_entries)} manifest entries cannot be indexed (`canon verify "
                f"--repair` indexes the rest; nothing was changed); first: "
                f"{report.skipped_entries[0]}"
            )
        raise click.ClickException(f"zoo is not consistent: {summary(problems)}")

    def text() -> str:
        lines = [f"ok: {report.checked} objects checked"]
        if report.rebuilt:
            lines.append(f"index rebuilt from manifest.json; {len(report.skipped_entries)} skipped")
            lines += [f"  skipped {s}" for s in report.skipped_entries]
        if any(found.values()):
            lines.append(
                f"not in the index: {summary(found)}"
                + (
                    ""
                    if repair
                    else "; `canon verify --repair` indexes the objects and deletes the temp files"
                )
            )
        if report.recovered:
            lines.append(f"indexed {len(report.recovered)} objects as entries:")
            lines += [f"  {name}" for name in report.recovered]
            if any(n.startswith("recovered-") for n in report.recovered):
                lines.append(
                    "  (`canon edit NAME --name NEW --dataset D --tag K=V` gives a recovered "
                    "entry back its name, dataset and tags)"
                )
        if report.kept_objects:
            lines.append(f"kept {len(report.kept_objects)} objects that cannot be indexed:")
            lines += [f"  {k}" for k in report.kept_objects]
        if report.repaired:
            lines.append(f"deleted {len(report.repaired)} temp files")
        return "\n".join(lines)

    emit(app, data, text)


@click.group()
def reference() -> None:
    """Show or set the reference entry of a family."""


def _show_reference(app: App, name: str, setting: bool) -> None:
    with open_zoo(app) as zoo:
        entry = zoo.set_reference(name) if setting else zoo.reference(zoo.get(name))
    verb = "is now" if setting else "is"
    emit(
        app,
        {"family": entry.family, "reference": entry.name},
        lambda: f"`{entry.name}` {verb} the reference of family {entry.family[:12]}",
    )


@command("show", group=reference)
@click.argument("name")
def reference_show(app: App, name: str) -> None:
    """The reference entry of NAME's family."""
    _show_reference(app, name, setting=False)


@command("set", group=reference)
@click.argument("name")
def reference_set(app: App, name: str) -> None:
    """Make NAME the reference of its family (drops the caches tied to the old one)."""
    _show_reference(app, name, setting=True)
