"""Networks' normal forms made once for every pair they are in (canon.engine.normal_forms)."""

from __future__ import annotations

import copy
import itertools
import threading

import pytest
import torch
from nets import randomize, state_of

import canon.engine.normal_forms as normal_forms
from canon.architectures import build_model
from canon.core import normalize_with_scales, spec_from_module
from canon.device import KEEP_BYTES
from canon.engine import PathOptions, path_curve, prepare_curves
from canon.engine.normal_forms import NormalForms

CPU = torch.device("cpu")
MLP = {"in_features": 6, "hidden": [8, 7], "classes": 3}


def _nets(count: int, config=MLP):
    model = randomize(build_model("mlp", config), 0, bn_eps=None)
    states = [state_of(randomize(copy.deepcopy(model), s, bn_eps=None)) for s in range(count)]
    return model, spec_from_module(model), states


def _counting(monkeypatch) -> list[int]:
    """Count the normal forms made (calls of the normalization they run)."""
    made = [0]
    plain = normal_forms.normalize_with_scales

    def counted(*args, **kwargs):
        made[0] += 1
        return plain(*args, **kwargs)

    monkeypatch.setattr(normal_forms, "normalize_with_scales", counted)
    return made


def test_a_form_is_the_networks_working_copy_normalized():
    """A form holds the state in the working dtype and its normalization, exactly."""
    _, spec, (state,) = _nets(1)
    form = NormalForms().of(state, spec, CPU, torch.float32)
    assert all(t.dtype == torch.float32 for t in form.state.values())
    normalized, scales = normalize_with_scales(form.state, spec)
    assert form.normalized.keys() == normalized.keys()
    assert all(torch.equal(form.normalized[k], normalized[k]) for k in normalized)
    assert form.scales.output == scales.output
    assert all(torch.equal(form.scales.groups[g], s) for g, s in scales.groups.items())


def test_the_same_tensors_are_normalized_once_and_equal_values_are_not_taken_for_them(
    monkeypatch,
):
    """Asked again for the very tensors (in a new dict, as a table's cache hands them out),
    the form is the one made before; a copy with equal values is another network."""
    made = _counting(monkeypatch)
    _, spec, (state,) = _nets(1)
    forms = NormalForms()
    first = forms.of(state, spec, CPU, torch.float64)
    assert forms.of(dict(state), spec, CPU, torch.float64) is first
    assert made[0] == 1
    other = forms.of({k: v.clone() for k, v in state.items()}, spec, CPU, torch.float64)
    assert other is not first and made[0] == 2
    assert forms.of(state, spec, CPU, torch.float32) is not first  # another dtype
    assert made[0] == 3


def test_the_least_recently_used_forms_go_beyond_the_budget_and_big_networks_are_not_kept(
    monkeypatch,
):
    """The budget keeps the forms asked for last; a network over a sixteenth of it is
    normalized every time it is asked for, and nothing of it is kept."""
    made = _counting(monkeypatch)
    _, spec, states = _nets(10)
    size = sum(t.numel() * t.element_size() for t in states[0].values())
    # each network just small enough to keep; a form holds its state and its normalized
    # copy: the budget keeps eight
    forms = NormalForms(budget=16 * size)
    kept = [forms.of(s, spec, CPU, torch.float64) for s in states]
    assert len(forms._held) == 8 and forms._bytes == 16 * size and made[0] == 10
    assert [forms.of(s, spec, CPU, torch.float64) for s in states[2:]] == kept[2:]
    assert made[0] == 10
    assert forms.of(states[0], spec, CPU, torch.float64) is not kept[0]  # dropped: made again
    assert made[0] == 11 and len(forms._held) == 8
    assert forms.of(states[3], spec, CPU, torch.float64) is kept[3]  # states[2] went instead
    big = NormalForms(budget=16 * size - 1)
    made[0] = 0
    assert big.of(states[0], spec, CPU, torch.float64) is not big.of(
        states[0], spec, CPU, torch.float64
    )
    assert made[0] == 2 and not big._held and big._bytes == 0
    # without a budget of its own: the device's (canon.device.KEEP_BYTES)
    for room, kept_there in ((16 * size - 1, 0), (16 * size, 1)):
        monkeypatch.setitem(KEEP_BYTES, "cpu", room)
        default = NormalForms()
        default.of(states[0], spec, CPU, torch.float64)
        assert len(default._held) == kept_there


def test_threads_asking_at_once_share_one_form(monkeypatch):
    """Threads asking for one network at once get one form, made by one of them."""
    made = _counting(monkeypatch)
    _, spec, (state,) = _nets(1)
    forms = NormalForms()
    start = threading.Barrier(8)
    got = []

    def ask() -> None:
        start.wait()
        got.append(forms.of(state, spec, CPU, torch.float64))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert made[0] == 1


def test_a_failed_form_is_not_kept():
    """A network normalization refuses (a tensor missing) raises each time it is asked
    for; nothing is kept of it."""
    _, spec, (state,) = _nets(1)
    broken = {k: v for k, v in state.items() if k != "fc2.weight"}
    forms = NormalForms()
    for _ in range(2):
        with pytest.raises(KeyError):
            forms.of(broken, spec, CPU, torch.float64)
    assert not forms._held and forms._bytes == 0


@pytest.mark.parametrize("kind", ["linear", "linear_aligned", "geodesic"])
def test_pairs_sharing_their_networks_give_each_pairs_own_curve(kind):
    """Prepared together, pairs that share networks (their normal forms made once) give
    the curves of each pair made alone, number for number, whatever path the kind
    builds from the shared copies."""
    model, _, states = _nets(4, {**MLP, "batchnorm": True})
    pairs = [*itertools.combinations(states, 2), (states[2], states[0])]
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(200, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (200,))
    options = PathOptions(points=5, bn_batches=2, bn_batch_size=64)
    forms = NormalForms()
    together = prepare_curves(pairs, model, data, kind, "cpu", options=options, forms=forms)
    assert len(forms._held) == len(states)
    curves = together.evaluate()
    for (a, b), curve in zip(pairs, curves, strict=True):
        assert curve == path_curve(a, b, model, data, kind, device="cpu", options=options)
    again = prepare_curves(pairs, model, data, kind, "cpu", options=options, forms=forms)
    assert again.evaluate() == curves  # the kept forms, used again, unchanged
