"""Hugging Face transformers' own models (GPT-2, BERT, ViT, a Llama-style decoder with
grouped-query attention and rotary embeddings) and timm's ViT, built from a config.json
through canon's adapters, with random weights (nothing is downloaded).

Their forwards defeat torch.fx's symbolic tracer, so canon records their graph by running
them once (canon.core.record). For each: random symmetries keep the logits, and the
canonical form of a symmetric copy is the canonical form of the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from nets import assert_symmetries_keep_the_function, randomize, state_of
from torch import Tensor, nn
from vision_models import vision

from canon.architectures import build_model, library_layout
from canon.core import (
    Spec,
    apply_alignment,
    canonicalize,
    match_incoming,
    match_weights,
    matching,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.trace import load_into
from canon.engine import find_alignment
from canon.service import create_app

# transformers takes seconds to import on a fresh worker: the fast loop leaves these to CI
pytestmark = pytest.mark.slow

TINY: dict[str, dict[str, Any]] = {
    "gpt2": {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": 2, "n_embd": 16, "n_head": 4, "vocab_size": 40, "n_positions": 12,
        "bos_token_id": 0, "eos_token_id": 0,
    },
    "bert": {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 12,
        "num_labels": 3,
    },
    "vit": {
        "model_type": "vit",
        "architectures": ["ViTForImageClassification"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "intermediate_size": 32, "image_size": 16, "patch_size": 4, "num_labels": 3,
    },
    "llama": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 32, "vocab_size": 40,
        "max_position_embeddings": 12,
    },
}  # fmt: skip
TIMM_VIT: dict[str, Any] = {
    "architecture": "vit_tiny_patch16_224",
    "num_classes": 5,
    "model_args": {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 3},
    "pretrained_cfg": {"input_size": [3, 16, 16]},
}


def _architecture(kind: str) -> tuple[str, dict[str, Any]]:
    if kind == "timm-vit":
        return "timm/vit_tiny_patch16_224", {"config": TIMM_VIT}
    return f"hf-transformers/{kind}", {"config": TINY[kind]}


@pytest.fixture(scope="module")
def libraries() -> None:
    vision()  # transformers and timm import torchvision: its op schemas first


@pytest.fixture(scope="module", params=[*TINY, "timm-vit"])
def case(request: pytest.FixtureRequest, libraries: None) -> tuple[str, nn.Module, Spec]:
    architecture, config = _architecture(request.param)
    model = build_model(architecture, config).double().eval()
    return request.param, model, spec_from_module(model)


def _random(spec: Spec, seed: int) -> dict[str, Tensor]:
    """Every tensor of the spec redrawn (norm affines too, so that no unit is special); a
    BatchNorm's running variances positive, its step counter an integer."""
    gen = torch.Generator().manual_seed(seed)
    drawn = {
        t.name: torch.randn(t.shape, generator=gen, dtype=torch.float64) * 0.5 for t in spec.tensors
    }
    for name in drawn:
        if name.endswith("running_var"):
            drawn[name] = drawn[name].abs() + 0.5
        elif name.endswith("num_batches_tracked"):
            drawn[name] = torch.zeros((), dtype=torch.int64)
    return drawn


