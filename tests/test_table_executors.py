"""Tables computed in this process and as tasks on a local Ray cluster: the same results,
written by the driver alone, every finished pair kept when a table fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from zoos import copy_zoo, random_zoo

from canon.architectures import build_model
from canon.cli import cli
from canon.device import KEEP_BYTES
from canon.errors import ConfigError, CorruptZooError
from canon.zoo import Zoo

NET = ("mlp", {"in_features": 64, "hidden": [10], "classes": 10})


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A zoo of 6 random MLPs on digits (not evaluated when added), built once."""
    return random_zoo(tmp_path_factory.mktemp("executors") / "template", NET, 6)


def _cached(zoo: Zoo) -> dict[tuple[str, str, str], str]:
    """Every cached pair result as the index holds it (canonical JSON)."""
    import sqlite3

    with sqlite3.connect(zoo.root / "canon.sqlite") as db:
        rows = db.execute("SELECT entry_a, entry_b, path_kind, result FROM pair_cache").fetchall()
    return {(a, b, kind): result for a, b, kind, result in rows}


@pytest.fixture(params=[False, True], ids=["serial", "overlapped"])
def overlap(request, monkeypatch):
    """Tables computed as on a CPU, or as on a GPU: each group of pairs prepared in a
    thread while the group before it is evaluated."""
    from canon.engine import landscape
    from canon.zoo import _pair_work

    monkeypatch.setitem(_pair_work.OVERLAP, "cpu", request.param)
    monkeypatch.setattr(landscape, "MAX_PAIRS_PER_CALL", 2)  # several groups
    return request.param


@pytest.mark.parametrize("align", ["pair", "reference"])
def test_overlapped_preparation_gives_the_serial_table(template, tmp_path, monkeypatch, align):
    """Groups of pairs prepared one ahead, in a thread, beside the evaluation of the group
    before (as on a GPU) give every number of the table computed one group at a time."""
    from canon.engine import landscape
    from canon.zoo import _pair_work

    monkeypatch.setattr(landscape, "MAX_PAIRS_PER_CALL", 2)  # 8 groups, 7 prepared ahead
    results = []
    for overlapped in (False, True):
        monkeypatch.setitem(_pair_work.OVERLAP, "cpu", overlapped)
        zoo = copy_zoo(template, tmp_path / f"zoo{overlapped}")
        assert zoo.barrier_table(points=5, device="cpu", align=align).computed == 15
        results.append(_cached(zoo))
        zoo.close()
    assert len(results[0]) == 15 and results[0] == results[1]  # every stored curve


class _CountedReads:
    """A zoo as a pair source, counting the reads of each entry's weights."""

    def __init__(self, zoo: Zoo) -> None:
        self.zoo, self.reads = zoo, Counter()

    def __getattr__(self, name):
        return getattr(self.zoo, name)

    def state(self, entry, device="cpu"):
        self.reads[entry.id] += 1
        return self.zoo.state(entry, device)


def test_a_table_reads_each_entry_once_while_its_weights_are_kept(template, tmp_path, monkeypatch):
    """A table keeps the small networks' weights it read last: with room for all, each
    entry is read once for its 5 pairs; with room for one, none is kept; the
    results are the same."""
    from canon.zoo import _pair_work

    zoo = copy_zoo(template, tmp_path / "zoo")
    entries = zoo.entries()
    method = zoo.matching_method(entries[0])
    tasks = [
        _pair_work.PairTask(a, b, _pair_work.pair_key(a, b, "geodesic", 3, method))
        for i, a in enumerate(entries)
        for b in entries[i + 1 :]
    ]
    results = []
    for room in (16 * 6, 1):  # a network kept may take a sixteenth
        monkeypatch.setitem(KEEP_BYTES, "cpu", room * _bytes(zoo.state(entries[0])))
        source = _CountedReads(zoo)
        cpu = torch.device("cpu")
        shared = _pair_work.SharedTemplates(source)
        results.append([r for _, r in _pair_work.compute_pairs(shared, tasks, cpu)])
        reads = sorted(source.reads.values())
        assert reads == [1] * 6 if room > 1 else sum(reads) == 2 * 15
    assert results[0] == results[1] and len(results[0]) == 15
    zoo.close()


