"""`canon add hf://...`: models from ordinary Hub model repositories, through the real Hub
client against the loopback Hub of tests/hub_server.py (no mocks).

The test builds a timm repository (a small resnet18: config.json and model.safetensors,
also sharded) and a transformers one (a tiny GPT-2 as transformers' save_pretrained writes
it: Conv1D weights, no tied output layer in the file).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hub_server import FakeHub
from safetensors.torch import load, save
from torch import nn
from vision_models import vision

from canon.architectures import build_model, get_architecture, library_layout
from canon.core import random_symmetry
from canon.core.trace import load_into
from canon.errors import (
    CheckpointFormatError,
    ConfigError,
    HubError,
    SpecMismatchError,
    UnknownNameError,
    UntrustedCodeError,
)
from canon.hub import add_from_hub, parse_hub_url, pull, push
from canon.zoo import Zoo

TOKEN = "hf_test_token"
TIMM_CONFIG: dict[str, Any] = {
    "architecture": "resnet18.canon_test",
    "num_classes": 10,
    "num_features": 32,
    "global_pool": "avg",
    "model_args": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 32], "stem_width": 8},
    "pretrained_cfg": {"input_size": [3, 16, 16], "num_classes": 10},
}
GPT2_CONFIG: dict[str, Any] = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 16,
    "n_layer": 1,
    "n_head": 2,
    "n_positions": 16,
    "vocab_size": 64,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def _weights(architecture: str, config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(architecture, {"config": config}).state_dict()


def _config_bytes(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2).encode()


def _snapshot(root: Path) -> dict[str, str]:
    """The sha256 of every file under ``root``, by path: a zoo's bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# timm and torchvision take seconds to import on a fresh worker, and every test here
# builds a model through them or serves a Hub: the fast loop leaves them to CI
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def libraries() -> None:
    vision()  # timm (and transformers' torchvision import) need the op schemas first


@pytest.fixture(scope="module")
def timm_state(libraries: None) -> dict[str, torch.Tensor]:
    return _weights("timm/resnet18", TIMM_CONFIG)