def _inputs(model: nn.Module, n: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(0)
    shape = tuple(model.input_shape)
    if getattr(model, "main_input_name", None) == "input_ids":
        return torch.randint(0, 40, (n, *shape), generator=gen)
    return torch.randn((n, *shape), generator=gen, dtype=torch.float64)


def _logits(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    load_into(model, state)
    with torch.no_grad():
        out = model(x)
    logits: Tensor = out if isinstance(out, Tensor) else out.logits
    return logits


def _relative(y: Tensor, y_ref: Tensor) -> float:
    """The relative gap between two logit tensors up to one positive factor (the output
    layer's global scale, which canon normalizes)."""
    return float((y / y.norm() - y_ref / y_ref.norm()).norm())


def _gap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a)


def _keeps_its_function(model: nn.Module, spec: Spec) -> None:
    """A random symmetry and the canonical form keep the logits of random weights, and the
    canonical forms of the weights and of their moved copy agree."""
    state = _random(spec, 0)
    x = _inputs(model)
    y = _logits(model, state, x)
    copy = random_symmetry(state, spec, seed=1)
    assert _relative(_logits(model, copy, x), y) < 1e-4
    aligned = canonicalize(copy, spec, reference=state, method="weight")
    assert _gap(aligned, canonicalize(state, spec, reference=state, method="weight")) < 1e-5
    assert _relative(_logits(model, aligned, x), y) < 1e-4


def test_structure_is_derived(case: tuple[str, nn.Module, Spec]) -> None:
    """Two linked attention groups per layer; rotary embeddings (llama) pin the query/key
    dimensions, so only whole heads move there; GPT-2's output layer is its tied token
    embedding (listed once, its scale not normalized), and its Conv1D projections are
    canon's linear layers (the library's files hold them transposed)."""
    kind, model, spec = case
    attention = [g for g in spec.groups if g.link]
    assert len(attention) == 4  # 2 layers x (queries/keys, values/output)
    queries_keys = attention[0::2]
    if kind == "llama":
        assert all(g.heads_only and g.symmetry == "none" for g in queries_keys)
        assert [g.size for g in queries_keys] == [8, 8]  # 2 key heads of 4 dimensions
    else:
        assert all(not g.heads_only and g.symmetry == "linear" for g in queries_keys)
    layout = library_layout(model)
    if kind == "gpt2":
        assert spec.output is None and layout.tied == {"lm_head.weight"}
        assert "lm_head.weight" not in spec.tensor_info
        assert "transformer.h.0.attn.c_attn.weight" in layout.transposed
    else:
        assert spec.output is not None and not layout.transposed
    if kind == "timm-vit":  # class token and position embedding ride on the stream
        carried = {c.name: c.axis for c in spec.group("patch_embed.proj").carried}
        assert (carried["cls_token"], carried["pos_embed"]) == (2, 2)


def test_symmetries_keep_the_function_and_canonical_forms_agree(
    case: tuple[str, nn.Module, Spec],
) -> None:
    """random_symmetry keeps the logits (1e-4 relative; llama's RMSNorm computes in
    float32); the canonical form of the copy, aligned to the original by weight matching,
    is the original's canonical form (1e-5), and computes the same function."""
    _, model, spec = case
    state = _random(spec, 0)
    x = _inputs(model)
    y = _logits(model, state, x)
    for seed in (1, 2):
        copy = random_symmetry(state, spec, seed=seed)
        assert _relative(_logits(model, copy, x), y) < 1e-4
        aligned = canonicalize(copy, spec, reference=state, method="weight")
        assert _gap(aligned, canonicalize(state, spec, reference=state, method="weight")) < 1e-5
        assert _relative(_logits(model, aligned, x), y) < 1e-4


def _decoder(model_type: str, architecture: str, **extra: Any) -> dict[str, Any]:
    """A tiny decoder's config.json: 2 layers of width 16, 4 heads, 40 tokens, windows
    of up to 12, and ``extra`` (grouped-query heads, rotary settings...)."""
    return {
        "model_type": model_type, "architectures": [architecture],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 12, **extra,
    }  # fmt: skip


GROUPED = {"num_key_value_heads": 2}  # two key/value heads for four query heads
_TOWER = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "image_size": 16, "patch_size": 8,
}  # fmt: skip
# embeddings whose own forward canon follows: Gemma's scaled token embedding (a one-number
# scale held as a plain tensor), OPT's learned positions (offset, read through the mask)
MORE: dict[str, dict[str, Any]] = {
    "gemma": _decoder("gemma", "GemmaForCausalLM", **GROUPED, head_dim=4),
    "convnext": {  # its own LayerNorm, over the channels of NCHW tensors
        "model_type": "convnext",
        "architectures": ["ConvNextForImageClassification"],
        "num_channels": 3, "hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2,
        "image_size": 32, "num_labels": 3, "patch_size": 4,
    },
    "convnextv2": {  # ConvNeXt V2: a global response norm (GRN) in every block
        "model_type": "convnextv2",
        "architectures": ["ConvNextV2ForImageClassification"],
        "num_channels": 3, "hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2,
        "image_size": 32, "num_labels": 3, "patch_size": 4,
    },
    "opt": {
        "model_type": "opt",
        "architectures": ["OPTForCausalLM"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4, "ffn_dim": 32,
        "vocab_size": 40, "max_position_embeddings": 12, "word_embed_proj_dim": 16,
    },
    # DeiT's class and distillation heads, averaged: no output layer to scale
    "deit-distilled": {
        "model_type": "deit", "architectures": ["DeiTForImageClassificationWithTeacher"],
        "image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 32, "num_labels": 3,
    },
    # a masked-LM head whose state dict keeps the tied table under the output layer's name
    "xlm-roberta": {
        "model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 20,
        "pad_token_id": 0,
    },
    # image classifiers on a vision tower, its size in `vision_config`; SigLIP's tower
    # runs its pooling head (a probe attending to the tokens), which the classifier drops
    "siglip": {
        "model_type": "siglip", "architectures": ["SiglipForImageClassification"],
        "vision_config": _TOWER, "text_config": {**_TOWER, "vocab_size": 40}, "num_labels": 3,
    },
    # DINOv2 with registers: the mask token cast to the patches' dtype, chosen by where
    "dinov2_with_registers": {
        "model_type": "dinov2_with_registers",
        "architectures": ["Dinov2WithRegistersForImageClassification"], "image_size": 16,
        "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 32, "num_labels": 3,
    },
    "clip": {
        "model_type": "clip", "architectures": ["CLIPForImageClassification"],
        "vision_config": _TOWER, "text_config": {**_TOWER, "vocab_size": 40}, "num_labels": 3,
    },
    # partial rotary embeddings: only the first half of each head's dimensions turn
    "stablelm": _decoder(
        "stablelm", "StableLmForCausalLM", num_key_value_heads=4, partial_rotary_factor=0.5
    ),
    "phi": _decoder("phi", "PhiForCausalLM", partial_rotary_factor=0.5),
    # a fused projection interleaving queries, keys and values head by head (chunked,
    # or picked from a (heads, 3, d) view), partial rotary; per-head query/key norms
    "gpt_neox": _decoder(
        "gpt_neox", "GPTNeoXForCausalLM", rotary_pct=0.5, partial_rotary_factor=0.5
    ),
    "persimmon": _decoder("persimmon", "PersimmonForCausalLM", partial_rotary_factor=0.5),
    "qwen3": _decoder("qwen3", "Qwen3ForCausalLM", **GROUPED, head_dim=4),
    # eager grouped-query attention: key/value heads repeated before q @ k^T (repeat_kv)
    "llama-eager": _decoder(
        "llama", "LlamaForCausalLM", **GROUPED, attn_implementation="eager"
    ),
    # a fused projection sliced into queries, keys and values; gate/up chunked
    "phi3": _decoder("phi3", "Phi3ForCausalLM", **GROUPED, pad_token_id=0),
    # eager attention: repeat_kv, soft-capped scores and soft-capped logits
    "gemma2": _decoder("gemma2", "Gemma2ForCausalLM", **GROUPED, head_dim=4),
    # norms over the whole query and key projections, grouped-query attention
    "olmo2": _decoder("olmo2", "Olmo2ForCausalLM", **GROUPED),
    "gpt_neo": {  # scores masked by torch.where, computed in float32
        "model_type": "gpt_neo",
        "architectures": ["GPTNeoForCausalLM"],
        "num_layers": 2, "hidden_size": 16, "num_heads": 4, "intermediate_size": 32,
        "vocab_size": 40, "max_position_embeddings": 12, "window_size": 4,
        "attention_types": [[["global", "local"], 1]],
    },
    # rotary embeddings that turn neighbouring pairs (rotate_every_two)
    "gptj": {
        "model_type": "gptj",
        "architectures": ["GPTJForCausalLM"],
        "n_layer": 2, "n_embd": 16, "n_head": 4, "rotary_dim": 2, "n_positions": 12,
        "vocab_size": 40, "bos_token_id": 0, "eos_token_id": 0,
    },
    "codegen": {
        "model_type": "codegen",
        "architectures": ["CodeGenForCausalLM"],
        "n_layer": 2, "n_embd": 16, "n_head": 4, "rotary_dim": 2, "n_positions": 12,
        "n_ctx": 12, "vocab_size": 40, "bos_token_id": 0, "eos_token_id": 0,
    },
    "cohere": _decoder(
        "cohere", "CohereForCausalLM", **GROUPED, bos_token_id=0, eos_token_id=0
    ),
    "mpt": {  # ALiBi: a per-head bias on the scores keeps the heads in place
        "model_type": "mpt",
        "architectures": ["MptForCausalLM"],
        "n_layers": 2, "d_model": 16, "n_heads": 4, "expansion_ratio": 2, "max_seq_len": 12,
        "vocab_size": 40,
    },
    "gpt_bigcode": {  # multi-query attention: one key/value head split off after unsqueeze
        "model_type": "gpt_bigcode",
        "architectures": ["GPTBigCodeForCausalLM"],
        "n_layer": 2, "n_embd": 16, "n_head": 4, "n_positions": 12, "vocab_size": 40,
        "multi_query": True,
    },
    "gemma3_text": _decoder(
        "gemma3_text", "Gemma3ForCausalLM", **GROUPED, head_dim=4, sliding_window=4
    ),
    # FalconLinear layers; Falcon-7B's multi-query view (heads + 2, d) with rotary, and
    # Falcon-RW's ALiBi over a (heads, 3, d) view
    "falcon": _decoder(
        "falcon", "FalconForCausalLM", new_decoder_architecture=False, multi_query=True
    ),
    # BEiT: a relative position bias per head, gathered from a table (heads in place),
    # and layer scales
    "beit": {
        "model_type": "beit", "architectures": ["BeitForImageClassification"],
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 32, "image_size": 16, "patch_size": 8, "num_labels": 3,
        "use_relative_position_bias": True, "layer_scale_init_value": 0.1,
    },
    # ALiBi added by baddbmm with the batch and heads merged into one axis
    "bloom": _decoder("bloom", "BloomForCausalLM"),
    # Falcon-40B's newer layout: each key/value group's query heads, key and value
    "falcon-grouped": _decoder(
        "falcon", "FalconForCausalLM", new_decoder_architecture=True, num_kv_heads=2
    ),
    "falcon-alibi": _decoder(
        "falcon", "FalconForCausalLM", new_decoder_architecture=False, multi_query=False,
        alibi=True,
    ),
    # norms known by their class name: nanochat's without a weight (and logits
    # soft-capped after an output layer of its own), Nemotron's LayerNorm1P (weight + 1),
    # Gemma 4's over each value head without a weight (its values' dimensions pinned)
    "nanochat": _decoder("nanochat", "NanoChatForCausalLM", **GROUPED),
    # Apertus's xIELU: an activation with two learned numbers shared by every unit
    "apertus": _decoder("apertus", "ApertusForCausalLM", **GROUPED),
    "nemotron": _decoder("nemotron", "NemotronForCausalLM", **GROUPED),
    "gemma4_text": _decoder(
        "gemma4_text", "Gemma4ForCausalLM", **GROUPED, head_dim=4, global_head_dim=4,
        hidden_size_per_layer_input=0, sliding_window=4, pad_token_id=0, bos_token_id=0,
        eos_token_id=0,
    ),
    # Gemma 4's per-layer inputs (E2B's, E4B's): a second token table and a projection of
    # the stream, viewed per layer, normed alike and summed, each layer gating its slice
    # into the stream; the slices' units stay in place
    "gemma4_text-ple": _decoder(
        "gemma4_text", "Gemma4ForCausalLM", **GROUPED, head_dim=4, global_head_dim=4,
        hidden_size_per_layer_input=4, vocab_size_per_layer_input=40, sliding_window=4,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    ),
}  # fmt: skip
PARTIAL = {"stablelm", "phi", "gpt_neox", "gptj", "codegen"}
ROTARY = {
    "gemma", "stablelm", "phi", "gpt_neox", "persimmon", "qwen3", "llama-eager", "gemma3_text",
    "phi3", "gemma2", "olmo2", "gptj", "codegen", "cohere", "falcon-grouped", "nanochat",
    "nemotron", "gemma4_text", "gemma4_text-ple", "apertus",
}  # fmt: skip
# a norm over each value head: their dimensions pinned too
VALUES_NORMED = {"gemma4_text", "gemma4_text-ple"}
# rotary, but one key/value head: nothing of the query/key dimensions moves (no heads_only)
ONE_HEAD = {"gpt_bigcode", "falcon"}


@pytest.mark.parametrize("kind", sorted(MORE))
def test_library_layers_with_their_own_forward_keep_the_function(
    libraries: None, kind: str
) -> None:
    """Gemma and OPT trace (their embeddings' forwards call F.embedding on their own
    tables), ConvNext (its LayerNorm normalizes the channels, not the last axis), and
    StableLM and Phi (a partial rotary embedding turns a slice of each head, which pins
    the turned dimensions in their heads; the passed ones stay free), GPT-NeoX and
    Persimmon (a fused projection whose rows interleave queries, keys and values head by
    head), Qwen3 and Gemma 3 (a
    norm over each head's query and key dimensions), an eager Llama (key/value heads
    repeated for their query heads), Gemma 2 (those, with a tanh soft-capping its scores
    and its logits, whose output layer is its tied embedding) and Phi-3 (its fused
    projection sliced), OLMo 2 (a norm over all its query and over all its key units) and
    GPT-Neo (scores masked by torch.where), GPT-J, CodeGen and Cohere (rotary embeddings
    that turn neighbouring pairs), MPT (ALiBi: its heads stay in place) and GPT-BigCode
    (multi-query attention), and Falcon (its FalconLinear layers are nn.Linear; multi-query
    heads picked from a (heads + 2, d) view by lists and broadcast; the newer layout's
    (groups, heads per group + 2, d) view; ALiBi) and BLOOM (ALiBi
    added by baddbmm over the batch and heads merged) and BEiT (a relative position bias
    gathered from a table), XLM-RoBERTa's masked-LM head (a tie the state dict keeps
    under the output layer's name), nanochat, Nemotron and Gemma 4 (norms without a
    weight or with weight + 1), Apertus (an activation with learned numbers) and DeiT
    with its distillation head (two output layers averaged); symmetries keep the logits
    and canonical forms agree."""
    config = MORE[kind]
    model = build_model(f"hf-transformers/{config['model_type']}", {"config": config})
    model = model.double().eval()
    spec = spec_from_module(model)
    # no attention; heads kept in place; one key/value head (no order of heads to share)
    in_place = ("mpt", "falcon-alibi", "bloom", "beit")  # a per-head term on the scores
    unlinked = kind.startswith("convnext") or kind in in_place or kind in ONE_HEAD
    # a partial rotary embedding's passed dimensions: a third group per attention layer
    linked = 0 if unlinked else 6 if kind in PARTIAL else 4
    assert sum(1 for g in spec.groups if g.link) == linked
    if kind in in_place:
        assert sum(1 for g in spec.groups if (g.heads, g.blocks) == (1, 4)) == 4
    if kind == "falcon":  # rotary pins the one key head's dimensions: each is its own block
        qk = [g for g in spec.groups if g.name.endswith("query_key_value@16")]
        assert [(g.symmetry, g.blocks) for g in qk] == [("none", 4)] * 2
    pinned = 4 if kind in VALUES_NORMED else 2 if kind in ROTARY else 0
    assert sum(1 for g in spec.groups if g.heads_only) == pinned
    if kind in ("nanochat", "gemma4_text", "gemma4_text-ple", "deit-distilled"):
        assert spec.output is None
    _keeps_its_function(model, spec)


_SWIN = {"embed_dim": 8, "depths": [2, 2], "num_heads": [2, 2], "patch_size": 2}
_T5 = {"vocab_size": 40, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 4}
WINDOWED: dict[str, tuple[str, dict[str, Any]]] = {
    # windows of 3 over an 8 x 8 grid: padded; every second block shifted; patch merging
    "swin": ("hf-transformers/swin", {
        "model_type": "swin", "architectures": ["SwinForImageClassification"], **_SWIN,
        "window_size": 3, "image_size": 16, "num_labels": 3,
    }),
    # cosine attention, per-head logit scales, a bias from an MLP over coordinates
    "swinv2": ("hf-transformers/swinv2", {
        "model_type": "swinv2", "architectures": ["Swinv2ForImageClassification"], **_SWIN,
        "window_size": 2, "image_size": 16, "num_labels": 3,
    }),
    # timm's: nn.Softmax, scores viewed per window for the mask, merging by a view
    "timm-swin": ("timm/swin_tiny_patch4_window7_224", {
        "architecture": "swin_tiny_patch4_window7_224", "num_classes": 3,
        "model_args": {**_SWIN, "window_size": 2, "img_size": 16},
        "pretrained_cfg": {"input_size": [3, 16, 16]},
    }),
    # timm's: the fused projection's bias joined from q_bias, zeros and v_bias as it runs
    "timm-swinv2": ("timm/swinv2_tiny_window8_256", {
        "architecture": "swinv2_tiny_window8_256", "num_classes": 3,
        "model_args": {**_SWIN, "window_size": 2, "img_size": 16},
        "pretrained_cfg": {"input_size": [3, 16, 16]},
    }),
    "timm-beit": ("timm/beit_base_patch16_224", {
        "architecture": "beit_base_patch16_224", "num_classes": 3,
        "model_args": {"embed_dim": 16, "depth": 2, "num_heads": 2, "img_size": 16,
                       "patch_size": 8},
        "pretrained_cfg": {"input_size": [3, 16, 16]},
    }),
    # a relative position bias looked up by bucket, broadcast by expand
    "mpnet": ("hf-transformers/mpnet", {
        "model_type": "mpnet", "architectures": ["MPNetForSequenceClassification"],
        "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 4,
        "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 12,
    }),
    # the bias looked up by bucket in the first layer and reused; the encoder reads the
    # shared token table by its own name; a gated MLP
    "t5": ("hf-transformers/t5", {
        "model_type": "t5", "architectures": ["T5ForTokenClassification"], **_T5,
        "feed_forward_proj": "gated-gelu",
    }),
    "umt5": ("hf-transformers/umt5", {  # a bias table in every layer
        "model_type": "umt5", "architectures": ["UMT5ForTokenClassification"], **_T5,
    }),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(WINDOWED))
def test_windowed_and_bucketed_attention_keeps_the_function(libraries: None, kind: str) -> None:
    """Swin and Swin V2 (transformers' and timm's): padded and shifted windows, patch
    merging; timm's BEiT: a relative position bias, and (with timm's Swin V2) the fused
    projection's bias joined from parts as it runs; MPNet, T5 and UMT5 encoders: a
    relative position bias looked up by bucket. The bias tables (and Swin V2's MLP and
    logit scales) are in no group, and the heads stay in place; symmetries keep the
    logits and canonical forms agree."""
    architecture, config = WINDOWED[kind]
    model = build_model(architecture, {"config": config}).double().eval()
    spec = spec_from_module(model)
    grouped = {t.name for g in spec.groups for t in g.tensors}
    fixed = {
        t.name
        for t in spec.tensors
        if any(p in t.name for p in ("relative", "position_bias", "logit_scale", "cpb"))
    }
    assert fixed and not fixed & grouped
    joined = {"timm-beit": "blocks.0.attn.q_bias", "timm-swinv2": "layers.0.blocks.0.attn.q_bias"}
    if kind in joined:  # q_bias and v_bias: each its part's bias, from its entry 0
        biases = {p.bias: p.bias_start for g in spec.groups for p in g.producers}
        assert biases[joined[kind]] == 0
    if "swin" in kind:  # patch merging: the reduction reads each unit four times
        reads = [o for g in spec.groups for o in g.outgoing if "reduction" in o.name]
        assert reads and all(o.repeat == 4 and o.head > 1 for o in reads)
    assert not any(g.link for g in spec.groups)  # the bias differs between heads
    _keeps_its_function(model, spec)


_SCAN = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3}
_MAMBA2 = {"n_groups": 1, "num_heads": 4, "head_dim": 8, "chunk_size": 4}
_HYBRID_MAMBA = {
    "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_d_state": 4, "mamba_n_groups": 1,
    "mamba_d_conv": 3, "mamba_chunk_size": 4,
}  # fmt: skip
SCANS: dict[str, tuple[str, dict[str, Any]]] = {
    "mamba": ("MambaForCausalLM", {"state_size": 4, "conv_kernel": 3, "time_step_rank": 4}),
    "falcon_mamba": (
        "FalconMambaForCausalLM", {"state_size": 4, "conv_kernel": 3, "time_step_rank": 4},
    ),
    "mamba2": ("Mamba2ForCausalLM", {"state_size": 4, "conv_kernel": 3, **_MAMBA2}),
    "jamba": ("JambaForCausalLM", {
        "mamba_d_state": 4, "mamba_d_conv": 3, "mamba_dt_rank": 4, "num_experts": 2,
        "num_experts_per_tok": 1, "attn_layer_period": 2, "attn_layer_offset": 1,
        "expert_layer_period": 2, "expert_layer_offset": 1, "use_mamba_kernels": False,
    }),
    "nemotron_h": ("NemotronHForCausalLM", {
        "hybrid_override_pattern": "M*", "mamba_num_heads": 4, "mamba_head_dim": 8,
        "ssm_state_size": 4, "n_groups": 1, "conv_kernel": 3, "chunk_size": 4,
    }),
    "bamba": ("BambaForCausalLM", {**_HYBRID_MAMBA, "attn_layer_indices": [1]}),
    # one shared attention block at every hybrid layer, reading the stream joined with a
    # copy of the embeddings (``torch.clone``, ``torch.concatenate``)
    "zamba2": ("Zamba2ForCausalLM", {
        "mamba_d_state": 4, "mamba_d_conv": 3, "mamba_expand": 2, "mamba_ngroups": 1,
        "mamba_headdim": 8, "n_mamba_heads": 4, "chunk_size": 4, "num_hidden_layers": 4,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"], "num_mem_blocks": 2,
        "adapter_rank": 4, "attention_head_dim": 8, "head_dim": 8, "use_mem_rope": True,
    }),
    # per-channel multipliers (a plain tensor, not in its files) on what its scan reads
    "falcon_h1": ("FalconH1ForCausalLM", {**_HYBRID_MAMBA, "mamba_d_ssm": 32}),
    "granitemoehybrid": ("GraniteMoeHybridForCausalLM", {
        **_HYBRID_MAMBA, "layer_types": ["mamba", "attention"], "num_local_experts": 2,
        "num_experts_per_tok": 1,
    }),
    "kimi_linear": ("KimiLinearForCausalLM", {
        "layer_types": ["linear_attention"] * 2, "mlp_layer_types": ["dense", "sparse"],
        "linear_head_dim": 4, "linear_num_heads": 4, "linear_conv_kernel_dim": 3,
        "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
    }),
}  # fmt: skip


