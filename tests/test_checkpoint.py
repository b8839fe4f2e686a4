"""Checkpoint files: headers checked against specs before loading; bad files rejected clearly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from nets import state_of

from canon.architectures import build_model
from canon.checkpoint import load_state, read_header, save_state
from canon.core import check_finite, spec_from_module
from canon.errors import CheckpointFormatError, NonFiniteError, SpecMismatchError


@pytest.fixture
def mlp():
    model = build_model(
        "mlp", {"in_features": 6, "hidden": [5, 4], "classes": 3, "batchnorm": True}
    )
    return model, spec_from_module(model)


def test_round_trip(tmp_path, mlp):
    """save_state then load_state returns the same tensors and metadata."""
    model, spec = mlp
    path = tmp_path / "m.safetensors"
    save_state(state_of(model), path, metadata={"architecture": "mlp"})
    header = read_header(path, spec)
    assert header.metadata == {"architecture": "mlp"}
    assert header.tensors["fc1.weight"] == ((5, 6), "float32")
    loaded = load_state(path, spec)
    for k, v in state_of(model).items():
        assert torch.equal(loaded[k], v)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_loaded_tensors_do_not_keep_the_file_mapped(tmp_path, mlp):
    """Each loaded tensor has memory of its own: none is a view into a mapping of the file,
    which one surviving tensor (a normalized copy shares BatchNorm's untouched batch
    counters with the state it came from) would keep mapped whole."""
    model, spec = mlp
    path = tmp_path / "m.safetensors"
    save_state(state_of(model), path)
    loaded = load_state(path, spec)
    counter = loaded["bn1.num_batches_tracked"]
    del loaded
    assert str(path) not in Path("/proc/self/maps").read_text()
    assert int(counter) == int(model.bn1.num_batches_tracked)


def test_every_mismatch_is_reported_by_name(tmp_path, mlp):
    """Missing, extra and misshapen tensors are all named in one error, before loading."""
    model, spec = mlp
    state = state_of(model)
    del state["fc2.bias"]
    state["fc1.weight"] = torch.zeros(5, 7)
    state["stray"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_state(state, path)
    with pytest.raises(SpecMismatchError) as info:
        read_header(path, spec)
    message = str(info.value)
    assert "missing tensor `fc2.bias`" in message
    assert "unexpected tensor `stray`" in message
    assert "`fc1.weight` has shape [5, 7], expected [5, 6]" in message
    assert len(info.value.problems) == 3


def test_dtype_kind_is_checked(tmp_path, mlp):
    """An integer tensor where a float weight belongs is a mismatch; float16 is accepted."""
    model, spec = mlp
    state = state_of(model)
    state["out.weight"] = state["out.weight"].half()
    save_state(state, tmp_path / "half.safetensors")
    read_header(tmp_path / "half.safetensors", spec)
    state["out.weight"] = torch.zeros(3, 4, dtype=torch.int32)
    save_state(state, tmp_path / "int.safetensors")
    with pytest.raises(SpecMismatchError, match=r"`out\.weight` has dtype int32"):
        read_header(tmp_path / "int.safetensors", spec)


def test_non_finite_weights_are_rejected(tmp_path, mlp):
    """NaN and Inf values are rejected on load, naming the tensors."""
    model, spec = mlp
    state = state_of(model)
    state["fc1.weight"][0, 0] = float("nan")
    state["out.bias"][1] = float("inf")
    save_state(state, tmp_path / "nan.safetensors")
    with pytest.raises(NonFiniteError) as info:
        load_state(tmp_path / "nan.safetensors", spec)
    assert set(info.value.tensors) == {"fc1.weight", "out.bias"}


def test_finite_weights_whose_sum_overflows_are_accepted():
    """A tensor's sum overflowing its dtype is not a non-finite weight: every element is
    then checked, and only tensors holding NaN or Inf are named, in the state's order."""
    big = torch.full((4,), 60000.0, dtype=torch.float16)  # finite; its sum is Inf in float16
    assert not torch.isfinite(big.sum())
    check_finite({"a": big, "b": torch.ones(3), "steps": torch.tensor(7)})
    bad = {"a": big, "b": torch.tensor([1.0, float("-inf")]), "c": torch.tensor([float("nan")])}
    with pytest.raises(NonFiniteError) as info:
        check_finite(bad)
    assert info.value.tensors == ("b", "c")