@pytest.fixture(scope="module")
def hub(timm_state: dict[str, torch.Tensor]) -> Iterator[FakeHub]:
    """A loopback Hub holding the timm repository, whole (lab/resnet) and in two shards
    (lab/resnet-sharded)."""
    with FakeHub(token=TOKEN) as server:
        config = _config_bytes(TIMM_CONFIG)
        server.commit("lab/resnet", {"config.json": config, "model.safetensors": save(timm_state)})
        names = list(timm_state)
        half = {n: timm_state[n] for n in names[: len(names) // 2]}
        rest = {n: timm_state[n] for n in names[len(names) // 2 :]}
        shards = {
            "model-00001-of-00002.safetensors": half,
            "model-00002-of-00002.safetensors": rest,
        }
        index = {"weight_map": {n: f for f, part in shards.items() for n in part}}
        server.commit(
            "lab/resnet-sharded",
            {
                "config.json": config,
                "model.safetensors.index.json": json.dumps(index).encode(),
                **{f: save(part) for f, part in shards.items()},
            },
        )
        yield server


@pytest.fixture
def options(hub: FakeHub, tmp_path: Path) -> dict[str, Any]:
    """Client options: the loopback endpoint, the token, a Hub cache of this test's own."""
    return {"endpoint": hub.endpoint, "token": TOKEN, "cache_dir": tmp_path / "hf-cache"}


@pytest.fixture
def zoo(tmp_path: Path) -> Iterator[Zoo]:
    with Zoo.open(tmp_path / "zoo") as z:
        yield z


def test_timm_repo_is_added_with_its_provenance(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any], timm_state: dict[str, torch.Tensor]
) -> None:
    """A timm repository becomes an entry of adapter `timm/resnet18` whose config is the
    repository's config.json; repo, commit, file and sha256 are recorded as tags."""
    entry = add_from_hub(zoo, "hf://lab/resnet", **options)
    data = hub.files("lab/resnet")["model.safetensors"]
    assert entry.name == "resnet"
    assert entry.architecture == "timm/resnet18"
    assert entry.config == {"config": TIMM_CONFIG}
    assert entry.tags == {
        "hf.repo": "lab/resnet",
        "hf.revision": hub.head("lab/resnet"),
        "hf.file": "model.safetensors",
        "hf.sha256": hashlib.sha256(data).hexdigest(),
    }
    state = zoo.state(entry)
    assert state.keys() == timm_state.keys()
    assert all(torch.equal(state[k], timm_state[k]) for k in state)
    assert zoo.spec(entry).groups  # traced through the adapter: the residual streams


def test_sharded_checkpoint_is_read_shard_by_shard(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any], tmp_path: Path
) -> None:
    """model.safetensors.index.json: the shards are checked as one checkpoint, every shard's
    sha256 is recorded, and the entry holds the same weights as the whole file's."""
    entry = add_from_hub(zoo, "hf://lab/resnet-sharded@main", name="sharded", **options)
    files = hub.files("lab/resnet-sharded")
    assert entry.tags["hf.file"] == "model.safetensors.index.json"
    for i in (1, 2):
        shard = f"model-0000{i}-of-00002.safetensors"
        assert entry.tags[f"hf.shard.{i}"] == f"{hashlib.sha256(files[shard]).hexdigest()} {shard}"
    with Zoo.open(tmp_path / "whole") as whole:
        assert add_from_hub(whole, "hf://lab/resnet", **options).id == entry.id


def test_wrong_sha256_is_refused_and_the_zoo_is_unchanged(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any]
) -> None:
    """An expected sha256 the file does not have, and a transfer that does not hash to the
    Hub's LFS etag, are refused; the zoo's bytes stay as they were."""
    good = hub.files("lab/resnet")
    right = hashlib.sha256(good["model.safetensors"]).hexdigest()
    entry = add_from_hub(zoo, "hf://lab/resnet", name="pinned", sha256=right.upper(), **options)
    assert entry.tags["hf.sha256"] == right
    before = _snapshot(zoo.root)
    with pytest.raises(HubError, match="not the expected 0000"):
        add_from_hub(zoo, "hf://lab/resnet", name="second", sha256="0" * 64, **options)
    assert _snapshot(zoo.root) == before
    with pytest.raises(ConfigError, match="64 hexadecimal digits"):
        add_from_hub(zoo, "hf://lab/resnet", name="second", sha256="abc", **options)

    hub.commit("lab/damaged", good)
    served = bytearray(good["model.safetensors"])
    served[-1] ^= 0xFF  # same size, other bytes
    hub.tamper("lab/damaged", "model.safetensors", bytes(served))
    with pytest.raises(HubError, match="does not hash to the sha256 the Hub gave"):
        add_from_hub(zoo, "hf://lab/damaged", **options)
    assert _snapshot(zoo.root) == before


def test_pickles_and_bad_addresses_are_refused_before_any_request(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any]
) -> None:
    """pytorch_model.bin is never downloaded; malformed addresses fail before the Hub is asked."""
    requests = sum(hub.requests.values())
    with pytest.raises(CheckpointFormatError, match="never downloads nor unpickles"):
        add_from_hub(zoo, "hf://lab/resnet/pytorch_model.bin", **options)
    for bad in ("hf://lab", "hf://../x", "hf://lab/resnet/../secret.safetensors", "hf://a/b@"):
        with pytest.raises((ConfigError, HubError)):
            add_from_hub(zoo, bad, **options)
    assert sum(hub.requests.values()) == requests
    assert parse_hub_url("hf://lab/resnet@refs%2Fpr%2F1/sub/w.safetensors") == parse_hub_url(
        "hf://lab/resnet@refs%2Fpr%2F1/sub/w.safetensors"
    )
    source = parse_hub_url("hf://lab/resnet@v1/sub/w.safetensors")
    assert (source.repo_id, source.revision, source.filename) == (
        "lab/resnet",
        "v1",
        "sub/w.safetensors",
    )
    assert parse_hub_url("hf://lab/resnet@refs%2Fpr%2F1").revision == "refs/pr/1"


