"""Build canon's embedded default zoo: MLP solutions on digits from sgd, rsgd and adv.

Nine networks (MLP 64-256-256-10; three algorithms x three seeds, distinct
across algorithms so that no two networks share an initialization), trained
with ``canon.train``'s defaults on scikit-learn's bundled digits, stored in
this folder as objects plus ``manifest.json``. The SQLite index is not kept in
the repository: ``canon`` rebuilds it from the manifest on first open.

    python zoo/build.py            # from the repository root; rewrites zoo/
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from canon.data import load_dataset
from canon.engine import train
from canon.zoo import Zoo

HERE = Path(__file__).resolve().parent
NET = ("mlp", {"in_features": 64, "hidden": [256, 256], "classes": 10})
SEEDS = {"sgd": (0, 1, 2), "rsgd": (10, 11, 12), "adv": (20, 21, 22)}


def main() -> None:
    for generated in (
        "objects",
        "manifest.json",
        "canon.sqlite",
        "canon.sqlite-wal",
        "canon.sqlite-shm",
    ):
        path = HERE / generated
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    digits = load_dataset("digits")
    zoo = Zoo.open(HERE)
    for algo, seeds in SEEDS.items():
        for i, seed in enumerate(seeds):
            result = train(NET, digits, algo, seed=seed)
            entry = zoo.add(
                result.state,
                name=f"{algo}-{i}",
                architecture=NET[0],
                config=NET[1],
                dataset="digits",
                tags={"algo": algo, "seed": str(seed)},
                metrics={
                    "train_error": result.train_error,
                    "test_error": result.test_error,
                    "epochs": result.epochs,
                },
            )
            print(f"{entry.name}: train {result.train_error:.2%} test {result.test_error:.2%}")
    zoo.write_manifest()
    zoo.close()
    for generated in ("canon.sqlite", "canon.sqlite-wal", "canon.sqlite-shm"):
        (HERE / generated).unlink(missing_ok=True)
    count = sum(len(s) for s in SEEDS.values())
    print(f"wrote {count} entries and manifest.json to {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
