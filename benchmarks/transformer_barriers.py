"""Loss and error barriers between two small GPTs trained from different seeds.

Trains two ``gpt`` networks (2 blocks, width 64, 4 heads) on the ``grammar``
dataset (a seeded order-2 Markov language over 16 tokens, windows of 16) with
sgd from seeds 0 and 1, then evaluates the train loss and error along the
straight line between them (``linear``: raw weights), after aligning the
second to the first (``linear_aligned``: heads, dimensions within heads,
signs and the stream and MLP units by weight matching) and along the
geodesic of the canonical forms. The loss barrier is the largest gap, along
the path, between the loss and the straight line between the endpoints'
losses; the README quotes this script's output. ``--model gpt2`` trains
transformers' own GPT-2 of the same size instead (tied output layer; needs
``canon[transformers]``).

    python benchmarks/transformer_barriers.py [--model gpt|gpt2] [--epochs 30] [--lr 0.2]
"""

from __future__ import annotations

import argparse
import time

import torch

import canon
from canon.architectures import build_model
from canon.data import load_dataset
from canon.engine.landscape import path_curve

CONFIG = {"vocab": 16, "context": 16, "width": 64, "heads": 4, "depth": 2}
GPT2 = {
    "config": {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 64,
        "n_head": 4, "vocab_size": 16, "n_positions": 16, "bos_token_id": 0, "eos_token_id": 0,
        # no dropout, as canon's gpt
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    }
}  # fmt: skip
MODELS = {"gpt": ("gpt", CONFIG), "gpt2": ("hf-transformers/gpt2", GPT2)}


def loss_barrier(losses: list[float], x: list[float]) -> float:
    """max over the path of loss(t) - ((1 - t) loss(0) + t loss(1))."""
    first, last = losses[0], losses[-1]
    return max(loss - ((1 - t) * first + t * last) for loss, t in zip(losses, x, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gpt")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--points", type=int, default=17)
    args = parser.parse_args()
    data = load_dataset("grammar")
    architecture, config = MODELS[args.model]
    nets = []
    for seed in (0, 1):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = build_model(architecture, config)
        result = canon.train(
            model, data, "sgd", seed, args.epochs, lr=args.lr, target_error=None, device="cpu"
        )
        nets.append(result.state)
        print(
            f"seed {seed}: train error {result.train_error:.2%}, test error "
            f"{result.test_error:.2%} ({time.perf_counter() - start:.0f} s)"
        )
    model = build_model(architecture, config)
    print(f"{'path':<16} {'loss barrier':>12} {'max error':>9} {'error barrier':>13}")
    for kind in ("linear", "linear_aligned", "geodesic"):
        curve = path_curve(
            nets[0], nets[1], model, data, kind, args.points, "cpu", loss=True, method="weight"
        )
        assert curve.train_loss is not None
        loss = loss_barrier(curve.train_loss, curve.x)
        print(f"{kind:<16} {loss:>12.4f} {curve.barrier:>9.2%} {curve.excess:>13.2%}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