def test_readd_is_served_from_the_cache_alone(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any], tmp_path: Path
) -> None:
    """Once cached, a revision (whole or sharded) adds again from the Hub cache alone, with
    no request (``local_files_only``; the shell's HF_HUB_OFFLINE=1 is the slow test below)."""
    online = add_from_hub(zoo, "hf://lab/resnet", **options)
    with Zoo.open(tmp_path / "sharded") as other:
        sharded = add_from_hub(other, "hf://lab/resnet-sharded", **options)
    requests = sum(hub.requests.values())
    offline = {**options, "local_files_only": True}
    with Zoo.open(tmp_path / "offline") as other:
        again = add_from_hub(other, "hf://lab/resnet", **offline)
        assert (again.id, again.tags) == (online.id, online.tags)
        other.rm(again)
        again = add_from_hub(other, "hf://lab/resnet-sharded", **offline)
        assert (again.id, again.tags) == (sharded.id, sharded.tags)
        with pytest.raises(HubError, match="unreachable or offline"):
            add_from_hub(other, "hf://lab/uncached", **offline)
    assert sum(hub.requests.values()) == requests


def test_adapter_entries_push_and_pull(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any], tmp_path: Path
) -> None:
    """A zoo of Hub-adapter entries pushes and pulls: the pulled manifest names `timm/resnet18`,
    which builds from the registered adapter (no code is imported), and its weights match."""
    entry = add_from_hub(zoo, "hf://lab/resnet", **options)
    push(zoo, "lab/adapter-zoo", endpoint=hub.endpoint, token=TOKEN)
    with Zoo.open(tmp_path / "copy") as copy:
        pulled = pull(copy, "lab/adapter-zoo", **options)
        assert pulled.added == ["resnet"]
        got = copy.get("resnet")
        assert got.to_dict() == entry.to_dict()
        assert zoo.state(entry).keys() == copy.state(got).keys()


def test_adapter_names_and_configs_are_checked(libraries: None) -> None:
    """Adapter names are never code; malformed names and out-of-bounds sizes are refused before
    anything is built."""
    assert get_architecture("timm/resnet18").name == "timm/resnet18"
    for bad in ("timm/resnet18.tag", "timm/Res Net", "hf-transformers/GPT2", "timm/a/b"):
        with pytest.raises(UnknownNameError):
            get_architecture(bad)
    with pytest.raises(ConfigError, match="`channels` is 4194304"):
        build_model(
            "timm/resnet18", {"config": {**TIMM_CONFIG, "model_args": {"channels": [2**22]}}}
        )
    with pytest.raises(ConfigError, match="may not set `checkpoint_path`"):
        args = {**TIMM_CONFIG["model_args"], "checkpoint_path": "/etc/passwd"}
        build_model("timm/resnet18", {"config": {**TIMM_CONFIG, "model_args": args}})
    with pytest.raises(ConfigError, match="`architecture` is `resnet18`"):
        build_model("timm/resnet18", {"config": {**TIMM_CONFIG, "architecture": "resnet34"}})
    wide = {**TIMM_CONFIG, "model_args": {"channels": [2**17] * 4, "stem_width": 2**17}}
    with pytest.raises(ConfigError, match="canon builds at most"):
        build_model("timm/resnet18", {"config": wide})  # refused on the meta device


