"""Batched evaluation of many networks of one architecture on data resident on a device.

The model is traced once and split at its first layer (a model torch.fx cannot
trace, such as transformers' own, runs whole, its token ids as integers). When a
path moves the first layer's weight as a :class:`~canon.core.paths.Combination` of a few basis
tensors (linear, geodesic, bend and plane paths) and the layer uses its
weights linearly, the layer's outputs for every point combine from one product
per basis: the expensive first-layer products are computed J times per data
batch instead of K times. The rest of the network runs per point with
``torch.func.functional_call`` on large batches, in inference mode. (Measured
on CPU, a vmap over stacked weights was about twice as slow as these plain
batched calls for both linear and convolutional layers.) Slow kernels with
exact faster equivalents are swapped in the evaluator's traced copy
(:mod:`canon.engine.fast_ops`).
"""

from __future__ import annotations

import inspect
import itertools
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from canon.core import tied_names
from canon.core.modules import BinaryConv2d, BinaryLinear
from canon.core.paths import Combination, Constant, NetworkPath, at_points
from canon.core.record import main_output
from canon.core.trace import tracer
from canon.engine._modules import fit_together, loaded, working_copy
from canon.engine.fast_ops import optimize_graph
from canon.engine.layout import input_layout, template_sample

__all__ = ["STACK_WORK", "Evaluator", "Scores", "as_logits", "logits_of", "reads_tokens"]

_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Combining a layer's outputs costs about as much per element as a product with fan-in
# ~30 on CPU (it is memory-bound); below that the layer is cheaper to run per point.
_FAN_IN_PER_BASIS = 32
#: The work one stacked call may hold, by device type: a network whose weights x a batch's
#: rows stay under it runs several points per call (as many as fit), their weights stacked
#: under one ``vmap``, also across the paths of one call (a table's pairs): point by point,
#: the calls' own overhead (about half a millisecond each on CPU) would outweigh the work.
#: Bigger networks run point by point, where on CPU plain batched calls are faster than
#: vmap's batched products. On a GPU a call's fixed cost is larger against its work, so
#: far larger networks stack (how many points at once stays bounded by
#: :func:`activation_budget` through the batch's rows): ``benchmarks/bench_stacking.py``
#: on an NVIDIA H200 (MLPs 784-H-H-10, 10,000 inputs, 25 points) found stacking 3.1x
#: faster at H = 64, 6.4x at 128-256, 2.1x at 512, 1.36x at 1024 and even from 2048 on;
#: 2^38 stacks all 25 points up to H = 1024.
STACK_WORK: dict[str, int] = {"cpu": 1 << 24, "cuda": 1 << 38}

# what torch warns when vmap falls back to running an op sample by sample
_VMAP_FALLBACK = "There is a performance drop because we have not yet implemented the batching rule"
# Layers whose work is not bounded by their weights (convolutions: by positions too), or
# whose kernels vmap cannot batch: their networks always run point by point.
_UNSTACKED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, BinaryLinear, BinaryConv2d)


# runs the networks of a path on one data batch: for each run of points, their logits
# stacked ([points, rows, outputs]), so that a stacked run is scored in one step
BatchRunner = Callable[[Tensor], Iterator[tuple[range, Tensor]]]
# runs them on every data batch of a list: each run of points' logits with the batch's labels
Runner = Callable[[list[tuple[Tensor, Tensor]]], Iterator[tuple[range, Tensor, Tensor]]]
# the bytes of activations one evaluation may hold at once on CPU (rows of a data batch
# times networks in flight times one input's activations); fixed, so that the batches, and
# so the sums of the results, never depend on the memory free at the time. An input's
# activations are counted as every node's output (twice or more what a forward holds at
# once); a CPU runs a convnet no faster on bigger batches (vgg11_bn at 3x32x32: the same
# at 119 and 476 rows; ResNet-20: faster at 89 than at 356), so the batch stays small
# beside a large network's own tensors.
ACTIVATION_BYTES = 1 << 28


def activation_budget(device: torch.device) -> int:
    """The bytes of activations one evaluation may hold on ``device``: on CPU
    :data:`ACTIVATION_BYTES`; on a GPU a quarter of its memory (its total, not what is
    free now, so that batches never depend on what else runs), and no less."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(ACTIVATION_BYTES, total // 4)
    return ACTIVATION_BYTES


class _Sizes(fx.Interpreter):
    """Runs a graph and sums the bytes of every node's tensor output."""

    total = 0

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, Tensor):
            self.total += out.numel() * out.element_size()
        return out


