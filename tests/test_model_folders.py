"""`canon add FOLDER`: a model saved in a folder as the Hub's libraries save one
(transformers' save_pretrained, a downloaded snapshot, the Hub cache's own snapshot
folders), read as `canon add hf://...` reads a repository, without the Hub.

Real files throughout: a tiny GPT-2 saved by transformers itself, the loopback Hub of
tests/hub_server.py with the real Hub client filling a real cache, and the CLI in-process.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from hub_server import FakeHub
from torch import nn
from vision_models import vision

from canon.cli import cli
from canon.errors import CheckpointFormatError, ConfigError, UntrustedCodeError
from canon.hub import add_from_folder, add_from_hub
from canon.zoo import Zoo

GPT2 = {"n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 16, "vocab_size": 64}
TOKEN = "hf_test_token"

# transformers takes seconds to import on a fresh worker: the fast loop leaves it to CI
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    vision()  # transformers' optional torchvision import needs the op schemas first
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).eval()


@pytest.fixture
def saved(gpt2: nn.Module, tmp_path: Path) -> Path:
    """The GPT-2 as save_pretrained writes it, in a folder named `tiny-gpt2`."""
    folder = tmp_path / "tiny-gpt2"
    gpt2.save_pretrained(folder)
    return folder


@pytest.fixture
def zoo(tmp_path: Path) -> Iterator[Zoo]:
    with Zoo.open(tmp_path / "zoo") as z:
        yield z


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_saved_folder_is_added_whole_or_sharded(
    saved: Path, gpt2: nn.Module, zoo: Zoo, tmp_path: Path
) -> None:
    """save_pretrained's folder becomes an `hf-transformers/gpt2` entry named after the
    folder, its Conv1D weights in canon's layout; the same model saved in shards is the
    same object."""
    entry = add_from_folder(zoo, saved)
    assert (entry.name, entry.architecture, entry.tags) == ("tiny-gpt2", "hf-transformers/gpt2", {})
    assert entry.config["config"] == json.loads((saved / "config.json").read_text())
    state, original = zoo.state(entry), gpt2.state_dict()
    assert set(state) == set(original) - {"lm_head.weight"}  # tied to the token embedding
    conv1d = ("c_attn.weight", "c_fc.weight", "c_proj.weight")  # stored (in, out)
    for name, value in state.items():
        expected = original[name].t() if name.endswith(conv1d) else original[name]
        assert torch.equal(value, expected), name
    sharded = tmp_path / "sharded"
    gpt2.save_pretrained(sharded, max_shard_size="2KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    with Zoo.open(tmp_path / "other") as other:
        assert add_from_folder(other, sharded, name="again").id == entry.id


def test_a_hub_cache_snapshot_is_recorded_as_the_hubs(saved: Path, tmp_path: Path) -> None:
    """The Hub cache's snapshot folder of a repository adds as `hf://` added it: the same
    object and the same hf.* tags (repository, commit, file, sha256)."""
    files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    with FakeHub(token=TOKEN) as hub:
        hub.commit("lab/tiny-gpt2", files)
        cache = tmp_path / "hf-cache"
        with Zoo.open(tmp_path / "from-hub") as first:
            online = add_from_hub(
                first, "hf://lab/tiny-gpt2", endpoint=hub.endpoint, token=TOKEN, cache_dir=cache
            )
        commit = hub.head("lab/tiny-gpt2")
    snapshot = cache / "models--lab--tiny-gpt2" / "snapshots" / commit
    assert (snapshot / "model.safetensors").is_symlink()  # into the cache's blobs
    with Zoo.open(tmp_path / "from-folder") as second:
        local = add_from_folder(second, snapshot)
    assert (local.id, local.name, local.tags) == (online.id, "tiny-gpt2", online.tags)
    assert local.tags["hf.revision"] == commit


def test_pickled_weights_alone_are_refused_unread(saved: Path, zoo: Zoo, tmp_path: Path) -> None:
    """A folder whose weights are a pickle (pytorch_model.bin) is refused, the pickle named
    and never loaded (loading it would write a file); the zoo is unchanged."""
    (saved / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    (saved / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    before = _snapshot(zoo.root)
    with pytest.raises(CheckpointFormatError, match=r"pytorch_model\.bin.*never unpickles"):
        add_from_folder(zoo, saved)
    assert not marker.exists()
    assert _snapshot(zoo.root) == before


def test_a_broken_folder_is_refused_and_the_zoo_is_unchanged(
    saved: Path, gpt2: nn.Module, zoo: Zoo, tmp_path: Path
) -> None:
    """No config.json, a shard index naming a shard that is not there or a path out of the
    folder, and a config naming its own code (unless trusted, and then the code never
    runs): each refused with nothing written."""
    before = _snapshot(zoo.root)
    with pytest.raises(CheckpointFormatError, match=r"canon\.hub\.add_from_folder\(zoo, FOLDER\)"):
        zoo.add(saved, name="plain", architecture="hf-transformers/gpt2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"holds no config\.json"):
        add_from_folder(zoo, empty)
    sharded = tmp_path / "sharded"
    gpt2.save_pretrained(sharded, max_shard_size="2KB")
    index_file = sharded / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (sharded / first).unlink()
    with pytest.raises(CheckpointFormatError, match="which is not in the folder"):
        add_from_folder(zoo, sharded)
    index["weight_map"] = {name: "../outside.safetensors" for name in index["weight_map"]}
    index_file.write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="is not a file path inside a repository"):
        add_from_folder(zoo, sharded)
    config = json.loads((saved / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_tiny.Tiny"}
    (saved / "config.json").write_text(json.dumps(config))
    (saved / "modeling_tiny.py").write_text("raise SystemExit('the folder code ran')\n")
    with pytest.raises(UntrustedCodeError, match=r"modeling_tiny\.Tiny.*--trust-remote-code"):
        add_from_folder(zoo, saved)
    assert _snapshot(zoo.root) == before
    trusted = add_from_folder(zoo, saved, name="trusted", trust_remote_code=True)
    assert trusted.architecture == "hf-transformers/gpt2"


def test_cli_adds_a_folder_and_refuses_what_does_not_apply(saved: Path, tmp_path: Path) -> None:
    """`canon add FOLDER`: the entry named after the folder (or --name), tags as given;
    --arch, --sha256 and a folder without config.json refused in one line each."""
    zoo = tmp_path / "zoo"

    def canon(*args: str, code: int = 0) -> Any:
        result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    canon("init")
    added = json.loads(canon("add", str(saved), "--tag", "origin=lab", "--json").stdout)["entry"]
    assert (added["name"], added["tags"]) == ("tiny-gpt2", {"origin": "lab"})
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    assert (
        "does not apply to model folders" in canon("add", str(copy), "--arch", "mlp", code=1).stderr
    )
    refused = canon("add", str(copy), "--sha256", "0" * 64, code=1)
    assert "applies to hf:// models only" in refused.stderr
    (copy / "config.json").unlink()
    assert "holds no config.json" in canon("add", str(copy), "--name", "x", code=1).stderr
    again = canon("add", str(saved), "--name", "other", code=1)  # the same weights, stored once
    assert "already in the zoo as `tiny-gpt2`" in again.stderr