def test_a_timm_checkpoint_takes_its_input_shape_into_its_config(
    timm_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """A checkpoint of a timm model trained elsewhere adds as `timm/MODEL` with a config
    that names neither the model again nor the input shape: --input-shape (or the
    dataset's samples) goes to `pretrained_cfg.input_size`, where timm's configs hold it;
    without either, the error says how; a shape against the config's own is refused."""
    config = {k: v for k, v in TIMM_CONFIG.items() if k not in ("architecture", "pretrained_cfg")}
    args = {"architecture": "timm/resnet18", "config": {"config": config}}
    with Zoo.open(tmp_path / "zoo") as zoo:
        before = _snapshot(zoo.root)
        with pytest.raises(ConfigError, match=r"pass --input-shape.*config\.pretrained_cfg"):
            zoo.add(timm_state, name="r", **args)
        assert _snapshot(zoo.root) == before
        entry = zoo.add(timm_state, name="r", input_shape=(3, 16, 16), **args)
        assert entry.config == {"config": {**config, "pretrained_cfg": {"input_size": [3, 16, 16]}}}
        state = zoo.state(entry)
        assert all(torch.equal(state[k], timm_state[k]) for k in timm_state)
        shaped = {"config": {**TIMM_CONFIG}}
        with pytest.raises(ConfigError, match=r"takes inputs of shape \[3, 16, 16\]"):
            zoo.add(timm_state, name="s", architecture="timm/resnet18", config=shaped,
                    input_shape=(3, 32, 32))  # fmt: skip
    images = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(images, x=rng.normal(size=(20, 3, 16, 16)).astype(np.float32), y=np.arange(20) % 10)
    with Zoo.open(tmp_path / "other") as other:
        from_data = other.add(timm_state, name="r", dataset=f"npz:{images}", **args)
        assert from_data.family == entry.family and "train_error" in from_data.metrics


@pytest.fixture(scope="module")
def gpt2(libraries: None) -> nn.Module:
    """A tiny GPT-2 language model as transformers itself builds it (Conv1D projections,
    an output layer tied to the token embedding), random weights."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{k: v for k, v in GPT2_CONFIG.items() if k != "model_type"})
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def transformers_hub(
    hub: FakeHub, gpt2: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> FakeHub:
    """The tiny GPT-2 as transformers' save_pretrained writes it (its config.json, its
    safetensors without the tied output layer) in lab/gpt2; as GPT-2's own repositories
    hold it (lab/gpt2-legacy); with a header that lies about a shape (lab/gpt2-bad);
    naming its own code (lab/gpt2-code, whose code exits if run)."""
    folder = tmp_path_factory.mktemp("gpt2")
    gpt2.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    hub.commit("lab/gpt2", files)
    state = load(files["model.safetensors"])
    # as GPT-2's own repositories hold it: the base model's names (no `transformer.`) and
    # the causal-mask buffers of older transformers versions, which transformers ignores
    legacy = {k.removeprefix("transformer."): v for k, v in state.items()}
    legacy["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
    hub.commit("lab/gpt2-legacy", {**files, "model.safetensors": save(legacy)})
    bad = {**state, "transformer.wte.weight": torch.zeros(65, 16)}
    hub.commit("lab/gpt2-bad", {**files, "model.safetensors": save(bad)})
    code = {**json.loads(files["config.json"]), "auto_map": {"AutoModel": "modeling_tiny.Tiny"}}
    hub.commit(
        "lab/gpt2-code",
        {
            **files,
            "config.json": _config_bytes(code),
            "modeling_tiny.py": b"raise SystemExit('the repository code ran')\n",
        },
    )
    return hub


def test_transformers_repo_is_added_in_canons_layout(
    transformers_hub: FakeHub,
    gpt2: nn.Module,
    zoo: Zoo,
    options: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A GPT-2 saved by transformers becomes an `hf-transformers/gpt2` entry: the Conv1D
    weights transposed into canon's linear layers, the tied output layer held once (as the
    token embedding), provenance recorded, and the same logits as transformers' model. The
    layout of GPT-2's own repositories (base-model names, old mask buffers) reads the same."""
    entry = add_from_hub(zoo, "hf://lab/gpt2", **options)
    data = transformers_hub.files("lab/gpt2")["model.safetensors"]
    assert entry.architecture == "hf-transformers/gpt2"
    assert entry.tags["hf.sha256"] == hashlib.sha256(data).hexdigest()
    assert entry.tags["hf.revision"] == transformers_hub.head("lab/gpt2")
    state, original = zoo.state(entry), gpt2.state_dict()
    assert set(state) == set(original) - {"lm_head.weight"}
    conv1d = ("c_attn.weight", "c_fc.weight", "c_proj.weight")  # stored (in, out)
    for name, value in state.items():
        expected = original[name].t() if name.endswith(conv1d) else original[name]
        assert torch.equal(value, expected), name
    model = build_model(entry.architecture, entry.config).eval()
    load_into(model, state)
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, gpt2(tokens).logits, atol=1e-5)
    assert len([g for g in zoo.spec(entry).groups if g.link]) == 2
    with Zoo.open(tmp_path / "legacy") as other:
        legacy = add_from_hub(other, "hf://lab/gpt2-legacy", **options)
    assert legacy.id == entry.id  # the same weights: the same object