def _bytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class _Stop(Exception):
    """What the progress callback raises to stop a table (as Ctrl-C would)."""


def test_a_table_stopped_while_pairs_are_prepared_ahead_keeps_its_pairs(
    template, tmp_path, overlap
):
    """A table stopped from its progress callback while the next group of pairs is being
    prepared keeps every pair it finished, leaves no thread behind, and the rerun
    computes only the rest."""
    zoo = copy_zoo(template, tmp_path / "zoo")
    before = threading.active_count()

    def stop_after_four(done: int, total: int) -> None:
        if done >= 4:
            raise _Stop

    with pytest.raises(_Stop):
        zoo.barrier_table(points=3, device="cpu", progress=stop_after_four)
    assert threading.active_count() == before
    kept = _cached(zoo)
    assert 4 <= len(kept) < 15
    table = zoo.barrier_table(points=3, device="cpu")
    assert table.computed == 15 - len(kept) and not np.isnan(table.matrix).any()
    zoo.close()


def test_a_failed_table_keeps_every_pair_it_finished(template, tmp_path, overlap):
    """A pair that cannot be computed (its object is gone) stops the table; the pairs
    finished before it stay cached, and the rerun computes only the others (also with
    groups prepared one ahead)."""
    zoo = copy_zoo(template, tmp_path / "zoo")
    entries = zoo.entries()
    bad = entries[-1]  # in table order the pairs (0, 1) .. (0, 4) come before (0, 5)
    moved = tmp_path / "object"
    shutil.move(zoo.objects.path(bad.id), moved)
    with pytest.raises(CorruptZooError, match="missing"):
        zoo.barrier_table(points=3, device="cpu")
    kept = _cached(zoo)
    assert len(kept) == zoo.pair_computations == 4
    assert all(bad.id not in (a, b) for a, b, _ in kept)
    shutil.move(moved, zoo.objects.path(bad.id))
    table = zoo.barrier_table(points=3, device="cpu")
    assert table.computed == 11 and not np.isnan(table.matrix).any()
    assert {k: v for k, v in _cached(zoo).items() if k in kept} == kept
    zoo.close()


def test_unknown_executor_and_stray_address_are_refused(template, tmp_path):
    zoo = copy_zoo(template, tmp_path / "zoo")
    with pytest.raises(ConfigError, match="unknown executor `spark`"):
        zoo.barrier_table(points=3, device="cpu", executor="spark")
    with pytest.raises(ConfigError, match="`address` is for the `ray` executor"):
        zoo.barrier_table(points=3, device="cpu", address="ray://nowhere:10001")
    assert _cached(zoo) == {}
    zoo.barrier_table(points=3, device="cpu")
    with pytest.raises(ConfigError, match="unknown executor"):  # also when all is cached
        zoo.barrier_table(points=3, device="cpu", executor="spark")
    result = CliRunner().invoke(
        cli, ["table", "--zoo", str(zoo.root), "--address", "ray://nowhere:10001"]
    )
    assert result.exit_code == 2 and "--address is for --executor ray" in result.output
    zoo.close()


