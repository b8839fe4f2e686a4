"""The model card (``README.md``) of a zoo on the Hub."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from canon._format import pct
from canon.zoo import Entry, Zoo

__all__ = ["model_card"]

_METRICS = ("train_error", "test_error")


def model_card(zoo: Zoo, repo_id: str) -> str:
    """The zoo's model card: Hub metadata (library ``canon``, tags, datasets) and a description.

    The body lists every entry (architecture, dataset, kind, tags, errors)
    and, for each family and dataset whose geodesic barriers are all cached,
    the pairwise barrier table. It holds no timestamps, so pushing an
    unchanged zoo leaves the card unchanged.
    """
    from huggingface_hub import ModelCard, ModelCardData

    entries = zoo.entries()
    architectures = sorted({e.architecture for e in entries})
    datasets = sorted({e.dataset for e in entries if e.dataset})
    data = ModelCardData(
        library_name="canon",
        tags=["canon", "model-zoo", "loss-landscape", *architectures],
        datasets=datasets or None,
    )
    body = [
        f"# {repo_id}",
        "",
        f"A zoo of {len(entries)} trained networks kept by "
        "[canon](https://pypi.org/project/canon-zoo/): every entry is a safetensors file "
        "under `objects/`, indexed in `canon-manifest.json`; cached comparisons are in "
        "`canon-results.json`.",
        "",
        "```bash",
        f"canon pull {repo_id} --zoo ./zoo",
        "canon table --zoo ./zoo",
        "```",
        "",
        "## Entries",
        "",
        _entry_table(entries),
    ]
    for title, table in _barrier_tables(zoo, entries):
        body += ["", f"## Geodesic barriers: {title}", "", table]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    return str(card)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _entry_table(entries: Sequence[Entry]) -> str:
    head = "| name | architecture | dataset | kind | tags | train error | test error |"
    rows = [head, "|" + "---|" * 7]
    for e in entries:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(e.tags.items()))
        cells = [e.name, e.architecture, e.dataset or "-", e.kind, tags or "-"]
        cells += [pct(e.metrics.get(m)) for m in _METRICS]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _barrier_tables(zoo: Zoo, entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """Cached geodesic barrier tables, one per (family, dataset) group of two or more."""
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if e.dataset is not None:
            groups[(e.family, e.dataset)].append(e)
    tables = []
    for (_, dataset), members in sorted(groups.items(), key=lambda kv: kv[1][0].name):
        if len(members) < 2:
            continue
        table = zoo.barrier_table(members, path="geodesic", compute=False)
        values = table.matrix
        if any(math.isnan(v) for v in values.flatten().tolist()):
            continue
        head = "| | " + " | ".join(_cell(n) for n in table.names) + " |"
        rows = [head, "|" + "---|" * (len(table.names) + 1)]
        for name, row in zip(table.names, values.tolist(), strict=True):
            rows.append(f"| {_cell(name)} | " + " | ".join(pct(v) for v in row) + " |")
        tables.append((f"{members[0].architecture} on {dataset} (train error)", "\n".join(rows)))
    return tables