@pytest.mark.parametrize("model_type", sorted(SCANS))
def test_selective_scans_keep_their_units_and_the_function(
    libraries: None, model_type: str
) -> None:
    """State-space and linear-attention layers whose scan transformers runs as one
    function (Mamba's and Mamba-2's selective scans in Mamba, Falcon-Mamba, Jamba,
    Nemotron-H, Bamba, Falcon-H1, Zamba2 and Granite 4 hybrids; Kimi Linear's delta
    attention): recorded
    whole, every unit the scan reads stays where it is (so do the decay's parameters and
    the time step's projection, ``dt_proj.weight @ x``, refused anywhere else); the
    residual stream, MLPs, experts and full attention move. Symmetries keep the logits
    and canonical forms agree."""
    architecture, extra = SCANS[model_type]
    config = _decoder(model_type, architecture, **GROUPED, **_SCAN, **extra)
    model = build_model(f"hf-transformers/{model_type}", {"config": config})
    model = model.double().eval()
    spec = spec_from_module(model)
    state = _random(spec, 0)
    moved = random_symmetry(state, spec, seed=1)
    kept = [n for n in state if n.endswith(("A_log", "conv1d.weight"))]
    assert kept and all(torch.equal(moved[n], state[n]) for n in kept)
    assert any(not torch.equal(moved[n], state[n]) for n in state if "embed" in n)
    _keeps_its_function(model, spec)