def _write(path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "too short"),
        (b"PK\x03\x04 this is a zip (a torch pickle)", "header length"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not an object"),
    ],
)
def test_files_that_are_not_safetensors(tmp_path, content, pattern):
    """Garbage, pickles and truncated files give CheckpointFormatError, never a crash."""
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=pattern):
        read_header(path)


def test_offsets_outside_the_file(tmp_path):
    """A header pointing past the end of the file is rejected before any read."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    _write(tmp_path / "short.safetensors", header, b"\0" * 8)
    with pytest.raises(CheckpointFormatError, match="`w` has data offsets"):
        read_header(tmp_path / "short.safetensors")


def test_bad_dtype_and_metadata(tmp_path):
    """Unknown dtypes and non-string metadata are format errors."""
    bad_dtype = json.dumps({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}})
    _write(tmp_path / "a.safetensors", bad_dtype.encode(), b"\0")
    with pytest.raises(CheckpointFormatError, match="unsupported dtype"):
        read_header(tmp_path / "a.safetensors")
    bad_meta = json.dumps({"__metadata__": {"k": 1}})
    _write(tmp_path / "b.safetensors", bad_meta.encode())
    with pytest.raises(CheckpointFormatError, match="metadata"):
        read_header(tmp_path / "b.safetensors")


def test_missing_file(tmp_path):
    """A missing path is a clear error."""
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        read_header(tmp_path / "nowhere.safetensors")


def test_serialization_is_deterministic_and_standard(tmp_path, mlp):
    """The same tensors and metadata give the same bytes, which safetensors itself reads."""
    from safetensors.torch import load_file

    from canon.checkpoint import serialize

    model, _ = mlp
    state = state_of(model)
    meta = {"b": "2", "a": "1", "canon.config": '{"x": 1}'}
    first = serialize(state, meta)
    assert (
        serialize(dict(reversed(list(state.items()))), dict(reversed(list(meta.items())))) == first
    )
    path = tmp_path / "m.safetensors"
    path.write_bytes(first)
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert read_header(path).metadata == meta


def test_packed_tensors_are_views_into_their_bytes() -> None:
    """pack holds the weights once: its tensors equal the state's, lie inside its read-only
    bytes (which safetensors reads back as the same tensors), and own nothing else; empty,
    0-d, bool and half tensors included."""
    import numpy as np
    from safetensors.torch import load

    from canon.checkpoint import pack, serialize

    gen = torch.Generator().manual_seed(0)
    state = {
        "w": torch.randn((5, 3), generator=gen).t(),  # not contiguous
        "d": torch.randn(3, generator=gen, dtype=torch.float64),
        "h": torch.randn(7, generator=gen).half(),
        "n": torch.tensor(4),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros((0, 4)),
    }
    packed = pack(state, {"k": "v"})
    assert packed.data.readonly and packed.data.tobytes() == serialize(state, {"k": "v"})
    read = load(packed.data.tobytes())
    start = np.frombuffer(packed.data, dtype=np.uint8).ctypes.data
    for name, t in state.items():
        view = packed.tensors[name]
        assert view.dtype == t.dtype and torch.equal(view, t) and torch.equal(read[name], t)
        if t.numel():
            at = view.data_ptr() - start
            assert at > 0 and at + t.numel() * t.element_size() <= len(packed.data)
            assert at % t.element_size() == 0  # aligned


def test_serialized_bytes_are_those_of_earlier_releases() -> None:
    """Objects are named by the hash of these bytes, so they must never change: a network
    added again to a zoo written by an earlier release must find its own object. The hash
    below is what releases before ``pack`` wrote for this state."""
    import hashlib

    from canon.checkpoint import serialize

    state = {
        "w": (torch.arange(12, dtype=torch.float32) / 8 - 0.5).reshape(3, 4).t(),
        "d": torch.arange(3, dtype=torch.float64) / 3,
        "h": (torch.arange(5) / 4).half(),
        "mask": torch.tensor([True, False, True]),
        "n": torch.tensor(7),
        "empty": torch.zeros(0, 2),
    }
    meta = {"canon.architecture": "mlp", "canon.config": "{}"}
    digest = hashlib.sha256(serialize(state, meta)).hexdigest()
    assert digest == "0a6c8327bab9dc5a1ace01f9054b36f3f0253da5be01e7e3e5d64c5659f8e0e4"
