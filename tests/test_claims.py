"""Claim checks can come out either way: holds, does not hold, inconclusive (synthetic inputs)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from canon.repro._stats import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Evidence,
    combine,
    correlation,
    difference,
    mean_above,
    paired,
    spearman,
)

LOW = [0.010, 0.012, 0.011, 0.009, 0.010]
HIGH = [0.030, 0.032, 0.029, 0.031, 0.030]


def test_an_order_check_gives_each_verdict():
    """A clear order holds, the reverse does not hold, overlapping or tiny samples are
    inconclusive, and a clear difference within the tie tolerance is inconclusive too."""
    assert difference("d", LOW, HIGH).verdict == HOLDS
    assert difference("d", HIGH, LOW).verdict == FAILS
    assert difference("d", [0.01, 0.03, 0.02], [0.02, 0.01, 0.03]).verdict == INCONCLUSIVE
    assert difference("d", [0.01], [0.03]).verdict == INCONCLUSIVE
    assert difference("d", LOW, HIGH, tolerance=0.05).verdict == INCONCLUSIVE


def test_threshold_paired_and_correlation_checks_give_each_verdict():
    """Near-zero means, paired gains and Spearman correlations each hold, fail or stay open."""
    assert mean_above("m", [0.0, 0.001, 0.0, 0.002], 0.01).verdict == HOLDS
    assert mean_above("m", [0.05, 0.06, 0.04, 0.05], 0.01).verdict == FAILS
    assert mean_above("m", [0.0, 0.02, 0.0, 0.03], 0.01).verdict == INCONCLUSIVE
    assert paired("p", [0.1, 0.2, 0.15, 0.12]).verdict == HOLDS
    assert paired("p", [-0.1, -0.2, -0.15, -0.12]).verdict == FAILS
    assert paired("p", [0.1, -0.2, 0.15, -0.12]).verdict == INCONCLUSIVE
    x = list(range(12))
    assert correlation("c", x, [v + 0.1 * (v % 3) for v in x]).verdict == HOLDS
    assert correlation("c", x, [-v for v in x]).verdict == FAILS
    assert correlation("c", x, [1, 0] * 6).verdict == INCONCLUSIVE
    assert correlation("c", x, [1.0] * 12).verdict == INCONCLUSIVE  # constant: no correlation


def test_a_claim_combines_its_checks():
    """All checks hold: holds; any fails: does not hold; else inconclusive."""
    good = Evidence("g", 1.0, 0.5, 1.5)
    bad = Evidence("b", -1.0, -1.5, -0.5)
    open_ = Evidence("o", 0.1, -0.5, 0.7)
    assert combine([good, good]) == HOLDS
    assert combine([good, bad]) == FAILS and combine([open_, bad]) == FAILS
    assert combine([good, open_]) == INCONCLUSIVE and combine([]) == INCONCLUSIVE
    assert Evidence("n", math.nan, math.nan, math.nan).verdict == INCONCLUSIVE


def test_bootstrap_is_seeded():
    """The same inputs and seed give the same interval."""
    one = difference("d", LOW, HIGH, seed=3)
    assert one == difference("d", LOW, HIGH, seed=3)


# multiples of 2^-10 in [0, 1]: shifting them by another such multiple is exact in floats,
# so the shift-invariance below is about the check, not about rounding (1 + 1e-308 == 1)
_dyadic = st.integers(-1024, 1024).map(lambda k: k / 1024)
samples = st.lists(_dyadic.map(abs), min_size=2, max_size=8)


@settings(max_examples=25, deadline=None)
@given(samples, samples, _dyadic)
def test_order_verdict_is_antisymmetric_and_shift_invariant(lower, higher, shift):
    """Swapping the two classes swaps holds and does not hold; adding one constant to every
    value changes nothing (the check reads differences only)."""
    forward = difference("d", lower, higher).verdict
    backward = difference("d", higher, lower).verdict
    swap = {HOLDS: FAILS, FAILS: HOLDS, INCONCLUSIVE: INCONCLUSIVE}
    assert backward == swap[forward]
    moved = difference("d", [v + shift for v in lower], [v + shift for v in higher])
    assert moved.verdict == forward


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=3, max_size=10, unique=True))
def test_spearman_reads_ranks_only(x):
    """Spearman's correlation is 1 against any increasing transform and -1 against a
    decreasing one."""
    assert math.isclose(spearman(x, [v**3 + 2 * v for v in x]), 1.0)
    assert math.isclose(spearman(x, [-(2.0**v) for v in x]), -1.0)