# Pythia's layout: GPT-NeoX, a quarter of each head's dimensions rotated, parallel residual
NEOX_CONFIG: dict[str, Any] = {
    "model_type": "gpt_neox",
    "architectures": ["GPTNeoXForCausalLM"],
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "vocab_size": 64, "max_position_embeddings": 16,
    "rotary_pct": 0.25, "partial_rotary_factor": 0.25, "use_parallel_residual": True,
    "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
}  # fmt: skip


def test_pythia_style_repo_is_added_and_compared(
    hub: FakeHub, libraries: None, options: dict[str, Any], zoo: Zoo, tmp_path: Path
) -> None:
    """A GPT-NeoX saved by transformers (its output layer under the checkpoint's name
    `embed_out`, which transformers renames `lm_head`), and as Pythia's older files hold
    it (each layer's causal-mask buffers and rotary frequencies, which transformers
    ignores), become the same entry, with transformers' logits; a copy with its heads and
    units permuted compares at distance 0 by weight matching."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        **{k: v for k, v in NEOX_CONFIG.items() if k != "model_type"}
    )
    neox = transformers.GPTNeoXForCausalLM(config).eval()
    folder = tmp_path / "neox"
    neox.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    hub.commit("eleuther/neox", files)
    legacy = dict(load(files["model.safetensors"]))
    for layer in range(2):
        at = f"gpt_neox.layers.{layer}.attention"
        legacy[f"{at}.bias"] = torch.tril(torch.ones(1, 1, 16, 16, dtype=torch.bool))
        legacy[f"{at}.masked_bias"] = torch.tensor(-1e9)
        legacy[f"{at}.rotary_emb.inv_freq"] = torch.rand(2)
    hub.commit("eleuther/neox-legacy", {**files, "model.safetensors": save(legacy)})
    entry = add_from_hub(zoo, "hf://eleuther/neox", **options, dataset="grammar")
    assert entry.architecture == "hf-transformers/gpt_neox"
    with Zoo.open(tmp_path / "legacy") as other:
        assert add_from_hub(other, "hf://eleuther/neox-legacy", **options).id == entry.id
    spec = _library_logits_and_a_copy_at_distance_zero(zoo, entry, neox)
    queries = [g for g in spec.groups if g.name.endswith("query_key_value")]
    assert all(g.heads_only and g.producers[0].stride == 3 * 8 for g in queries)


def _library_logits_and_a_copy_at_distance_zero(zoo: Zoo, entry: Any, library: nn.Module) -> Any:
    """Check that ``entry`` computes the ``library`` model's logits, and that a copy with
    a random symmetry applied compares with it at distance 0; the entry's spec."""
    model = build_model(entry.architecture, entry.config).eval()
    load_into(model, zoo.state(entry))
    tokens = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, library(tokens).logits, atol=1e-5)
    spec = zoo.spec(entry)
    copy = random_symmetry(zoo.state(entry), spec, seed=1)
    zoo.add(copy, name="copy", architecture=entry.architecture, config=entry.config,
            dataset="grammar")  # fmt: skip
    assert zoo.compare(entry.name, "copy", paths=()).distances.euclidean_free < 1e-4
    return spec