class _PeakBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """The most bytes that the tensors made by ops run under it hold at once (each counted
    from the op that makes it until it is let go; views and ops writing into their inputs
    make none): for a module that runs untraced (a library's model), its activations'
    peak. Library models run dozens of small ops a layer, so the sum of their outputs
    (what :class:`_Sizes` counts for a traced graph) would overstate their peak ten-fold
    and more (GPT-2: 27 MB against 1.9 MB a window of 16 tokens)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0

    def _let_go(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        given = {id(t) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, Tensor) and id(t) not in given:
                size = t.numel() * t.element_size()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._let_go, size)
        return out


@dataclass(frozen=True)
class Scores:
    """Per point: fraction misclassified and, if asked, mean cross-entropy."""

    errors: Tensor  # [K] float64
    losses: Tensor | None = None  # [K] float64


@dataclass(frozen=True)
class _Split:
    head: fx.GraphModule  # input -> the first layer's input
    layer: nn.Module  # the first layer
    name: str  # its module path
    tail: fx.GraphModule  # the first layer's output -> logits


def _split(gm: fx.GraphModule) -> _Split | None:
    """Cut the traced model at its first layer; None if the graph does not allow it."""
    nodes = list(gm.graph.nodes)
    first = next(
        (
            n
            for n in nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), _LINEAR_LAYERS)
        ),
        None,
    )
    if first is None:
        return None
    index = nodes.index(first)
    head_graph = fx.Graph()
    head_env: dict[fx.Node, fx.Node] = {}
    for node in nodes[:index]:
        head_env[node] = head_graph.node_copy(node, lambda n: head_env[n])
    source = first.args[0]
    if not isinstance(source, fx.Node):
        return None
    head_graph.output(head_env[source])
    tail_graph = fx.Graph()
    tail_env: dict[fx.Node, fx.Node] = {}
    tail_env[first] = tail_graph.placeholder("z")
    try:
        for node in nodes[index + 1 :]:
            tail_env[node] = tail_graph.node_copy(node, lambda n: tail_env[n])
    except KeyError:  # the tail reads something computed before the first layer
        return None
    layer = gm.get_submodule(str(first.target))
    return _Split(
        head=fx.GraphModule(gm, head_graph),
        layer=layer,
        name=str(first.target),
        tail=fx.GraphModule(gm, tail_graph),
    )


def reads_tokens(model: nn.Module) -> bool:
    """Whether ``model``'s main input is token ids (transformers' ``input_ids``), which
    datasets hold as numbers and the model takes as integers."""
    return getattr(model, "main_input_name", None) == "input_ids"


def as_logits(out: object) -> Tensor:
    """The logits a network returns: a tensor itself, or a library's output record's
    (:func:`~canon.core.record.main_output`); a language model's ``(batch, tokens,
    vocabulary)`` logits give those of the token after the last (canon's convention for
    next-token data such as ``grammar``)."""
    logits = main_output(out)
    if logits is None:
        raise TypeError(f"the network returned {type(out).__name__}, which holds no tensor")
    return logits[:, -1] if logits.ndim == 3 else logits


def _last_logits_only(model: nn.Module) -> dict[str, Any]:
    """The keywords that make a library's language model compute the logits of its last
    token alone (transformers' ``logits_to_keep=1``), which are all :func:`as_logits`
    keeps: the output layer then runs on one token of each window, not on all of them;
    none for any other model."""
    if not reads_tokens(model):
        return {}
    try:
        takes = "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if takes else {}


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` as logits (:func:`as_logits`), token ids given as integers to a model
    that reads them (:func:`reads_tokens`)."""
    return as_logits(model(x.long() if reads_tokens(model) else x))


class Evaluator:
    """Evaluates networks of one architecture on one dataset, kept on ``device``.

    ``model`` is a template: it is copied, moved to the device and put in eval
    mode; the caller's module is not touched. Labels are class indices for
    multi-class outputs, or +-1 for a single output (the prediction is the
    sign of the output).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        device: torch.device,
        batch_size: int = 10_000,
    ) -> None:
        self.device = device
        self.source = (x, y)  # the data as given (what a cache of evaluators compares)
        self.model = working_copy(model, device).eval()  # runs passed-in tensors only
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size = max(1, int(batch_size))
        self.graph: nn.Module = self.model
        self.split: _Split | None = None
        self.tied = set(tied_names(self.model))
        self.weights = sum(p.numel() for p in self.model.parameters())
        # keywords the graph is called with (a language model: the last token's logits only)
        self.call_options: dict[str, Any] = {}
        self._row_bytes: int | None = None  # activation bytes per input (``rows``)
        self.stackable = False  # whether small networks' points run stacked (``_chunk``)
        try:
            traced = fx.GraphModule(self.model, tracer().trace(self.model))
        except Exception:  # torch.fx raises many kinds: run the model itself
            self.tokens = reads_tokens(self.model)
            self.call_options = _last_logits_only(self.model)
        else:
            self.tokens = False
            self.graph = optimize_graph(traced, device)
            self.split = _split(self.graph)
            self.stackable = not any(isinstance(m, _UNSTACKED) for m in self.model.modules())
        self.layout = input_layout(self.graph, device, self.x)
        # what the graph reads: a traced graph holds only the tensors its forward uses (a
        # BatchNorm's forward traced into never reads its step counter in eval mode)
        self.reads = set(self.graph.state_dict(keep_vars=True))

    def _batches(self, rows: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, self.x.shape[0], rows):
            yield self.x[start : start + rows], self.y[start : start + rows]

    def _input(self, xb: Tensor) -> Tensor:
        """A data batch as the network takes it: token ids as integers, images in the
        device's fastest layout (:func:`~canon.engine.layout.input_layout`), converted a
        call at a time so that the data is never held twice."""
        return xb.long() if self.tokens else self.layout(xb)

    def rows(self, in_flight: int = 1) -> int:
        """Inputs per data batch when ``in_flight`` networks' activations are held at once:
        ``batch_size`` at most, and few enough that their activations (every node's
        output for one input, measured once, times the rows and networks) stay within
        the device's :func:`activation_budget`."""
        if self._row_bytes is None:
            self._row_bytes = self._activation_bytes()
        if self._row_bytes == 0:
            return self.batch_size
        fit = activation_budget(self.device) // (self._row_bytes * max(1, in_flight))
        return max(1, min(self.batch_size, fit))

    def _activation_bytes(self) -> int:
        """The bytes of every node's output of the traced graph for one input (a module
        that runs untraced: the peak of its ops' outputs, :class:`_PeakBytes`)."""
        sample = self._input(template_sample(self.graph, self.x))
        with torch.inference_mode():
            if isinstance(self.graph, fx.GraphModule):
                sizes = _Sizes(self.graph)
                sizes.run(sample)
                return sizes.total
            with _PeakBytes() as ops:
                self.graph(sample, **self.call_options)
            return int(ops.peak)

    def _score(
        self, logits: Tensor, y: Tensor, loss: bool, scale: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Per network of ``logits`` ([networks, rows, outputs]): the wrong predictions
        and, with ``loss``, the summed cross-entropy on the rows ``y`` of the logits
        times the network's positive factor in ``scale`` ([networks]; none: 1). The
        predictions are always those of ``logits`` as given."""
        if logits.shape[-1] == 1:
            out = logits[..., 0]
            wrong = (torch.sign(out) != y).sum(-1)
        else:
            wrong = (logits.argmax(dim=-1) != y).sum(-1)
        if not loss:
            return wrong, None
        if scale is not None:
            logits = logits * scale.to(logits.dtype).reshape(-1, *([1] * (logits.ndim - 1)))
        if logits.shape[-1] == 1:
            out = logits[..., 0]
            return wrong, F.softplus(-y.to(out.dtype) * out).sum(-1)
        target = y.expand(logits.shape[0], -1)
        return wrong, F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(-1)

    def evaluate(
        self, path: NetworkPath, loss: bool = False, output_scale: Tensor | None = None
    ) -> Scores:
        """Error (and loss) of every point of ``path`` on the evaluator's data; the loss of
        point k is that of its logits times ``output_scale[k]`` where given (a positive
        factor on the logits: the errors do not depend on it)."""
        return self.evaluate_many([path], loss, [output_scale])[0]

    def evaluate_many(
        self,
        paths: Sequence[NetworkPath],
        loss: bool = False,
        output_scales: Sequence[Tensor | None] | None = None,
    ) -> list[Scores]:
        """Error (and loss) of every point of each of ``paths`` (paths of this architecture
        with the same tensors, such as the curves of a table's pairs) on the evaluator's
        data: a small network's points run stacked across the paths' boundaries, so that
        several paths share one call; the scores are those :meth:`evaluate` gives each.

        ``output_scales`` gives, per path, ``None`` or one positive factor per point
        ([K]) by which the point's logits are multiplied for its loss (such as a path
        between normalized networks whose losses are those at the networks' own output
        scale); the errors are those of the logits as the networks give them."""
        if not paths:
            return []
        factors = _factors(paths, output_scales, self.device) if loss else None
        if self.stackable:
            try:
                with warnings.catch_warnings():
                    # an op vmap runs through its per-sample fallback (a loop over the
                    # points: adaptive pooling of channels-last images) counts as one it
                    # cannot batch
                    warnings.filterwarnings("error", message=_VMAP_FALLBACK)
                    return self._evaluate(paths, loss, stacked=True, factors=factors)
            except Exception:  # an op vmap cannot batch: run point by point from now on
                self.stackable = False
        return self._evaluate(paths, loss, stacked=False, factors=factors)

    def _evaluate(
        self,
        paths: Sequence[NetworkPath],
        loss: bool,
        stacked: bool,
        factors: Tensor | None = None,
    ) -> list[Scores]:
        """The scores of ``paths``; ``factors`` ([points of all paths] or none) multiply
        each point's logits for its loss (:func:`_factors`)."""
        total = sum(len(p) for p in paths)
        wrong = torch.zeros(total, dtype=torch.float64, device=self.device)
        total_loss = torch.zeros(total, dtype=torch.float64, device=self.device)
        run, in_flight = self._fast(paths, stacked) or self._plain(paths, stacked)
        batches = list(self._batches(self.rows(in_flight)))
        with torch.inference_mode():
            for ks, logits, yb in run(batches):
                scale = None if factors is None else factors[ks.start : ks.stop]
                w, ce = self._score(logits, yb, loss, scale)
                wrong[ks.start : ks.stop] += w
                if ce is not None:
                    total_loss[ks.start : ks.stop] += ce
        n = float(self.x.shape[0])
        errors, losses = (wrong / n).cpu(), (total_loss / n).cpu()
        out, start = [], 0
        for p in paths:
            part = slice(start, start + len(p))
            out.append(Scores(errors=errors[part], losses=losses[part] if loss else None))
            start += len(p)
        return out

    def error(self, state: dict[str, Tensor], loss: bool = False) -> Scores:
        """Error (and loss) of one network."""
        return self.evaluate(
            NetworkPath(
                torch.zeros(1, dtype=torch.float64), {n: Constant(t) for n, t in state.items()}
            ),
            loss,
        )

    # -- the two ways of running K networks on a batch --------------------------

    def _cacheable(self, paths: Sequence[NetworkPath], names: list[str]) -> bool:
        """Whether every point's tensors (those in ``names``) fit in memory at once
        (:func:`~canon.engine._modules.fit_together`)."""
        return fit_together(self.model, names, sum(len(p) for p in paths))

    @staticmethod
    def _states(
        path: NetworkPath, names: list[str], cached: bool
    ) -> Callable[[int], dict[str, Tensor]]:
        """Point k's tensors (those in ``names``), all made at once if ``cached``: each
        tensor's points in one step (:func:`~canon.core.paths.at_points`, the values
        ``at`` gives; a few ops per tensor, not per point and tensor)."""
        if cached:
            every = range(len(path))
            stacked = {n: at_points(path.tensors[n], every) for n in names}
            cache = [{n: stacked[n][k] for n in names} for k in every]
            return cache.__getitem__
        return lambda k: {n: path.tensors[n].at(k) for n in names}

    def points_per_call(self) -> int:
        """How many points one stacked call runs at most (1: point by point): the network
        after its first layer, whose outputs are combined per point where a path allows."""
        return self._chunk(1 << 62, self._tail_weights(), self.stackable)

    def _tail_weights(self) -> int:
        """The weights after the first layer (all of them when the graph is not split)."""
        if self.split is None:
            return self.weights
        return self.weights - sum(q.numel() for q in self.split.layer.parameters())

    def _chunk(self, points: int, weights: int, stacked: bool) -> int:
        """Points per call, of ``points`` in all: several, stacked and run by one ``vmap``,
        when the network is so small (``weights`` x a batch's rows below the device's
        :data:`STACK_WORK`) that running it point by point would be mostly per-call
        overhead; else 1."""
        if not stacked:
            return 1
        rows = min(self.rows(), int(self.x.shape[0]))
        work = STACK_WORK.get(self.device.type, STACK_WORK["cuda"])
        return max(1, min(points, work // max(1, weights * rows)))

    def _stacks(
        self, paths: Sequence[NetworkPath], names: list[str], chunk: int
    ) -> list[tuple[range, list[tuple[int, range]], dict[str, Tensor]]]:
        """The paths' points in runs of ``chunk`` (:func:`_runs`), each with its tensors
        (``names``) stacked on a first axis; kept for every data batch (a small network's
        points are small)."""
        return [
            (
                run,
                pieces,
                {n: _cat([at_points(paths[p].tensors[n], ks) for p, ks in pieces]) for n in names},
            )
            for run, pieces in _runs([len(p) for p in paths], chunk)
        ]

    def _plain(self, paths: Sequence[NetworkPath], stacked: bool = False) -> tuple[Runner, int]:
        # a tied tensor goes in once, under its first name (its other names take it too)
        names = [n for n in paths[0].tensors if n not in self.tied and n in self.reads]
        chunk = self._chunk(sum(len(p) for p in paths), self.weights, stacked)
        graph = self.graph
        if chunk > 1:
            stacks = self._stacks(paths, names, chunk)

            def call(params: dict[str, Tensor], x: Tensor) -> Tensor:
                return as_logits(functional_call(graph, params, (x,)))

            batched = vmap(call, in_dims=(0, None))

            def run_stacked(xb: Tensor) -> Iterator[tuple[range, Tensor]]:
                for run, _, params in stacks:
                    yield run, batched(params, self._input(xb))

            return _batch_major(run_stacked), chunk

        def run_points(
            batches: list[tuple[Tensor, Tensor]],
        ) -> Iterator[tuple[range, Tensor, Tensor]]:
            # each point made once, loaded once (not swapped in per call) and run on every
            # batch: per point the same sums in the same order as batch by batch; a path's
            # points made together where they fit (:meth:`_cacheable`), else one held at a
            # time (let go when its block ends)
            k = 0
            for path in paths:
                state_at = self._states(path, names, self._cacheable([path], names))
                for i in range(len(path)):
                    with loaded(graph, state_at(i)):
                        for xb, yb in batches:
                            logits = as_logits(graph(self._input(xb), **self.call_options))
                            yield range(k, k + 1), logits.unsqueeze(0), yb
                    k += 1

        return run_points, 1

    def _fast(
        self, paths: Sequence[NetworkPath], stacked: bool = False
    ) -> tuple[Runner, int] | None:
        split = self.split
        if split is None or isinstance(split.layer, (BinaryLinear, BinaryConv2d)):
            return None
        weight_name, bias_name = f"{split.name}.weight", f"{split.name}.bias"
        weights = [p.tensors.get(weight_name) for p in paths]
        if not all(
            isinstance(w, Combination) and len(w.bases) < len(p)
            for w, p in zip(weights, paths, strict=True)
        ):
            return None
        combos: list[Combination] = weights  # type: ignore[assignment]
        bases = max(len(w.bases) for w in combos)
        if combos[0].bases[0][0].numel() < _FAN_IN_PER_BASIS * bases:
            return None  # combining J outputs would cost more than the layer itself
        biases = [p.tensors.get(bias_name) for p in paths]
        tail_names = [
            n for n in paths[0].tensors if n not in (weight_name, bias_name) and n in self.reads
        ]
        coefs = [w.placed_coefs for w in combos]
        layer = split.layer

        def project(inputs: Tensor, w: Tensor) -> Tensor:
            if isinstance(layer, nn.Linear):
                return F.linear(inputs, w)
            assert isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
            out: Tensor = layer._conv_forward(inputs, w, None)
            return out

        def combined(p: int, parts: list[Tensor], ks: range) -> Tensor:
            """Path p's layer outputs at the points ``ks`` (on a new first axis) from its
            outputs for each basis: per point the same products and sums."""
            c = coefs[p][ks.start : ks.stop].to(parts[0].dtype)
            lead = (len(ks), 1)
            shape = lead + (c.shape[-1],) + (1,) * (parts[0].ndim - 2)  # units, or 1
            z = parts[0] * c[..., 0, :].reshape(shape)
            for j in range(1, len(parts)):
                z.addcmul_(parts[j], c[..., j, :].reshape(shape))
            bias = biases[p]
            if bias is not None:
                b = at_points(bias, ks)
                z = z + b.reshape(lead + (-1,) + (1,) * (z.ndim - len(lead) - 1))
            return z

        def layer_outputs(inputs: Tensor) -> Callable[[int], list[Tensor]]:
            """Path p's layer outputs per basis on ``inputs``, made when first asked for
            and kept only while the runs still reach the path (they run in order)."""
            held: dict[int, list[Tensor]] = {}

            def of(p: int) -> list[Tensor]:
                if p not in held:
                    held.clear()
                    held[p] = [project(inputs, base) for base in combos[p].bases]
                return held[p]

            return of

        chunk = self._chunk(sum(len(p) for p in paths), self._tail_weights(), stacked)
        if chunk > 1:
            stacks = self._stacks(paths, tail_names, chunk)
            tail = split.tail

            def call(params: dict[str, Tensor], z: Tensor) -> Tensor:
                return as_logits(functional_call(tail, params, (z,)))

            batched = vmap(call, in_dims=(0, 0))

            def run_stacked(xb: Tensor) -> Iterator[tuple[range, Tensor]]:
                parts = layer_outputs(split.head(self._input(xb)))
                for run, pieces, params in stacks:
                    z = _cat([combined(p, parts(p), ks) for p, ks in pieces])
                    yield run, batched(params, z)

            return _batch_major(run_stacked), chunk
        cached = self._cacheable(paths, tail_names)
        states = [self._states(p, tail_names, cached) for p in paths]

        def run(xb: Tensor) -> Iterator[tuple[range, Tensor]]:
            parts = layer_outputs(split.head(self._input(xb)))
            k = 0
            for p, path in enumerate(paths):
                for i in range(len(path)):
                    z = combined(p, parts(p), range(i, i + 1))[0]
                    out = functional_call(split.tail, states[p](i), (z,))
                    yield range(k, k + 1), out.unsqueeze(0)
                    k += 1

        return _batch_major(run), bases + 1  # the layer's outputs per basis, then a point's


def _factors(
    paths: Sequence[NetworkPath],
    output_scales: Sequence[Tensor | None] | None,
    device: torch.device,
) -> Tensor | None:
    """The factors on every point's logits for its loss, the paths' points one after
    another (1 for a path without factors); ``None`` when no path has any."""
    if output_scales is None or all(s is None for s in output_scales):
        return None
    if len(output_scales) != len(paths):
        raise ValueError(f"{len(output_scales)} output scales for {len(paths)} paths")
    parts = []
    for path, scale in zip(paths, output_scales, strict=True):
        if scale is None:
            parts.append(torch.ones(len(path), dtype=torch.float64))
            continue
        if scale.shape != (len(path),):
            raise ValueError(
                f"an output scale has shape {tuple(scale.shape)}, expected ({len(path)},)"
            )
        parts.append(scale.detach().to("cpu", torch.float64))
    return torch.cat(parts).to(device)


def _batch_major(run: BatchRunner) -> Runner:
    """``run`` on each data batch in turn, every run of points on it before the next."""

    def on(batches: list[tuple[Tensor, Tensor]]) -> Iterator[tuple[range, Tensor, Tensor]]:
        for xb, yb in batches:
            for ks, logits in run(xb):
                yield ks, logits, yb

    return on


def _runs(sizes: Sequence[int], chunk: int) -> list[tuple[range, list[tuple[int, range]]]]:
    """Runs of at most ``chunk`` consecutive points of paths of ``sizes`` points numbered
    one after another: each run's numbers and its pieces (path index, that path's points)."""
    starts = [0, *itertools.accumulate(sizes)][:-1]
    total = sum(sizes)
    runs = []
    for s in range(0, total, chunk):
        e = min(s + chunk, total)
        pieces = [
            (p, range(max(s, a) - a, min(e, a + n) - a))
            for p, (a, n) in enumerate(zip(starts, sizes, strict=True))
            if max(s, a) < min(e, a + n)
        ]
        runs.append((range(s, e), pieces))
    return runs


def _cat(parts: list[Tensor]) -> Tensor:
    """``parts`` joined on their first axis (one part as it is)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