@pytest.mark.parametrize("name", ["swin_t", "swin_v2_t"])
def test_torchvisions_swin_is_recorded_where_fx_keeps_its_attention_whole(
    libraries: None, name: str
) -> None:
    """torchvision's Swin runs each block's windowed attention in one function that
    torch.fx keeps whole (``torch.fx.wrap``): its graph is recorded from a run instead,
    inside that function too (the shifted windows' mask made by ``x.new_zeros``). The
    relative position bias keeps the heads in place, as in the others' Swin; Swin V2
    zeroes the keys' third of a clone of its fused projection's bias in place before
    each call (the parameter's own third, random here, is never read). Symmetries keep
    the logits and canonical forms agree (both matchings, and activation matching reads
    the recorded graph's points)."""
    torchvision, _ = vision()
    model = randomize(getattr(torchvision.models, name)(num_classes=5).double().eval(), 0)
    spec = spec_from_module(model, (3, 64, 64))
    qkv = spec.group("features.1.0.attn.qkv")
    assert (qkv.heads, qkv.blocks, qkv.link) == (1, 3, "")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_symmetries_keep_the_function(model, spec, state_of(model), x, 1, ("weight", "incoming"))
    state = state_of(model)
    moved = random_symmetry(state, spec, seed=2)
    found = find_alignment(
        normalize(moved, spec), normalize(state, spec), spec, "activation",
        model=model, inputs=x, batch=2, seed=0,
    )  # fmt: skip
    assert found.permutations.keys() == {g.name for g in spec.groups}


