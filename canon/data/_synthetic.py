"""Datasets made in memory: scikit-learn's digits, the hidden manifold model, Gaussian blobs."""

from __future__ import annotations

import math

import numpy as np
import torch

from canon.data._checks import check_bool, check_fraction, check_int, check_positive_float
from canon.data._dataset import Dataset, normalize_inputs, split_indices
from canon.data._registry import register_dataset
from canon.errors import DatasetError

__all__: list[str] = []


def _pm1(values: np.ndarray) -> np.ndarray:
    """Sign with ties going to +1, as float32 ±1."""
    return np.where(values >= 0, 1.0, -1.0).astype(np.float32)


@register_dataset("digits")
def _digits(*, test_fraction: float = 0.25, seed: int = 0, image: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits: 1797 samples, 10 classes, no download.

    A seeded random split puts ``round(test_fraction * 1797)`` samples in the test split
    (449 by default). Inputs are standardized per feature (pixel) with train statistics;
    pixels constant on the train split are only centered (they become 0). Input shape is
    ``(64,)``, or ``(1, 8, 8)`` with ``image=True`` (same values, same normalization).
    """
    test_fraction = check_fraction("digits", "test_fraction", test_fraction)
    seed = check_int("digits", "seed", seed, minimum=0)
    image = check_bool("digits", "image", image)
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    x_np, y_np = load_digits(return_X_y=True)
    train_idx, test_idx = split_indices(len(x_np), test_fraction, seed, where="digits")
    x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float64))
    y = torch.from_numpy(np.asarray(y_np, dtype=np.int64))
    x_train, x_test = normalize_inputs(
        x[torch.from_numpy(train_idx)], x[torch.from_numpy(test_idx)], "feature"
    )
    shape: tuple[int, ...] = (1, 8, 8) if image else (64,)
    return Dataset(
        name="digits",
        x_train=x_train.reshape(-1, *shape),
        y_train=y[torch.from_numpy(train_idx)],
        x_test=x_test.reshape(-1, *shape),
        y_test=y[torch.from_numpy(test_idx)],
        num_classes=10,
        input_shape=shape,
    )


@register_dataset("hmm")
def _hmm(
    *, D: int = 501, P: int = 1503, N: int = 1000, P_test: int = 1000, seed: int = 0
) -> Dataset:
    """Hidden manifold model of Pittorino et al. 2022 (appendix B): a ±1 binary task.

    With ``rng = numpy.random.default_rng(seed)``, drawn in this order: the teacher
    ``w_T = rng.standard_normal(D)``, the projection ``F = rng.standard_normal((N, D))``,
    train patterns ``xi = rng.standard_normal((P, D))`` and test patterns
    ``rng.standard_normal((P_test, D))``. Labels are ``y = sign(xi @ w_T)`` and student
    inputs ``x = sign(xi @ F.T / sqrt(D))``, both float32 ±1 with ties going to +1.
    ``num_classes`` is 1. Inputs are already ±1 and are deliberately *not* standardized.

    Defaults: latent dimension ``D = 501`` (odd), ``P = 1503 = 3 D`` train patterns,
    input dimension ``N = 1000`` and ``P_test = 1000`` test patterns.
    """
    D = check_int("hmm", "D", D, minimum=1)
    P = check_int("hmm", "P", P, minimum=1)
    N = check_int("hmm", "N", N, minimum=1)
    P_test = check_int("hmm", "P_test", P_test, minimum=1)
    seed = check_int("hmm", "seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal(D)
    projection = rng.standard_normal((N, D))
    splits = []
    for count in (P, P_test):
        xi = rng.standard_normal((count, D))
        x = _pm1(xi @ projection.T / math.sqrt(D))
        y = _pm1(xi @ teacher)
        splits.append((torch.from_numpy(x), torch.from_numpy(y)))
    return Dataset(
        name="hmm",
        x_train=splits[0][0],
        y_train=splits[0][1],
        x_test=splits[1][0],
        y_test=splits[1][1],
        num_classes=1,
        input_shape=(N,),
    )


def _class_means(classes: int, dim: int, separation: float, rng: np.random.Generator) -> np.ndarray:
    if dim == 1:
        return separation * (np.arange(classes, dtype=np.float64) - (classes - 1) / 2)[:, None]
    if dim == 2:
        # Evenly spaced on a circle with neighbouring means `separation` apart.
        angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(classes) / classes
        radius = separation / (2 * math.sin(math.pi / classes))
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if classes <= dim:
        # Orthonormal directions scaled so every pair of means is `separation` apart.
        q, _ = np.linalg.qr(rng.standard_normal((dim, classes)))
        return separation / math.sqrt(2) * q.T
    directions = rng.standard_normal((classes, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return separation / math.sqrt(2) * directions


@register_dataset("gaussian")
def _gaussian(
    *,
    classes: int = 3,
    dim: int = 2,
    n_train: int = 600,
    n_test: int = 600,
    separation: float = 3.0,
    seed: int = 0,
) -> Dataset:
    """A seeded, class-balanced mixture of unit-variance Gaussians, one per class.

    Class ``k`` is ``N(mu_k, I_dim)``. The means are ``separation`` apart: in 1-D
    evenly spaced on a line, in 2-D evenly spaced on a circle (neighbours), in higher
    dimension pairwise (orthonormal directions; random unit directions if
    ``classes > dim``, then only about ``separation``). Each split holds each class
    ``n // classes`` or one more times, in shuffled order. Inputs are standardized per
    feature with train statistics; labels are int64 class indices.
    """
    classes = check_int("gaussian", "classes", classes, minimum=2)
    dim = check_int("gaussian", "dim", dim, minimum=1)
    n_train = check_int("gaussian", "n_train", n_train, minimum=1)
    n_test = check_int("gaussian", "n_test", n_test, minimum=1)
    separation = check_positive_float("gaussian", "separation", separation, allow_zero=True)
    seed = check_int("gaussian", "seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    means = _class_means(classes, dim, separation, rng)
    xs, ys = [], []
    for count in (n_train, n_test):
        labels = rng.permutation(np.arange(count) % classes)
        xs.append(torch.from_numpy(means[labels] + rng.standard_normal((count, dim))))
        ys.append(torch.from_numpy(labels.astype(np.int64)))
    x_train, x_test = normalize_inputs(xs[0], xs[1], "feature")
    return Dataset(
        name="gaussian",
        x_train=x_train,
        y_train=ys[0],
        x_test=x_test,
        y_test=ys[1],
        num_classes=classes,
        input_shape=(dim,),
    )


#: The most contexts (vocab ** order) of a ``grammar`` language: its transition table's rows.
MAX_GRAMMAR_CONTEXTS = 1 << 20


@register_dataset("grammar")
def _grammar(
    *,
    vocab: int = 16,
    order: int = 2,
    branching: int = 3,
    context: int = 16,
    n_train: int = 4000,
    n_test: int = 1000,
    seed: int = 0,
) -> Dataset:
    """A synthetic character language (a seeded regular grammar): predict the next token.

    The language is an order-``order`` Markov chain over ``vocab`` tokens: after
    each run of ``order`` tokens, ``branching`` tokens may follow (drawn per run,
    with Dirichlet(1) weights). One text of ``n_train + context`` tokens and
    another of ``n_test + context`` are drawn from it; sample ``i`` is the window
    of ``context`` tokens starting at ``i`` and its label the token after it.
    Inputs are the token ids as float32 (not standardized: a sequence model
    embeds them), shape ``(context,)``; ``vocab`` classes. With ``branching`` > 1
    no model reaches zero error: the best possible is the chain's own entropy.
    """
    vocab = check_int("grammar", "vocab", vocab, minimum=2)
    order = check_int("grammar", "order", order, minimum=1)
    branching = check_int("grammar", "branching", branching, minimum=1)
    context = check_int("grammar", "context", context, minimum=order)
    n_train = check_int("grammar", "n_train", n_train, minimum=1)
    n_test = check_int("grammar", "n_test", n_test, minimum=1)
    seed = check_int("grammar", "seed", seed, minimum=0)
    if branching > vocab:
        raise DatasetError(f"grammar: branching ({branching}) must be at most vocab ({vocab})")
    if vocab**order > MAX_GRAMMAR_CONTEXTS:
        raise DatasetError(
            f"grammar: vocab ** order = {vocab}**{order} contexts is more than "
            f"{MAX_GRAMMAR_CONTEXTS}; lower vocab or order"
        )
    limit = 1 << 24
    if (n_train + context) * context > limit or (n_test + context) * context > limit:
        raise DatasetError(f"grammar: (n + context) * context must be at most {limit}")
    rng = np.random.default_rng(seed)
    contexts = vocab**order
    allowed = np.argsort(rng.random((contexts, vocab)), axis=1)[:, :branching]
    weights = rng.dirichlet(np.ones(branching), size=contexts)
    cumulative = np.cumsum(weights, axis=1)
    splits = []
    for count in (n_train, n_test):
        text = np.empty(count + context, dtype=np.int64)
        text[:order] = rng.integers(0, vocab, order)
        draws = rng.random(len(text))
        state = int(np.ravel_multi_index(tuple(text[:order]), (vocab,) * order))
        for t in range(order, len(text)):  # a Markov chain: each token needs the last
            pick = min(int(np.searchsorted(cumulative[state], draws[t])), branching - 1)
            text[t] = allowed[state, pick]
            state = (state * vocab + int(text[t])) % contexts
        windows = np.lib.stride_tricks.sliding_window_view(text[:-1], context)[:count]
        splits.append(
            (torch.from_numpy(windows.astype(np.float32)), torch.from_numpy(text[context:]))
        )
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(
        name="grammar",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=vocab,
        input_shape=(context,),
    )
