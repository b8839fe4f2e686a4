"""The three-way merge of a zoo with a remote copy: each side's edits kept, conflicts found."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canon.zoo import EntryState, Merge, Snapshot, merge

IDS = [f"{i:064x}" for i in range(1, 6)]
FAMILY = "f" * 64


def _state(n: int, **changes: Any) -> EntryState:
    base = EntryState(f"net{n}", "digits", {"test_error": 0.1 * n}, {"seed": str(n), "algo": "sgd"})
    return replace(base, **changes)


def _snapshot(states: dict[str, EntryState], reference: str | None = None) -> Snapshot:
    return Snapshot(states, {FAMILY: reference or min(states)} if states else {})


def _applied(here: Snapshot, there: Snapshot, merged: Merge) -> Snapshot:
    """``here`` after a pull of ``merged`` (what the index does, written plainly)."""
    entries = dict(here.entries)
    entries.update({u.id: u.after for u in merged.updates})
    entries.update({i: there.entries[i] for i in merged.adds})
    return Snapshot(entries, {**here.references, **merged.references})


BASE = _snapshot({i: _state(n) for n, i in enumerate(IDS[:3])})


def test_each_side_keeps_its_own_edits() -> None:
    """A tag set here and a tag changed there, a rename there and a new dataset here: the
    merge takes each side's edit, with no conflict, and says only the remote's are missing."""
    a, b, c = IDS[:3]
    here = replace(
        BASE,
        entries={
            **BASE.entries,
            a: _state(0, tags={"seed": "0", "algo": "sgd", "lr": "0.1"}),
            b: _state(1, dataset="mnist", metrics={"test_error": 0.5}),
        },
    )
    there = replace(
        BASE,
        entries={
            **BASE.entries,
            a: _state(0, tags={"seed": "0", "algo": "adam"}),
            c: _state(2, name="renamed"),
        },
    )
    merged = merge(BASE, here, there)
    assert merged.conflicts == () and merged.behind
    assert {u.id: u.after for u in merged.updates} == {
        a: _state(0, tags={"seed": "0", "algo": "adam", "lr": "0.1"}),
        c: _state(2, name="renamed"),
    }
    assert merged.missing_here(here, there) == [
        "`net0`: tag `algo`",
        "`net2`: renamed `renamed`",
    ]
    back = merge(BASE, there, here)  # seen from the other side: the same result
    assert _applied(there, here, back) == _applied(here, there, merged)
    assert merge(BASE, here, here) == Merge()  # in sync: nothing to do


def test_the_same_value_changed_differently_is_a_conflict() -> None:
    """Both sides set one tag differently: listed, or settled by ``prefer``; the rest merges."""
    a, b = IDS[:2]
    here = replace(BASE, entries={**BASE.entries, a: _state(0, tags={"seed": "0", "algo": "x"})})
    there = replace(
        BASE,
        entries={
            **BASE.entries,
            a: _state(0, tags={"seed": "0", "algo": "y"}),
            b: _state(1, name="renamed"),
        },
    )
    merged = merge(BASE, here, there)
    assert merged.conflicts == ("`net0`: tag `algo` is 'x' here and 'y' there",)
    assert [u.id for u in merged.updates] == [b]
    local = merge(BASE, here, there, prefer="local")
    remote = merge(BASE, here, there, prefer="remote")
    assert local.conflicts == remote.conflicts == ()
    assert _applied(here, there, local).entries[a].tags["algo"] == "x"
    assert _applied(here, there, remote).entries[a].tags["algo"] == "y"
    with pytest.raises(ValueError, match="prefer"):
        merge(BASE, here, there, prefer="theirs")


def test_removals_follow_the_side_that_made_them() -> None:
    """Removed here and unchanged there: a push deletes it and a pull does not add it
    back. Removed there: a pull keeps it here. Removed here but changed there: a conflict."""
    b, c = IDS[1:3]
    here = Snapshot({i: s for i, s in BASE.entries.items() if i != b}, BASE.references)
    merged = merge(BASE, here, BASE)
    assert (merged.removed_here, merged.adds, merged.behind) == ((b,), (), False)
    there = Snapshot({i: s for i, s in BASE.entries.items() if i != c}, BASE.references)
    merged = merge(BASE, BASE, there)
    assert (merged.removed_there, merged.behind) == ((c,), True)
    assert merged.missing_here(BASE, there) == ["`net2` removed there"]
    edited = replace(BASE, entries={**BASE.entries, b: _state(1, tags={})})
    merged = merge(BASE, here, edited)
    assert merged.conflicts == ("`net1` was removed here and changed there",)
    assert merge(BASE, here, edited, prefer="remote").adds == (b,)
    assert merge(BASE, here, edited, prefer="local").adds == ()


def test_without_a_base_only_one_sided_tags_merge() -> None:
    """Never synced: a tag one side lacks is the other's, a differing value is a conflict,
    entries only there are added, and the remote's reference is taken."""
    a, b, d = IDS[0], IDS[1], IDS[3]
    here = Snapshot({a: _state(0, tags={"seed": "0"}), b: _state(1)}, {FAMILY: a})
    there = Snapshot(
        {a: _state(0, tags={"lr": "1"}), b: _state(1, name="x"), d: _state(3)}, {FAMILY: b}
    )
    merged = merge(None, here, there)
    assert merged.conflicts == ("`net1`: name is 'net1' here and 'x' there",)
    assert merged.adds == (d,) and merged.references == {FAMILY: b}
    assert merged.updates[0].after.tags == {"lr": "1", "seed": "0"}