def _mixture(model_type: str, architecture: str, **extra: Any) -> dict[str, Any]:
    """A tiny decoder of four experts, two per token (the keys as each library names them:
    ``extra``), two key/value heads."""
    return _decoder(model_type, architecture, **GROUPED, num_experts_per_tok=2, **extra)


MIXTURES: dict[str, dict[str, Any]] = {
    "mixtral": _mixture("mixtral", "MixtralForCausalLM", num_local_experts=4),
    "phimoe": _mixture("phimoe", "PhimoeForCausalLM", num_local_experts=4),
    "granitemoe": _mixture("granitemoe", "GraniteMoeForCausalLM", num_local_experts=4),
    "granitemoeshared": _mixture(
        "granitemoeshared", "GraniteMoeSharedForCausalLM", num_local_experts=4,
        shared_intermediate_size=16,
    ),
    "olmoe": _mixture("olmoe", "OlmoeForCausalLM", num_experts=4, eos_token_id=0),
    "qwen3_moe": _mixture(
        "qwen3_moe", "Qwen3MoeForCausalLM", num_experts=4, moe_intermediate_size=8, head_dim=4
    ),
    # a shared expert whose output a one-unit sigmoid gate scales per token
    "qwen2_moe": _mixture(
        "qwen2_moe", "Qwen2MoeForCausalLM", num_experts=4, moe_intermediate_size=8,
        shared_expert_intermediate_size=16,
    ),
    # a dense first layer, then routed and shared experts (a router with a score bias)
    "glm4_moe": _mixture(
        "glm4_moe", "Glm4MoeForCausalLM", n_routed_experts=4, moe_intermediate_size=8,
        first_k_dense_replace=1, head_dim=4,
    ),
    "dots1": _mixture(
        "dots1", "Dots1ForCausalLM", n_routed_experts=4, moe_intermediate_size=8,
        first_k_dense_replace=1, n_shared_experts=1,
    ),
    # the router a module with a Linear inside
    "hunyuan_v1_moe": _mixture(
        "hunyuan_v1_moe", "HunYuanMoEV1ForCausalLM", num_experts=4, moe_topk=2, head_dim=4
    ),
    # experts with biases, gate and up rows interleaved, a clamped SwiGLU; attention with
    # rotary halves cut by chunk and a sink per head (the heads stay in place)
    "gpt_oss": _mixture("gpt_oss", "GptOssForCausalLM", num_local_experts=4, head_dim=4),
    "flex_olmo": _mixture(
        "flex_olmo", "FlexOlmoForCausalLM", num_experts=4, pad_token_id=0, eos_token_id=0,
        bos_token_id=0,
    ),
    "exaone_moe": _mixture(
        "exaone_moe", "ExaoneMoeForCausalLM", num_experts=4, moe_intermediate_size=8,
        head_dim=4,
    ),
    # the router given a score bias its block holds
    "minimax_m2": _mixture(
        "minimax_m2", "MiniMaxM2ForCausalLM", num_local_experts=4, head_dim=4
    ),
    # experts whose activation is a function (F.silu); a short-convolution layer first
    "lfm2_moe": _mixture(
        "lfm2_moe", "Lfm2MoeForCausalLM", num_experts=4, moe_intermediate_size=8,
        num_dense_layers=1, layer_types=["conv", "full_attention"],
    ),
    "ernie4_5_moe": _mixture(
        "ernie4_5_moe", "Ernie4_5_MoeForCausalLM", moe_num_experts=4, moe_k=2,
        moe_intermediate_size=8, moe_layer_start_index=1,
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MIXTURES))
def test_mixtures_of_experts_keep_the_function(libraries: None, kind: str) -> None:
    """Mixtures of experts (Mixtral's, Qwen's, OLMoE's, GLM-4's...): each layer's experts
    are one group of four blocks, canon's 2-D stacking of the library's 3-D weights (which
    its files hold: ``library_layout``); the router reads the stream, and its rows move
    with the experts' blocks (one link); symmetries keep the logits and canonical forms
    agree (routing included)."""
    model = build_model(f"hf-transformers/{kind}", {"config": MIXTURES[kind]}).double().eval()
    spec = spec_from_module(model)
    experts = [g for g in spec.groups if g.name.endswith(".experts")]
    assert experts and all(g.blocks == 4 for g in experts)
    # the experts move as wholes with their router's rows, unless the routing happens
    # outside the router (ERNIE's score bias is the block's own)
    assert all(g.heads == (1 if kind == "ernie4_5_moe" else 4) for g in experts)
    stacked = {name: how for name, how, _ in library_layout(model).stacked}
    assert {p.weight for g in experts for p in g.producers} <= stacked.keys()
    assert all(stacked[o.name].startswith("down") for g in experts for o in g.outgoing)
    stream, info = spec.groups[0], spec.tensor_info
    routers = {o.name for o in stream.outgoing if info[o.name].shape == (4, 16)}
    assert len(routers) == len(experts)  # one weight row per expert
    rows = {g.weights[0]: g.link for g in spec.groups if g.weights[0] in routers}
    assert rows == {r: g.link for r, g in zip(sorted(routers), experts, strict=True) if g.link}
    _keeps_its_function(model, spec)


@pytest.mark.parametrize(
    "architecture", ["SegformerForImageClassification", "SegformerForSemanticSegmentation"]
)
def test_segformer_keeps_the_function(libraries: None, architecture: str) -> None:
    """SegFormer (keys and values from tokens reduced by a strided convolution; a first
    stage of one head, its queries, keys and values single heads laid out as (batch, 1,
    tokens, d); a segmentation head upsampling every stage and fusing them): a pair of
    attention groups per block, linked where a block has several heads; symmetries keep
    the logits and canonical forms agree."""
    config = {
        "model_type": "segformer", "architectures": [architecture], "num_labels": 3,
        "image_size": 32, "hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 2, 4], "decoder_hidden_size": 16,
    }  # fmt: skip
    model = build_model("hf-transformers/segformer", {"config": config}).double().eval()
    spec = spec_from_module(model)
    assert sum(1 for g in spec.groups if g.link) == 6  # stages of 2 to 4 heads
    first = [g for g in spec.groups if ".stages.0.blocks.0.attention." in g.name]
    attention = sorted((g.name.rpartition(".")[2], g.symmetry) for g in first if g.heads == 1)
    # one head: queries/keys and values/output, no link; the reduced tokens' convolution
    assert attention == [
        ("q_proj", "linear"), ("sequence_reduction", "none"), ("v_proj", "linear")
    ]  # fmt: skip
    _keeps_its_function(model, spec)


def test_pvt_v2_keeps_the_function(libraries: None) -> None:
    """PVT v2 (its image size as height and width; a first stage of one head written as
    ``softmax(q @ k^T) @ v``; keys and values from tokens reduced by a strided
    convolution): symmetries keep the logits and canonical forms agree."""
    config = {
        "model_type": "pvt_v2", "architectures": ["PvtV2ForImageClassification"],
        "num_labels": 3, "image_size": [32, 32], "hidden_sizes": [8, 16, 16, 16],
        "depths": [1, 1, 1, 1], "num_attention_heads": [1, 2, 2, 4],
    }  # fmt: skip
    model = build_model("hf-transformers/pvt_v2", {"config": config}).double().eval()
    assert model.input_shape == (3, 32, 32)
    spec = spec_from_module(model)
    assert sum(1 for g in spec.groups if g.link) == 6  # stages of 2 to 4 heads
    _keeps_its_function(model, spec)