ALIBI_DECODERS: dict[str, dict[str, Any]] = {
    # BLOOM's files (bigscience's) hold the base model's names, the output layer tied
    "bloom": {"architectures": ["BloomForCausalLM"], "n_layer": 2, "n_head": 4},
    # Falcon-7B: FalconLinear layers, multi-query attention, rotary
    "falcon": {
        "architectures": ["FalconForCausalLM"], "num_hidden_layers": 2,
        "num_attention_heads": 4, "new_decoder_architecture": False, "multi_query": True,
        "alibi": False, "bias": False,
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(ALIBI_DECODERS))
def test_bloom_and_falcon_repos_are_added_with_their_logits(
    hub: FakeHub, libraries: None, options: dict[str, Any], zoo: Zoo, tmp_path: Path, kind: str
) -> None:
    """A BLOOM saved as its Hub files are (base-model names) and a Falcon saved by
    transformers become entries with transformers' logits; a copy with its units and
    head dimensions permuted compares at distance 0."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    values = {"hidden_size": 16, "vocab_size": 64, **ALIBI_DECODERS[kind]}
    config = transformers.AutoConfig.for_model(kind, **values)
    model = getattr(transformers, values["architectures"][0])(config).eval()
    folder = tmp_path / kind
    model.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    if kind == "bloom":
        state = load(files["model.safetensors"])
        base = {k.removeprefix("transformer."): v for k, v in state.items() if "lm_head" not in k}
        files["model.safetensors"] = save(base)
    hub.commit(f"lab/{kind}", files)
    entry = add_from_hub(zoo, f"hf://lab/{kind}", **options, dataset="grammar")
    assert entry.architecture == f"hf-transformers/{kind}"
    _library_logits_and_a_copy_at_distance_zero(zoo, entry, model)


MIXTRAL_CONFIG: dict[str, Any] = {
    "model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 8, "vocab_size": 64,
    "max_position_embeddings": 16, "num_local_experts": 4, "num_experts_per_tok": 2,
}  # fmt: skip


def test_mixtral_repos_are_added_from_either_layout(
    hub: FakeHub, libraries: None, options: dict[str, Any], zoo: Zoo, tmp_path: Path
) -> None:
    """A Mixtral saved by transformers (each expert's own w1, w3 and w2, the names of the Hub's
    Mixtral repositories) and the same model's 3-D stacked state dict become the same
    entry (so do the library's model and that state dict added from Python or a file),
    with transformers' logits, its experts in canon's 2-D stacking; a copy with its
    units and experts' units permuted compares at distance 0. A file that lacks one
    expert's weight, or holds an expert the layer does not have, is refused before any
    tensor is read, the zoo unchanged."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    values = {k: v for k, v in MIXTRAL_CONFIG.items() if k != "model_type"}
    mixtral = transformers.MixtralForCausalLM(transformers.MixtralConfig(**values)).eval()
    folder = tmp_path / "mixtral"
    mixtral.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    per_expert = load(files["model.safetensors"])
    assert "model.layers.0.block_sparse_moe.experts.3.w3.weight" in per_expert
    hub.commit("mistral/tiny", files)
    stacked = {k: v.contiguous() for k, v in mixtral.state_dict().items()}  # 3-D experts
    hub.commit("mistral/tiny-stacked", {**files, "model.safetensors": save(stacked)})
    short = {k: v for k, v in per_expert.items() if "experts.2.w1" not in k}
    hub.commit("mistral/tiny-short", {**files, "model.safetensors": save(short)})
    w1 = per_expert["model.layers.0.block_sparse_moe.experts.0.w1.weight"]
    extra = {**per_expert, "model.layers.0.block_sparse_moe.experts.9.w1.weight": w1.clone()}
    hub.commit("mistral/tiny-extra", {**files, "model.safetensors": save(extra)})

    entry = add_from_hub(zoo, "hf://mistral/tiny", **options, dataset="grammar")
    state = zoo.state(entry)
    gate_up = state["model.layers.1.mlp.experts.gate_up_proj"]
    assert gate_up.shape == (4 * 2 * 8, 16)  # expert 3's up rows: its w3, after its w1
    w3 = per_expert["model.layers.1.block_sparse_moe.experts.3.w3.weight"]
    assert torch.equal(gate_up[3 * 16 + 8 : 4 * 16], w3)
    down = state["model.layers.1.mlp.experts.down_proj"]
    w2 = per_expert["model.layers.1.block_sparse_moe.experts.2.w2.weight"]
    assert torch.equal(down[:, 2 * 8 : 3 * 8], w2)
    with Zoo.open(tmp_path / "stacked") as other:
        assert add_from_hub(other, "hf://mistral/tiny-stacked", **options).id == entry.id
    # the library's own model, and its state dict in a file (3-D experts), added as such
    typed = {"architecture": entry.architecture, "config": entry.config}
    (tmp_path / "stacked.safetensors").write_bytes(save(stacked))
    for name, source in (("module", mixtral), ("file", tmp_path / "stacked.safetensors")):
        with Zoo.open(tmp_path / name) as other:
            assert other.add(source, name=name, **typed).id == entry.id
    spec = _library_logits_and_a_copy_at_distance_zero(zoo, entry, mixtral)
    assert [g.blocks for g in spec.groups if g.name.endswith("experts")] == [4, 4]
    with Zoo.open(tmp_path / "short") as other:
        assert len(other) == 0  # the index open (SQLite's -wal/-shm files) from here on
        before = _snapshot(other.root)
        with pytest.raises(CheckpointFormatError, match=r"hold 7 of the 8 expert weights"):
            add_from_hub(other, "hf://mistral/tiny-short", **options)
        with pytest.raises(CheckpointFormatError, match=r"expert 9; the layer has 4 experts"):
            add_from_hub(other, "hf://mistral/tiny-extra", **options)
        assert len(other) == 0 and _snapshot(other.root) == before


DEEPSEEK_CONFIG: dict[str, Any] = {
    "model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "intermediate_size": 32, "vocab_size": 64,
    "max_position_embeddings": 16, "kv_lora_rank": 8, "q_lora_rank": 12,
    "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 4, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_intermediate_size": 8,
    "n_group": 1, "topk_group": 1,
}  # fmt: skip


#: DeepSeek-V3.2: the same, with a sparse attention's indexer (a top-k picks the keys)
DEEPSEEK_V32 = {
    "model_type": "deepseek_v32", "architectures": ["DeepseekV32ForCausalLM"],
    "index_topk": 4, "index_head_dim": 8, "index_n_heads": 2,
}  # fmt: skip


@pytest.mark.parametrize("version", ["V3", "V32"])
def test_deepseek_repo_with_latent_attention_is_added_and_compared(
    hub: FakeHub,
    libraries: None,
    options: dict[str, Any],
    zoo: Zoo,
    tmp_path: Path,
    version: str,
) -> None:
    """A DeepSeek-V3 (and a V3.2, whose indexer picks each query's keys by a top-k) saved
    by transformers (latent attention; a dense layer, then routed experts, each expert's
    own weights, and a shared expert) becomes an entry with transformers' logits; a copy
    with its heads, latents, units and experts permuted compares with it at distance 0."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = DEEPSEEK_CONFIG | (DEEPSEEK_V32 if version == "V32" else {})
    values = {k: v for k, v in config.items() if k != "model_type"}
    made = getattr(transformers, f"Deepseek{version}Config")(**values)
    library = getattr(transformers, f"Deepseek{version}ForCausalLM")(made).eval()
    folder = tmp_path / "deepseek"
    library.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    held = load(files["model.safetensors"])
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in held  # one file entry each
    hub.commit("deepseek/tiny", files)
    entry = add_from_hub(zoo, "hf://deepseek/tiny", **options, dataset="grammar")
    assert entry.architecture == f"hf-transformers/{config['model_type']}"
    spec = _library_logits_and_a_copy_at_distance_zero(zoo, entry, library)
    assert any(g.name.endswith("self_attn.q_b_proj@4") and g.heads_only for g in spec.groups)


def test_transformers_repo_is_checked_before_it_is_read(
    transformers_hub: FakeHub, zoo: Zoo, options: dict[str, Any]
) -> None:
    """A header that does not fit the config is refused before any tensor is read, the zoo
    unchanged; with --trust-remote-code a config naming the repository's code builds
    transformers' own GPT-2 (the repository's code, which would exit, never runs)."""
    assert len(zoo) == 0  # the index is open (SQLite's -wal/-shm files exist) from here on
    before = _snapshot(zoo.root)
    with pytest.raises(SpecMismatchError, match=r"`transformer.wte.weight` has shape \[65, 16\]"):
        add_from_hub(zoo, "hf://lab/gpt2-bad", **options)
    assert len(zoo) == 0 and _snapshot(zoo.root) == before
    entry = add_from_hub(zoo, "hf://lab/gpt2-code", trust_remote_code=True, **options)
    assert entry.architecture == "hf-transformers/gpt2"


def test_remote_code_is_refused_without_the_flag(
    hub: FakeHub, zoo: Zoo, options: dict[str, Any]
) -> None:
    """A config naming the repository's own code (auto_map) is refused unless
    trust_remote_code, before any weights are downloaded; the zoo is unchanged."""
    code = {**GPT2_CONFIG, "auto_map": {"AutoModel": "modeling_tiny.TinyModel"}}
    hub.commit(
        "lab/code-only",
        {
            "config.json": _config_bytes(code),
            "modeling_tiny.py": b"raise SystemExit('the repository code ran')\n",
        },
    )
    assert len(zoo) == 0
    before = _snapshot(zoo.root)
    with pytest.raises(UntrustedCodeError, match=r"modeling_tiny\.TinyModel.*--trust-remote-code"):
        add_from_hub(zoo, "hf://lab/code-only", **options)
    assert _snapshot(zoo.root) == before


# `canon` as the shell runs it, with torchvision's op schemas defined first where this
# torch build needs them (tests/vision_models.py): timm imports torchvision
_CANON = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from vision_models import vision; "
    "vision(); from canon.cli import main; main()"
)


def _canon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CANON, str(Path(__file__).parent), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.slow  # two `canon` processes; the in-process adds stay fast
def test_cli_add_from_hub_and_offline_readd(hub: FakeHub, tmp_path: Path) -> None:
    """`canon add hf://...` from the shell, then again with HF_HUB_OFFLINE=1 from the cache
    alone (no request reaches the Hub)."""
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}
    cache = str(tmp_path / "hf-cache")
    for folder in ("online", "offline"):
        Zoo.open(tmp_path / folder).close()
    add = ["add", "hf://lab/resnet", "--cache-dir", cache, "--tag", "origin=hub", "--json"]
    done = _canon(*add, "--zoo", str(tmp_path / "online"), env=env)
    assert done.returncode == 0, done.stderr
    online = json.loads(done.stdout)["entry"]
    assert online["architecture"] == "timm/resnet18"
    assert online["tags"]["hf.revision"] == hub.head("lab/resnet")
    assert online["tags"]["origin"] == "hub"

    requests = sum(hub.requests.values())
    offline_env = {**env, "HF_HUB_OFFLINE": "1"}
    done = _canon(*add, "--zoo", str(tmp_path / "offline"), env=offline_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entry"]["id"] == online["id"]
    assert sum(hub.requests.values()) == requests

    done = _canon("add", "hf://lab/resnet", "--arch", "mlp", "--zoo", str(tmp_path / "x"), env=env)
    assert done.returncode == 1
    assert "does not apply to hf:// models" in done.stderr


def test_names_the_library_converts_are_refused(libraries: None) -> None:
    """A checkpoint name that transformers builds other tensors from when it loads
    (DINOv2's fused SwiGLU input, split into gate and up projections) is refused with
    what to do; a name it only renames is renamed; the model's own names stay."""
    config = {
        "model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "image_size": 16, "patch_size": 8,
    }  # fmt: skip
    layout = library_layout(build_model("hf-transformers/dinov2", {"config": config}))
    expected = {"encoder.layer.0.norm1.weight": None, "encoder.LayerNorm.weight": None}
    assert layout.name_in("encoder.layer.0.norm1.weight", expected) in expected
    # transformers' own renaming of older files' names (a LayerNorm's `gamma`)
    assert layout.name_in("encoder.LayerNorm.gamma", expected) == "encoder.LayerNorm.weight"
    with pytest.raises(CheckpointFormatError, match="converted by the library"):
        layout.name_in("encoder.layer.0.mlp.weights_in.weight", expected)
