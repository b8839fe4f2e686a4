"""Evaluating a library's model that runs untraced (transformers' language models): its
data batches are sized from the peak of its activations, and it computes the logits of
the last token alone, with the same errors and losses as the plain model's forward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from vision_models import vision

import canon.engine.evaluate as evaluate
from canon.architectures import build_model
from canon.core.paths import linear_path, positions
from canon.engine.evaluate import Evaluator, _PeakBytes, activation_budget

# transformers takes seconds to import on a fresh worker: the fast loop leaves it to CI
pytestmark = pytest.mark.slow

GPT2 = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 16,
    "n_layer": 2,
    "n_head": 2,
    "n_positions": 16,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


class _Steps(nn.Module):
    """Ten additions, each result replacing the last: two of them alive at most."""

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(10):
            x = x + 1
        return x


def test_peak_bytes_counts_what_is_alive_at_once() -> None:
    """The peak of the tensors ops make, each counted until it is let go: ten additions in
    a row hold two results at once (the new one and the one it adds to), not ten."""
    x = torch.zeros(1000)
    with torch.inference_mode(), _PeakBytes() as peak:
        out = _Steps()(x)
    assert peak.peak == 2 * x.numel() * x.element_size()
    assert peak.live == out.numel() * out.element_size()  # the result alone is still held


@pytest.fixture(scope="module")
def lm() -> nn.Module:
    vision()  # transformers' optional torchvision import needs the op schemas first
    pytest.importorskip("transformers")
    return build_model("hf-transformers/gpt2", {"config": {**GPT2, "vocab_size": 4096}})


def test_a_language_model_runs_in_batches_its_activations_fit(
    lm: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPT-2 runs untraced: its batches are sized from its activations' peak (not the whole
    data at once, as before), it computes the last token's logits only, and a path's
    errors and losses are those of its forward run plainly on all the data."""
    torch.manual_seed(0)
    x = torch.randint(0, 4096, (300, 16)).float()
    y = torch.randint(0, 4096, (300,))
    monkeypatch.setattr(evaluate, "ACTIVATION_BYTES", 1 << 20)  # a few windows a batch
    evaluator = Evaluator(lm, x, y, torch.device("cpu"), batch_size=10_000)
    assert not isinstance(evaluator.graph, torch.fx.GraphModule)
    assert evaluator.call_options == {"logits_to_keep": 1}
    with torch.inference_mode(), _PeakBytes() as peak:
        evaluator.graph(x[:1].long(), logits_to_keep=1)
    rows = evaluator.rows()
    assert rows == activation_budget(torch.device("cpu")) // peak.peak
    assert 1 < rows < 100
    a = {k: v.clone() for k, v in lm.state_dict().items()}
    other = copy.deepcopy(lm)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():  # the tied output layer moves with the embedding
            p.add_(0.1 * torch.randn_like(p))
    b = {k: v.clone() for k, v in other.state_dict().items()}
    path = linear_path(a, b, positions(3))
    scores = evaluator.evaluate(path, loss=True)
    plain = build_model("hf-transformers/gpt2", {"config": {**GPT2, "vocab_size": 4096}}).eval()
    for k in range(3):
        plain.load_state_dict(path.state(k), strict=False)
        with torch.inference_mode():
            logits = plain(x.long()).logits[:, -1]
        wrong = (logits.argmax(-1) != y).double().mean()
        loss = nn.functional.cross_entropy(logits.double(), y)
        assert scores.errors[k] == wrong
        assert scores.losses is not None
        assert scores.losses[k] == pytest.approx(float(loss), rel=1e-5)
