"""Threads taking turns at running Python (canon.core.host_work)."""

from __future__ import annotations

import threading

import pytest

from canon.core.host_work import Baton, outside_python


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