def test_short_convolutions_keep_the_function(libraries: None) -> None:
    """LFM2's short-convolution layers (a projection cut into B, C and x along the
    channels of its transposed output, B * x convolved along the tokens by a causal
    depthwise convolution that a function call runs on the layer's weight, then times C):
    one group of the layer's channels, carried by its three parts' rows, the convolution's
    filters and the output projection's columns; symmetries keep the logits and canonical
    forms agree."""
    config = _decoder(
        "lfm2", "Lfm2ForCausalLM", **GROUPED, layer_types=["conv", "full_attention"],
        block_ff_dim=32, block_auto_adjust_ff_dim=False, conv_L_cache=3,
    )  # fmt: skip
    model = build_model("hf-transformers/lfm2", {"config": config}).double().eval()
    spec = spec_from_module(model)
    (conv,) = [g for g in spec.groups if g.name == "model.layers.0.conv.in_proj"]
    carried = {t.name for t in conv.tensors}
    assert conv.size == 16 and "model.layers.0.conv.conv.weight" in carried
    assert [p.start for p in conv.producers] == [0, 16, 32]  # B, C and x rows
    _keeps_its_function(model, spec)


_DELTA = {
    "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 4,
    "linear_value_head_dim": 4, "linear_conv_kernel_dim": 3, "num_experts": 4,
    "num_experts_per_tok": 2, "moe_intermediate_size": 8, "shared_expert_intermediate_size": 8,
    "pad_token_id": 1,
}  # fmt: skip
_QWEN_INPUTS = {"in_proj_qkvz", "in_proj_ba", "in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b"}
_OLMO_INPUTS = {"q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj"}
# architecture; the layer's projections from the stream, to it, and its gated norm
_DELTA_MODELS = {
    "qwen3_5_text": ("Qwen3_5ForCausalLM", _QWEN_INPUTS, "out_proj", "norm"),
    "qwen3_5_moe_text": ("Qwen3_5MoeForCausalLM", _QWEN_INPUTS, "out_proj", "norm"),
    "qwen3_next": ("Qwen3NextForCausalLM", _QWEN_INPUTS, "out_proj", "norm"),
    "olmo_hybrid": ("OlmoHybridForCausalLM", _OLMO_INPUTS, "o_proj", "o_norm"),
}
_LINEAR_ONLY = ["linear_attention", "linear_attention"]
_HYBRID = ["linear_attention", "full_attention"]


def _delta_model(model_type: str, layers: list[str], kv_heads: int) -> nn.Module:
    config = _decoder(
        model_type, _DELTA_MODELS[model_type][0], num_key_value_heads=kv_heads, head_dim=4,
        layer_types=layers, **_DELTA,
    )  # fmt: skip
    return build_model(f"hf-transformers/{model_type}", {"config": config}).double().eval()


@pytest.mark.parametrize(
    ("model_type", "layers", "kv_heads"),
    [
        ("qwen3_5_text", _LINEAR_ONLY, 2),
        ("qwen3_next", _HYBRID, 2),
        ("qwen3_5_text", _HYBRID, 4),
        ("olmo_hybrid", _HYBRID, 2),
        ("qwen3_5_moe_text", _LINEAR_ONLY, 2),
        ("qwen3_next", _LINEAR_ONLY, 2),
        ("qwen3_5_text", _HYBRID, 2),
    ],
)
def test_gated_delta_rule_and_gated_attention_keep_the_function(
    libraries: None, model_type: str, layers: list[str], kv_heads: int
) -> None:
    """Qwen3.5's, Qwen3-Next's and OLMo Hybrid's linear attention (queries, keys and values
    through a causal depthwise convolution, the gated delta rule recorded as one call, a
    gated norm of its output): every unit the rule reads stays where it is, as do the
    decay's parameters and the output gate (Qwen3-Next's projections interleave them per
    key head, OLMo Hybrid's gate is viewed as rows of one head each: views canon does not
    follow, fine since they are pinned); only the projections from and to the residual
    stream move, along it. Qwen's full attention
    gates its output by the second half of each query head's rows: those rows move with
    the value units they gate (one copy per query head that shares a key/value head),
    only permuted. Symmetries keep the logits and canonical forms agree."""
    model = _delta_model(model_type, layers, kv_heads)
    spec = spec_from_module(model)
    _, inputs, output, norm = _DELTA_MODELS[model_type]
    carried = {t.name for g in spec.groups for t in g.tensors}
    inside = {n.rpartition(".")[0].rpartition(".")[2] for n in carried if ".linear_attn." in n}
    assert output in inside and inside <= {output, *inputs}
    assert any(g.name.startswith("model.layers.0.mlp") for g in spec.groups)
    if layers == _HYBRID and model_type.startswith("qwen"):  # gated full attention
        values = spec.group("model.layers.1.self_attn.v_proj")
        gates = [t for t in values.tensors if t.role == "carried"]
        copies = 4 // kv_heads  # query heads per key/value head
        assert [t.name for t in gates] == ["model.layers.1.self_attn.q_proj.weight"] * copies
        assert all(t.head == 4 and t.stride == 8 * copies for t in gates)
    _keeps_its_function(model, spec)
    state = _random(spec, 0)
    moved = random_symmetry(state, spec, seed=1)
    for name in ("A_log", "dt_bias", "conv1d.weight", f"{norm}.weight"):
        key = f"model.layers.0.linear_attn.{name}"
        assert torch.equal(moved[key], state[key])