def test_references_and_swapped_names() -> None:
    """A reference moved there is taken; two entries that swapped names there swap here
    (no clash); a rename there onto a name this zoo gave another entry is a conflict."""
    a, b, c = IDS[:3]
    there = Snapshot(
        {**BASE.entries, a: _state(0, name="net1"), b: _state(1, name="net0")}, {FAMILY: c}
    )
    merged = merge(BASE, BASE, there)
    assert merged.conflicts == () and merged.references == {FAMILY: c}
    assert {u.after.name for u in merged.updates} == {"net0", "net1"}
    here = replace(BASE, entries={**BASE.entries, c: _state(2, name="taken")})
    there = replace(BASE, entries={**BASE.entries, a: _state(0, name="taken")})
    assert merge(BASE, here, there).conflicts == ("two entries would be named `taken`",)


def test_a_snapshot_round_trips_through_its_json() -> None:
    """What the index stores reads back equal."""
    assert Snapshot.from_json(BASE.to_json()) == BASE
    assert Snapshot.from_json(Snapshot().to_json()) == Snapshot()


# -- every pair of edits on disjoint values merges to both ---------------------------------

FIELDS = [(i, f) for i in IDS[:3] for f in ("name", "dataset", "tag:seed", "tag:algo", "tag:new")]


def _edit(state: EntryState, what: str, side: str) -> EntryState:
    if what == "name":
        return replace(state, name=f"{state.name}-{side}")
    if what == "dataset":
        return replace(state, dataset=f"hmm-{side}", metrics={"test_error": len(side)})
    key = what.removeprefix("tag:")
    tags = dict(state.tags)
    if key == "algo" and side == "a":
        del tags[key]  # a removal is an edit too
    else:
        tags[key] = side
    return replace(state, tags=tags)


def _edited(base: Snapshot, edits: list[tuple[str, str]], side: str) -> Snapshot:
    entries = dict(base.entries)
    for entry_id, what in edits:
        entries[entry_id] = _edit(entries[entry_id], what, side)
    return replace(base, entries=entries)


@settings(max_examples=60, deadline=None)
@given(
    owner=st.lists(
        st.sampled_from(["none", "a", "b", "both"]), min_size=len(FIELDS), max_size=len(FIELDS)
    )
)
def test_disjoint_edits_merge_to_both_and_overlaps_conflict(owner: list[str]) -> None:
    """Each value edited by side a, side b, neither or both: the merge holds every one-sided
    edit, whichever side pulls; exactly the values both edited (differently) conflict."""
    a_edits = [f for f, o in zip(FIELDS, owner, strict=True) if o in ("a", "both")]
    b_edits = [f for f, o in zip(FIELDS, owner, strict=True) if o in ("b", "both")]
    here, there = _edited(BASE, a_edits, "a"), _edited(BASE, b_edits, "b")
    merged = merge(BASE, here, there)
    both = sum(o == "both" for o in owner)
    assert len(merged.conflicts) == both
    if both == 0:
        expected = _edited(_edited(BASE, a_edits, "a"), b_edits, "b")
        assert _applied(here, there, merged) == expected
        assert _applied(there, here, merge(BASE, there, here)) == expected
        assert merged.behind == bool(b_edits)
    for prefer, winner in (("remote", there), ("local", here)):
        settled = _applied(here, there, merge(BASE, here, there, prefer=prefer))
        for (entry_id, what), side in zip(FIELDS, owner, strict=True):
            source = {"none": BASE, "a": here, "b": there, "both": winner}[side]
            assert _value(settled.entries[entry_id], what) == _value(source.entries[entry_id], what)


def _value(state: EntryState, what: str) -> Any:
    if what in ("name", "dataset"):
        return getattr(state, what)
    return state.tags.get(what.removeprefix("tag:"))
