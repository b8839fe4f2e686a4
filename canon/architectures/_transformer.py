"""A small GPT-style decoder: the transformer family canon ships (DESIGN §3b "Attention").

Radford et al. (2019) at toy scale: token embedding plus a learned position
embedding, ``depth`` pre-LayerNorm blocks of causal multi-head self-attention
and a GELU MLP (4x wide by default), each added to the residual stream, a
final LayerNorm and a linear head. It reads a window of ``context`` token ids
(given as floats, as canon's datasets give every input) and predicts the
next token from the last position, so it trains and evaluates as a
classifier over the ``vocab`` tokens (the ``grammar`` dataset).

``fused`` builds one query-key-value projection per block (GPT-2's
``c_attn``) instead of three; canon derives the same symmetries from both.
``kv_heads`` < ``heads`` gives grouped-query attention (Llama 2/3's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon.architectures._registry import CheckedConfig, Range, Size, register_architecture
from canon.errors import ConfigError

__all__ = ["GPT", "GPTConfig"]

#: The longest window of tokens read.
MAX_CONTEXT = 4096
#: The most blocks.
MAX_DEPTH = 128
#: The most key/value heads.
MAX_HEADS = 4096


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with ``heads`` heads of width ``width // heads``;
    with ``kv_heads`` < ``heads``, grouped-query attention (each key/value head serves
    ``heads // kv_heads`` query heads in a row)."""

    def __init__(self, width: int, heads: int, kv_heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.fused = fused
        kv_width = kv_heads * (width // heads)
        self.sizes = [width, kv_width, kv_width]
        if fused:
            self.qkv = nn.Linear(width, width + 2 * kv_width)
        else:
            self.q = nn.Linear(width, width)
            self.k = nn.Linear(width, kv_width)
            self.v = nn.Linear(width, kv_width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(self.sizes, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        d = width // self.heads
        q = q.view(batch, tokens, self.heads, d).transpose(1, 2)
        k, v = (t.view(batch, tokens, self.kv_heads, d).transpose(1, 2) for t in (k, v))
        if self.kv_heads == self.heads:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out: Tensor = self.proj(y.transpose(1, 2).reshape(batch, tokens, width))
        return out


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self, width: int, heads: int, kv_heads: int, mlp: int, fused: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, kv_heads, fused)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, mlp * width)
        self.act = nn.GELU()
        self.out = nn.Linear(mlp * width, width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        y: Tensor = x + self.out(self.act(self.fc(self.ln2(x))))
        return y


class GPT(nn.Module):
    """Embeddings, ``depth`` blocks, a final LayerNorm and a head on the last position."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab, config.width)
        self.positions = nn.Parameter(torch.randn(1, config.context, config.width) * 0.02)
        self.blocks = nn.Sequential(
            *(
                Block(
                    config.width,
                    config.heads,
                    config.kv_heads or config.heads,
                    config.mlp,
                    config.fused,
                )
                for _ in range(config.depth)
            )
        )
        self.ln = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab)
        self.input_shape = (config.context,)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.tokens(x.long()) + self.positions)
        logits: Tensor = self.head(self.ln(h)[:, -1])
        return logits


@dataclass(frozen=True)
class GPTConfig(CheckedConfig):
    """``vocab`` tokens, windows of ``context``, ``depth`` blocks of ``width`` units in
    ``heads`` heads (``kv_heads`` key/value heads, default ``heads``: fewer is
    grouped-query attention), MLPs ``mlp`` times as wide; ``fused`` query-key-value
    projections."""

    vocab: Size = 16
    context: Annotated[int, Range(1, MAX_CONTEXT)] = 16
    width: Size = 64
    heads: Size = 4
    depth: Annotated[int, Range(1, MAX_DEPTH)] = 2
    mlp: Annotated[int, Range(1, 16)] = 4
    fused: bool = False
    kv_heads: Annotated[int, Range(0, MAX_HEADS)] = 0  # 0: as many as `heads`

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width % self.heads:
            raise ConfigError(
                f"config `width` of `{type(self).__name__}` must be a multiple of `heads` "
                f"({self.heads}), got {self.width}"
            )
        if self.kv_heads and self.heads % self.kv_heads:
            raise ConfigError(
                f"config `heads` of `{type(self).__name__}` must be a multiple of `kv_heads` "
                f"({self.kv_heads}), got {self.heads}"
            )


@register_architecture("gpt", GPTConfig)
def gpt(config: GPTConfig) -> nn.Module:
    """GPT-style decoder (causal attention, pre-LayerNorm), next token from a window."""
    return GPT(config)