# multi-head latent attention (DeepSeek's): queries, keys and values from low-rank latents
# through an RMSNorm; each query head's dimensions cut into those a rotary embedding turns
# (4) and those it does not (4); one rotated key head, a part of the key latent's
# projection, shared by every query head, written with each key head's own part into an
# empty tensor (``copy_``); four key/value heads
_LATENT = {
    "kv_lora_rank": 8, "q_lora_rank": 12, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4,
    "v_head_dim": 4, "num_key_value_heads": 4, "n_routed_experts": 4, "num_experts": 4,
    "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_intermediate_size": 8,
    "n_group": 1, "topk_group": 1,
}  # fmt: skip
_INDEXER = {"index_topk": 4, "index_head_dim": 8, "index_n_heads": 2}
LATENT: dict[str, dict[str, Any]] = {
    # interleaved rotary pairs (``x[..., 0::2]``), routed and shared experts
    "deepseek_v3": _decoder("deepseek_v3", "DeepseekV3ForCausalLM", **_LATENT),
    # rotary halves; queries straight from the stream (no query latent), no experts; the
    # scores as softmax(q @ k^T) @ v
    "deepseek_v3-plain": _decoder(
        "deepseek_v3", "DeepseekV3ForCausalLM",
        **{**_LATENT, "q_lora_rank": None, "rope_interleave": False, "first_k_dense_replace": 2},
        attn_implementation="eager",
    ),
    # a delta-attention layer (recorded whole), then a latent-attention one
    "kimi_linear": _decoder(
        "kimi_linear", "KimiLinearForCausalLM", **_LATENT, **_SCAN,
        layer_types=["linear_attention", "full_attention"], mlp_layer_types=["dense", "sparse"],
        linear_head_dim=4, linear_num_heads=4, linear_conv_kernel_dim=3, num_local_experts=4,
    ),
    # the rotary embedding through complex numbers (``view_as_complex``), no query latent
    "deepseek_v2": _decoder(
        "deepseek_v2", "DeepseekV2ForCausalLM", **{**_LATENT, "q_lora_rank": None}
    ),
    # the joined queries scaled per token (Llama 4's attention temperature)
    "mistral4": _decoder("mistral4", "Mistral4ForCausalLM", **_LATENT),
    "glm4_moe_lite": _decoder("glm4_moe_lite", "Glm4MoeLiteForCausalLM", **_LATENT),
    # sparse attention: an indexer of its own layers picks each query's keys by a top-k
    "deepseek_v32": _decoder("deepseek_v32", "DeepseekV32ForCausalLM", **_LATENT, **_INDEXER),
    # the indexer's rotary pairs interleaved (``k[..., 0::2]``); the second layer reuses
    # the first's choice
    "glm_moe_dsa": _decoder(
        "glm_moe_dsa", "GlmMoeDsaForCausalLM", **_LATENT, **_INDEXER, index_topk_pattern="FS",
        attn_implementation="eager",
    ),
    # a linear-attention layer, then latent attention whose output a unit per head gates
    # (``sigmoid(g_proj(x))``); experts and a shared MLP with clamped gates (Ling 3's)
    "bailing_hybrid": _decoder(
        "bailing_hybrid", "BailingHybridForCausalLM", **_LATENT, pad_token_id=0,
        swiglu_limits=[0, 0.5], swiglu_limits_shared=[0, 0.5],
        layer_types=["linear_attention", "full_attention"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(LATENT))
def test_latent_attention_moves_heads_latents_and_unrotated_dimensions(
    libraries: None, kind: str
) -> None:
    """DeepSeek's latent attention (DeepSeek-V3 and V3.2, Mistral 4, GLM-4.7-Flash, GLM-5...):
    the heads move, one link for the query/key dimensions no rotary embedding turns
    (permuted and scaled against each other), the rotated query dimensions (pinned in their
    heads) and the values with the output's columns; the shared rotated key head stays (its
    rows of the key latent's projection are in no group); the latents permute with their
    norms' weights and the next projection's columns; a sparse attention's indexer keeps
    its layers' outputs in place and moves their inputs. Symmetries keep the logits and
    canonical forms agree."""
    config = LATENT[kind]
    model = build_model(f"hf-transformers/{config['model_type']}", {"config": config})
    model = model.double().eval()
    spec = spec_from_module(model)
    at = f"model.layers.{1 if kind in ('kimi_linear', 'bailing_hybrid') else 0}.self_attn"
    groups = {g.name: g for g in spec.groups}
    queries = f"{at}.q_b_proj" if config["q_lora_rank"] else f"{at}.q_proj"
    unrotated, rotated = groups[queries], groups[f"{queries}@4"]
    values = groups[f"{at}.kv_b_proj@4"]
    assert (unrotated.symmetry, unrotated.heads, rotated.heads) == ("linear", 4, 4)
    assert rotated.heads_only and rotated.symmetry == "none"
    assert unrotated.link == rotated.link == values.link != ""
    assert [o.name for o in unrotated.outgoing] == [f"{at}.kv_b_proj.weight"]  # the keys
    key_latent = f"{at}.kv_a_proj_with_mqa.weight"
    rows = [(g.name, p.start, g.size) for g in spec.groups for p in g.producers]
    assert [r for r in rows if r[0].startswith(f"{at}.kv_a")] == [
        (f"{at}.kv_a_proj_with_mqa", 0, 8)
    ]
    assert any(
        c.name == f"{at}.kv_a_layernorm.weight" for c in groups[f"{at}.kv_a_proj_with_mqa"].carried
    )
    assert key_latent in spec.tensor_info
    if "index_topk" in config:  # the indexer's layers: their outputs stay, their inputs move
        indexer = f"{at}.indexer"
        assert not [g.name for g in spec.groups if g.name.startswith(indexer)]
        moved = {o.name for g in spec.groups for o in g.outgoing}
        assert {f"{indexer}.{n}.weight" for n in ("wq_b", "wk", "weights_proj")} <= moved
    gate = groups.get(f"{at}.g_proj")
    if kind == "bailing_hybrid":  # one unit per head: it moves with its head, only permuted
        assert gate is not None and (gate.size, gate.heads, gate.symmetry) == (4, 4, "none")
        assert gate.heads_only and gate.link == values.link
    _keeps_its_function(model, spec)


def test_a_mixture_read_a_block_at_a_time_keeps_its_function(libraries: None) -> None:
    """A Qwen3-MoE whose layers hold 48 experts of 192 units (9,216 units: above the 8,192
    from which weight matching reads a group's similarity a block at a time, never
    whole): symmetries keep the logits, and a moved copy's canonical form is the
    original's."""
    config = _mixture(
        "qwen3_moe", "Qwen3MoeForCausalLM", num_experts=48, moe_intermediate_size=192, head_dim=4
    )
    model = build_model("hf-transformers/qwen3_moe", {"config": config}).double().eval()
    spec = spec_from_module(model)
    experts = [g for g in spec.groups if g.name.endswith(".experts")]
    assert experts and all(g.size == 48 * 192 > matching.DENSE_UNITS for g in experts)
    _keeps_its_function(model, spec)


# experts whose gate clamps its pre-activations (limits low enough to clamp random ones):
# HY-V4's, the gate clamped, then its activation (HY-V4 itself is refused for its
# hyper-connections, several residual streams); Bailing's, the activation, then clamped
CLAMPED: dict[str, dict[str, Any]] = {
    "hy_v4": _decoder("hy_v4", "HYV4ForCausalLM", **_LATENT, swiglu_limit=0.5, pad_token_id=0),
    "bailing_hybrid": LATENT["bailing_hybrid"],
}  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["mixtral", "qwen2_moe", "granitemoe", "gpt_oss", "hy_v4", "bailing_hybrid"]
)
def test_canons_experts_give_the_librarys_logits(libraries: None, kind: str) -> None:
    """The library's model and canon's (its experts canon's ``StackedExperts``) compute the
    same logits from the same weights, the library's 3-D experts brought into canon's 2-D
    stacking by ``library_layout`` (GPT-OSS's too: rows transposed and interleaved, biases,
    a clamped SwiGLU; HY-V4's and Bailing's clamped gates)."""
    transformers = pytest.importorskip("transformers")
    config = {**MIXTURES, **CLAMPED}[kind]
    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    torch.manual_seed(0)
    built = transformers.AutoConfig.for_model(kind, **values)
    built._experts_implementation = "eager"  # the library's kernels take float32 at most
    library = getattr(transformers, config["architectures"][0])(built).double().eval()
    model = build_model(f"hf-transformers/{kind}", {"config": config}).double().eval()
    layout = library_layout(model)
    state = {k: layout.in_canon(k, v) for k, v in library.state_dict().items()}
    load_into(model, state)
    x = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, library(x).logits)


_ALBERT = {
    "model_type": "albert", "num_hidden_layers": 3, "hidden_size": 16, "num_attention_heads": 4,
    "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 12,
    "embedding_size": 8, "num_labels": 3,
}  # fmt: skip


@pytest.mark.parametrize("head", ["AlbertForMaskedLM", "AlbertForSequenceClassification"])
def test_albert_shares_one_layer_across_depths(libraries: None, head: str) -> None:
    """ALBERT applies one layer at every depth: its groups are listed once. Its token
    table (narrower than the stream) moves with the language-model head's projection,
    whose output layer is that table; under a classifier nothing else makes its units,
    so it stays in place. Symmetries keep the logits and canonical forms agree."""
    config = {**_ALBERT, "architectures": [head]}
    model = build_model("hf-transformers/albert", {"config": config}).double().eval()
    spec = spec_from_module(model)
    assert sum(1 for g in spec.groups if g.link) == 2
    table = "albert.embeddings.word_embeddings.weight"
    moved = {t.name for g in spec.groups for t in g.tensors}
    assert (table in moved) == (head == "AlbertForMaskedLM")
    _keeps_its_function(model, spec)