# -- Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("metric", "align"), [("barrier", "pair"), ("geodesic", "pair"), ("barrier", "reference")]
)
def test_ray_table_equals_the_in_process_table(template, tmp_path, ray_cluster, metric, align):
    """Barriers and distances through Ray are the in-process ones, number for number, and
    the driver cached them under the same keys; the rerun computes nothing. Pairs aligned
    through the family reference get each entry's alignment to it from the driver."""
    local = copy_zoo(template, tmp_path / "local")
    distributed = copy_zoo(template, tmp_path / "ray")
    expected = local.barrier_table(metric=metric, points=5, device="cpu", align=align)
    seen: list[tuple[int, int]] = []
    table = distributed.barrier_table(
        metric=metric, points=5, device="cpu", executor="ray", align=align,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert table.computed == 15 and np.array_equal(table.matrix, expected.matrix)
    assert _cached(distributed) == _cached(local)
    assert seen[0] == (1, 15) and seen[-1] == (15, 15)
    again = distributed.barrier_table(metric=metric, points=5, executor="ray", align=align)
    assert again.computed == 0
    local.close()
    distributed.close()


@pytest.mark.slow
def test_ray_with_an_address_sends_objects(template, tmp_path, ray_cluster):
    """Given a cluster address, workers get each object through Ray's object store: the
    table is computed even though no worker could read the zoo's folder by the path."""
    zoo = copy_zoo(template, tmp_path / "zoo")
    local = copy_zoo(template, tmp_path / "local")
    address = ray_cluster.get_runtime_context().gcs_address
    table = zoo.barrier_table(points=3, device="cpu", executor="ray", address=address)
    assert np.array_equal(table.matrix, local.barrier_table(points=3, device="cpu").matrix)
    zoo.close()
    local.close()


@pytest.mark.slow
def test_ray_retries_a_lost_worker(template, tmp_path, ray_cluster):
    """A worker killed while it computes a block: Ray runs the block again, and the table
    is the in-process one."""
    zoo = copy_zoo(template, tmp_path / "zoo")
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_worker() -> None:
        while not stop.is_set() and not killed:
            ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True)
            for line in ps.stdout.splitlines():
                pid, _, args = line.strip().partition(" ")
                if args.startswith("ray::_ray_block"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    break
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_first_worker)
    watcher.start()
    try:
        table = zoo.barrier_table(points=9, device="cpu", executor="ray")
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was seen computing"
    local = copy_zoo(template, tmp_path / "local")
    assert np.array_equal(table.matrix, local.barrier_table(points=9, device="cpu").matrix)
    zoo.close()
    local.close()


@pytest.mark.slow
def test_cli_table_on_ray(template, tmp_path, ray_cluster):
    zoo = copy_zoo(template, tmp_path / "zoo")
    zoo.close()
    result = CliRunner().invoke(
        cli,
        ["table", "--zoo", str(zoo.root), "--json", "--metric", "geodesic", "--executor", "ray"],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["computed"] == 15 and len(answer["matrix"]) == 6


@pytest.mark.slow
def test_ctrl_c_cancels_a_ray_table_and_keeps_what_was_written(tmp_path):
    """Ctrl-C during `canon table --executor ray`: the command stops, the blocks still
    running are cancelled (nothing is written after it ends), every cached result is
    whole, and a table finds exactly those."""
    import sqlite3
    import sys

    net = ("mlp", {"in_features": 64, "hidden": [64, 64], "classes": 10})
    root = tmp_path / "zoo"
    with Zoo.open(root) as z:
        for i in range(12):  # 66 pairs: 8 blocks of 9, two at a time, seconds each
            torch.manual_seed(i)
            z.add(build_model(*net).state_dict(), name=f"n{i}", architecture=net[0],
                  config=net[1], dataset="digits", evaluate=False)  # fmt: skip

    def cached() -> list[str]:
        with sqlite3.connect(root / "canon.sqlite") as db:
            return [r for (r,) in db.execute("SELECT result FROM pair_cache")]

    command = [sys.executable, "-m", "canon", "table", "--zoo", str(root), "--executor", "ray",
               "--device", "cpu", "--progress", "none", "--points", "101"]  # fmt: skip
    # SIGINT as a terminal delivers it: a shell that started this run in the background
    # left SIGINT ignored, and ignored signals stay ignored in children unless restored
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not cached() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "Aborted!" in stderr, stderr
    kept = cached()
    assert 0 < len(kept) < 66, len(kept)
    assert all("barrier" in json.loads(r) for r in kept)
    time.sleep(0.5)
    assert len(cached()) == len(kept)  # no block wrote anything after the driver stopped
    with Zoo.open(root) as z:  # the table reads the kept pairs; the others are to compute
        table = z.barrier_table(points=101, device="cpu", compute=False)
        assert np.isnan(table.matrix).sum() == 2 * (66 - len(kept))
