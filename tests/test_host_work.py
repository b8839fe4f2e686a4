"""Threads taking turns at running Python (canon.core.host_work), and pairs prepared so."""

from __future__ import annotations

import copy
import itertools
import threading

import pytest
import torch
from nets import randomize, state_of

import canon.engine.landscape as landscape
from canon.architectures import build_model
from canon.core import spec_from_module
from canon.core.host_work import Baton, outside_python
from canon.engine import PathOptions, path_curves, prepare_curves
from canon.engine.normal_forms import NormalForms


def test_one_thread_at_a_time_holds_the_baton_but_where_it_works_outside_python():
    """Threads holding one baton never run their blocks at once; the parts they mark as
    outside Python do run at once (two threads meet at a barrier there: without the
    hand-over neither would reach it while the other held the baton)."""
    baton = Baton()
    inside, most = [0], [0]
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=10)
    met = []

    def work() -> None:
        with baton.held():
            for _ in range(200):
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with lock:
                    inside[0] -= 1
            with outside_python():
                met.append(meet.wait())
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(met) == [0, 1]
    assert most[0] == 1


def test_outside_python_without_a_baton_runs_the_block_and_batons_do_not_nest():
    ran = []
    with outside_python():
        ran.append(True)
    assert ran == [True]
    baton = Baton()
    with baton.held(), pytest.raises(RuntimeError, match="one baton"), Baton().held():
        pass
    with baton.held():  # let go after the failed attempt
        pass


def test_pairs_prepared_in_threads_by_turns_equal_pairs_prepared_at_once(monkeypatch):
    """Threads that take turns (sharing the networks' normal forms, which a thread may
    wait for while another makes them) give the curves of threads that do not and of
    one thread, number for number."""
    model = randomize(build_model("mlp", {"in_features": 6, "hidden": [8, 7], "classes": 3}), 0)
    states = [state_of(randomize(copy.deepcopy(model), s)) for s in range(1, 6)]
    pairs = list(itertools.combinations(states, 2))
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(100, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (100,))
    options = PathOptions(points=5)
    monkeypatch.setattr(landscape, "PREPARE_THREADS", 1)
    alone = path_curves(pairs, model, data, "geodesic", "cpu", options=options)
    monkeypatch.setattr(landscape, "PREPARE_THREADS", 8)
    monkeypatch.setattr(landscape.os, "cpu_count", lambda: 16)
    spec = spec_from_module(model)
    for turns in (False, True):
        monkeypatch.setitem(landscape.BATON, "cpu", turns)
        forms = NormalForms()
        prepared = prepare_curves(
            pairs, model, data, "geodesic", "cpu", options=options, spec=spec, forms=forms
        )
        assert prepared.evaluate() == alone