DINOV2 = {
    "model_type": "dinov2", "architectures": ["Dinov2ForImageClassification"],
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 32, "image_size": 28, "patch_size": 14, "num_labels": 3,
    "layerscale_value": 0.5,
}  # fmt: skip


@pytest.mark.parametrize("swiglu", [False, True])
def test_dinov2_keeps_its_function_on_masked_patches(libraries: None, swiglu: bool) -> None:
    """DINOv2 (layer scales; a SwiGLU MLP or not) reads its mask token only where patches
    are masked: canon gives the model an all-False mask when it has none (the same
    logits, bit for bit), so the graph it records reads the token; the token moves with
    the residual stream, and the classifier's two copies of the stream (the class token,
    the patches' mean) move together. Symmetries and canonical forms keep the logits of
    masked and unmasked inputs."""
    config = {**DINOV2, "use_swiglu_ffn": swiglu}
    model = build_model("hf-transformers/dinov2", {"config": config}).double().eval()
    spec = spec_from_module(model)
    stream = spec.group("dinov2.embeddings.patch_embeddings.projection")
    assert ("dinov2.embeddings.mask_token", 1) in {(c.name, c.axis) for c in stream.carried}
    (read,) = [o for o in stream.outgoing if o.name == "classifier.weight"]
    assert (read.repeat, read.head) == (2, 16)
    state, x = _random(spec, 0), _inputs(model)
    masked = torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    none = torch.zeros_like(masked)
    load_into(model, state)
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x, bool_masked_pos=none).logits)

    def logits(weights: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        load_into(model, weights)
        with torch.no_grad():
            out: Tensor = model(x, bool_masked_pos=mask).logits
        return out

    moved = random_symmetry(state, spec, seed=1)
    aligned = canonicalize(moved, spec, reference=state, method="weight")
    assert not torch.equal(
        moved["dinov2.embeddings.mask_token"], state["dinov2.embeddings.mask_token"]
    )
    for mask in (masked, none):
        y = logits(state, mask)
        for weights in (moved, aligned, normalize(state, spec)):
            assert _relative(logits(weights, mask), y) < 1e-9


def test_incoming_matching_recovers_a_planted_symmetry(case: tuple[str, nn.Module, Spec]) -> None:
    """Alg. 2 alone undoes a random symmetry exactly, the residual stream included: where
    the stream's stem is an embedding (carried, not a producer), its units are matched by
    their slices of the embeddings and norm affines before any block is aligned."""
    _, _, spec = case
    for seed in range(4):
        state = normalize(_random(spec, seed), spec)
        planted = normalize(random_symmetry(state, spec, seed=seed + 10), spec)
        found = match_incoming(planted, state, spec)
        assert _gap(apply_alignment(planted, found, spec), state) < 1e-9


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_weight_matching_recovers_planted_heads_and_dimensions(libraries: None, seed: int) -> None:
    """A tiny GPT-2 against a copy with its heads, dimensions and residual-stream units
    permuted (and rescaled): weight matching finds the permutation that undoes it exactly."""
    model = build_model("hf-transformers/gpt2", {"config": TINY["gpt2"]}).double()
    spec = spec_from_module(model)
    state = normalize(_random(spec, seed), spec)
    planted = normalize(random_symmetry(state, spec, seed=seed + 10), spec)
    found = match_weights(planted, state, spec)
    assert _gap(apply_alignment(planted, found, spec), state) < 1e-9


def test_a_zoo_of_transformers_models_compares_tables_and_serves(
    libraries: None, tmp_path: Path
) -> None:
    """transformers' GPT-2s on `grammar` (16 tokens, windows of 16; the next token is read
    at the last position): added with their errors, compared along the linear and geodesic
    paths (a symmetric copy: geodesic distance 0, the same error all along, by weight and
    by activation matching), tabled by
    barrier and by distance, and served from the cache by `canon serve`'s API."""
    from canon.zoo import Zoo

    architecture = "hf-transformers/gpt2"
    config = {"config": {**TINY["gpt2"], "vocab_size": 16, "n_positions": 16}}
    torch.manual_seed(0)
    model = build_model(architecture, config)
    spec = spec_from_module(model)
    state = {t.name: model.state_dict()[t.name].clone() for t in spec.tensors}
    torch.manual_seed(1)
    other = {k: v.clone() for k, v in build_model(architecture, config).state_dict().items()}
    with Zoo.open(tmp_path / "zoo") as zoo:
        add = {"architecture": architecture, "config": config, "dataset": "grammar"}
        a = zoo.add(state, name="a", **add)
        zoo.add(random_symmetry(state, spec, seed=1), name="b", **add)
        zoo.add(other, name="c", **add)
        assert 0.5 < a.metrics["train_error"] < 1  # untrained: about chance among 16
        result = zoo.compare("a", "b", paths=("linear", "geodesic"), points=3)
        assert result.distances.euclidean_free < 1e-4 < result.distances.euclidean
        geodesic = result.curves["geodesic"].train_error
        assert geodesic[0] == pytest.approx(a.metrics["train_error"])
        assert max(geodesic) - min(geodesic) < 1e-9  # the same function all along
        # activation matching feeds the token ids as integers, as evaluation does
        by_activation = zoo.compare("a", "b", paths=("geodesic",), points=3, method="activation")
        assert by_activation.distances.euclidean_free < 1e-4
        barriers = zoo.barrier_table(path="geodesic", metric="excess", points=3)
        assert barriers.names == ["a", "b", "c"] and barriers.matrix[0, 1] < 1e-9
        assert zoo.barrier_table(metric="euclidean_free").matrix[0, 2] > 0
    request = {"names": ["a", "b", "c"], "path": "geodesic", "metric": "excess", "points": 3}
    with TestClient(create_app(tmp_path / "zoo")) as client:
        served = client.post("/api/table", json=request)
    assert served.status_code == 200  # from the cache: no job
    assert served.json()["matrix"] == barriers.matrix.tolist()


def test_rotary_pairs_do_not_permute(libraries: None) -> None:
    """Why rotary queries/keys move only as whole heads: exchanging two dimension pairs
    (i, i + d/2) of one head in both the query and key rows changes the logits (the pairs
    turn at different frequencies), while exchanging whole key heads with their query heads
    does not."""
    model = build_model("hf-transformers/llama", {"config": TINY["llama"]}).double().eval()
    spec = spec_from_module(model)
    state = _random(spec, 0)
    x = _inputs(model)
    y = _logits(model, state, x)
    attn = "model.layers.0.self_attn"
    d = 4  # head dimension: 16 wide, 4 query heads; 2 key heads share them
    pairs = torch.tensor([1, 0, 3, 2])  # (0, 2) <-> (1, 3) in every head
    swapped = dict(state)
    for name, heads in ((f"{attn}.q_proj.weight", 4), (f"{attn}.k_proj.weight", 2)):
        rows = torch.cat([h * d + pairs for h in range(heads)])
        swapped[name] = state[name][rows]
    assert _relative(_logits(model, swapped, x), y) > 1e-3
    heads = dict(state)
    key_heads = torch.cat([torch.arange(4, 8), torch.arange(0, 4)])
    query_heads = torch.cat([torch.arange(8, 16), torch.arange(0, 8)])
    for name, rows in (
        (f"{attn}.k_proj.weight", key_heads),
        (f"{attn}.q_proj.weight", query_heads),
    ):
        heads[name] = state[name][rows]
    heads[f"{attn}.v_proj.weight"] = state[f"{attn}.v_proj.weight"][key_heads]
    o = f"{attn}.o_proj.weight"
    heads[o] = state[o][:, query_heads]
    assert _relative(_logits(model, heads, x), y) < 1e-6
