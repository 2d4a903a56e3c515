"""A Keras-like Sequential model that holds R independent replicas of one network.

Replica r is initialised from its own random stream, exactly as a stand-alone model built with
that stream, and trains exactly as it would alone: every operation acts per replica. A sweep of
seeds x initializers is thus one model trained in one batched pass; with R = 1 (the default)
outputs and costs come without the replica axis.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from initlab import initializers
from initlab._validate import RngLike, as_rng, check_dtype
from initlab.nn import losses, optimizers
from initlab.nn.layers import Dense, Residual, feature_major

Hook = Callable[[int, Dense, np.ndarray], None]
# below this much work (~ multiply-adds) a fit stays in one process: forking costs ~0.1 s
_PARALLEL_MIN_WORK = 2e9
_FORKED: tuple | None = None  # what a forked worker trains: (model, X, y, fit arguments)


class HookHandle:
    """Removes its hook on ``remove()`` or at the end of a ``with`` block."""

    def __init__(self, hooks: list[Hook], fn: Hook):
        self._hooks, self._fn = hooks, fn

    def remove(self) -> None:
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Sequential:
    """A stack of Dense layers: ``add``, ``compile``, ``fit``, ``predict``, ``evaluate``.

    >>> model = Sequential([Dense(12, "relu", init="he"), Dense(1, "sigmoid")])
    >>> model.compile(loss="binary_crossentropy")
    """

    def __init__(self, layers: Iterable[Dense | Residual] = ()):
        self.layers: list[Dense | Residual] = []
        for layer in layers:
            self.add(layer)
        self.loss: losses.Loss | None = None
        self.optimizer_spec: Any = "sgd"
        self.optimizer: optimizers.Optimizer | None = None
        self.replicas = 0
        self.dtype = np.dtype(np.float64)
        self.rngs: list[np.random.Generator] = []
        self.history: dict[str, list] = {"epoch": [], "cost": []}
        self.epochs_trained = 0
        self._hooks: dict[str, list[Hook]] = {"forward": [], "backward": []}

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.layers))
        return f"Sequential([{inner}], loss={self.loss!r}, replicas={self.replicas or '?'})"

    # --- set-up -------------------------------------------------------------------------------

    def add(self, layer: Dense | Residual) -> Sequential:
        if not isinstance(layer, Dense | Residual):
            raise TypeError(f"layer must be a Dense or Residual layer; got {layer!r}")
        self.layers.append(layer)
        return self

    def compile(self, loss: Any = "binary_crossentropy", optimizer: Any = "sgd") -> Sequential:
        """Set the loss and the optimizer (a name, mapping or instance; default plain SGD)."""
        self.loss = losses.get(loss)
        optimizers.get(optimizer)  # fail here, not at fit, on a bad spec
        self.optimizer_spec, self.optimizer = optimizer, None
        self._check_output_layer()
        return self

    def _check_output_layer(self) -> None:
        if self.loss is None or not self.layers:
            return
        last = self.layers[-1].activation.name
        if self.loss.fuses and last not in (self.loss.fuses, "linear"):
            raise ValueError(f"loss {self.loss.name} works on a {self.loss.fuses} output (or a "
                             f"linear one, read as logits); the last layer has activation={last}")

    @property
    def fused(self) -> bool:
        """Whether the loss takes the last layer's logits instead of its activation."""
        return bool(self.loss and self.loss.fuses)

    def build(self, input_dim: int, *, rng: RngLike | Sequence[RngLike] = None,
              replicas: int | None = None, variants: Sequence[Any] | None = None,
              dtype: Any = np.float64) -> Sequential:
        """Allocate and initialise R replicas.

        Args:
            input_dim: number of input features.
            rng: one stream for every replica (spawned into R children) or a sequence of R
                streams (None, int, SeedSequence or Generator each); replica r draws its
                layers' weights then biases, layer by layer, from its own stream.
            replicas: R; defaults to the length of ``rng`` or ``variants``, else 1.
            variants: per replica, a weight-init spec for every layer, or a list with one spec
                (or None: the layer's own) per layer.
            dtype: float64 (default) or float32.
        """
        if not self.layers:
            raise ValueError("the model has no layers; add a Dense layer before build")
        self.dtype = check_dtype(dtype)
        given = list(rng) if isinstance(rng, list | tuple) else None
        sizes = {len(x) for x in (given, variants) if x is not None}
        if replicas is not None:
            sizes.add(int(replicas))
        if len(sizes) > 1:
            raise ValueError(f"replicas, len(rng) and len(variants) disagree: {sorted(sizes)}")
        R = sizes.pop() if sizes else 1
        if R < 1:
            raise ValueError(f"replicas must be >= 1; got replicas={R}")
        if given is not None:
            streams = given
        elif R == 1:
            streams = [rng]
        elif isinstance(rng, np.random.Generator | np.random.SeedSequence):
            streams = rng.spawn(R)
        else:
            streams = np.random.SeedSequence(rng).spawn(R)
        self.rngs = [as_rng(s) for s in streams]
        self.replicas = R
        fan_in = int(input_dim)
        for layer in self.layers:
            layer.build(fan_in, R, self.dtype)
            fan_in = layer.units
        for r, gen in enumerate(self.rngs):
            per_layer = self._variant_inits(None if variants is None else variants[r])
            for layer, init in zip(self.layers, per_layer, strict=True):
                layer.init_replica(r, gen, init)
        self.history, self.epochs_trained, self.optimizer = {"epoch": [], "cost": []}, 0, None
        self._check_output_layer()
        return self

    def _variant_inits(self, variant: Any) -> list[initializers.Initializer | None]:
        if isinstance(variant, list):
            if len(variant) != len(self.layers):
                raise ValueError(f"a per-layer variant needs {len(self.layers)} specs; "
                                 f"got {len(variant)}")
            return [None if v is None else initializers.get(v) for v in variant]
        init = None if variant is None else initializers.get(variant)
        return [init] * len(self.layers)

    def parameters(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.params.values()]

    def gradients(self) -> list[np.ndarray]:
        return [layer.grads[k] for layer in self.layers for k in layer.params]

    def register_hook(self, kind: Literal["forward", "backward"], fn: Hook) -> HookHandle:
        """Call ``fn(index, layer, array)`` after each layer's forward (its output, (R, n, k))
        or backward (the gradient w.r.t. its pre-activation; ``layer.grads`` hold dW, db).
        The arrays are the engine's own: read them, do not keep or change them."""
        if kind not in self._hooks:
            raise ValueError(f"kind must be 'forward' or 'backward'; got kind={kind!r}")
        self._hooks[kind].append(fn)
        return HookHandle(self._hooks[kind], fn)

    # --- computation --------------------------------------------------------------------------

    def _forward(self, X: np.ndarray, *, training: bool = False) -> np.ndarray:
        # training with a fused loss needs only the logits of the last layer
        skip_last = training and self.fused and not self._hooks["forward"]
        a = X
        for i, layer in enumerate(self.layers):
            a = layer.forward(a, activate=not (skip_last and i == len(self.layers) - 1))
            for hook in self._hooks["forward"]:
                hook(i, layer, a)
        return a

    def _loss_input(self) -> np.ndarray:
        last = self.layers[-1]._cache
        return last[1] if self.fused else last[2]

    def _backward(self, y: np.ndarray, param_grads: bool = True) -> None:
        grad = self.loss.grad(self._loss_input(), y)
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            grad = layer.backward(grad, wrt_preactivation=self.fused and i == last,
                                  need_input_grad=i > 0, need_param_grads=param_grads)
            for hook in self._hooks["backward"]:
                hook(i, layer, layer.last_dz)

    def compute_gradients(self, X: Any, y: Any, *, param_grads: bool = True) -> np.ndarray:
        """Forward and backward once without updating; per-replica loss, gradients in
        ``layer.grads``. ``param_grads=False`` back-propagates only the gradients that backward
        hooks see (w.r.t. each layer's pre-activation), skipping the weight gradients: for a
        probe of a wide network they are most of the work."""
        X, y = self._prepare(X, y)
        self._forward(X, training=True)
        cost = self.loss.value(self._loss_input(), y)
        self._backward(y, param_grads)
        return cost

    # --- data ---------------------------------------------------------------------------------

    def _prepare(self, X: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.loss is None and y is not None:
            raise ValueError("compile the model (set its loss) before fit or evaluate")
        X = np.asarray(X, dtype=self.dtype if self.replicas else np.float64)
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be (n_samples, n_features) or, one per replica, "
                             f"(replicas, n_samples, n_features); got X.shape={X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"X contains {np.count_nonzero(~np.isfinite(X))} NaN or inf values")
        if not self.replicas:
            self.build(X.shape[-1])
            X = X.astype(self.dtype, copy=False)
        if X.shape[-1] != self.layers[0].fan_in:
            raise ValueError(f"X has {X.shape[-1]} features; the model was built for "
                             f"{self.layers[0].fan_in}")
        if X.ndim == 3 and X.shape[0] != self.replicas:
            raise ValueError(f"X with a replica axis must have {self.replicas} entries on it; "
                             f"got X.shape={X.shape}")
        X = feature_major(X)  # the layers' memory layout, once per call rather than per epoch
        if y is None:
            return X, None
        y = self.loss.targets(y, self.layers[-1].units).astype(self.dtype, copy=False)
        if y.ndim not in (2, 3) or y.shape[-2] != X.shape[-2] or \
                (y.ndim == 3 and y.shape[0] not in (1, self.replicas)):
            raise ValueError(f"X and y disagree: X.shape={X.shape}, y has shape {y.shape} "
                             f"(need {X.shape[-2]} samples)")
        return X, feature_major(y)

    def _out(self, values: np.ndarray) -> Any:
        """Drop the replica axis for a single model."""
        return values[0] if self.replicas == 1 else values

    # --- training -----------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, learning_rate: float | None = None, epochs: int = 1,
            batch_size: int | None = None, log_every: int | None = 1000,
            optimizer: Any = None, shuffle: bool = True, verbose: bool = False,
            print_log: bool | None = None,
            callbacks: Sequence[Callable[[Sequential, int], None]] = (),
            workers: int | None = None) -> Sequential:
        """Train every replica; log the training cost every ``log_every`` epochs and at the last.

        The cost logged at epoch e is the loss at the start of that epoch. ``batch_size=None``
        is full-batch gradient descent; otherwise each replica shuffles with its own stream.
        ``callbacks`` are called as ``callback(model, epoch)`` after every epoch; one that is
        also a context manager (a Probe) is entered for the whole fit. ``workers`` processes
        split the replicas (default: both cores when the work is large and no hook or callback
        needs this process). ``print_log`` is the sources' name for ``verbose``.
        """
        if self.loss is None:
            raise ValueError("compile the model (set its loss) before fit")
        X, y = self._prepare(X, y)
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0; got epochs={epochs!r}")
        if batch_size is not None and (not isinstance(batch_size, int | np.integer)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None; "
                             f"got batch_size={batch_size!r}")
        if optimizer is not None or learning_rate is not None or self.optimizer is None:
            lr = {} if learning_rate is None else {"learning_rate": learning_rate}
            self.optimizer = optimizers.get(optimizer or self.optimizer_spec, **lr)
        args = dict(epochs=int(epochs), batch_size=batch_size, log_every=log_every,
                    shuffle=shuffle, verbose=verbose if print_log is None else print_log,
                    callbacks=callbacks)
        n_workers = self._workers(workers, X, epochs, callbacks, args["verbose"])
        if n_workers > 1:
            self._fit_in_workers(n_workers, X, y, args)
            return self
        with contextlib.ExitStack() as stack:
            for callback in callbacks:  # a callback that is a context manager spans the fit
                if hasattr(callback, "__enter__"):
                    stack.enter_context(callback)
            self._fit(X, y, **args)
        return self

    def _fit(self, X, y, *, epochs, batch_size, log_every, shuffle, verbose, callbacks) -> None:
        n = X.shape[-2]
        full_batch = batch_size is None or batch_size >= n
        params = self.parameters()
        for step in range(epochs):
            epoch = self.epochs_trained
            log = (log_every and epoch % log_every == 0) or step == epochs - 1
            if full_batch:
                self._forward(X, training=True)
                if log:
                    self._log(epoch, self.loss.value(self._loss_input(), y), verbose)
                self._backward(y)
                self.optimizer.step(params, self.gradients())
            else:
                if log:
                    self._forward(X, training=True)
                    self._log(epoch, self.loss.value(self._loss_input(), y), verbose)
                for xb, yb in self._batches(X, y, batch_size, shuffle):
                    self._forward(xb, training=True)
                    self._backward(yb)
                    self.optimizer.step(params, self.gradients())
            self.epochs_trained += 1
            for callback in callbacks:
                callback(self, epoch)

    def _batches(self, X, y, batch_size, shuffle):
        n = X.shape[-2]
        if shuffle:
            order = np.stack([gen.permutation(n) for gen in self.rngs])  # (R, n)
            X = X[order] if X.ndim == 2 else np.take_along_axis(X, order[..., None], axis=1)
            y = y[order] if y.ndim == 2 else np.take_along_axis(
                np.broadcast_to(y, (self.replicas, *y.shape[-2:])), order[..., None], axis=1)
            X, y = feature_major(X), feature_major(y)
        for start in range(0, n, batch_size):
            yield X[..., start:start + batch_size, :], y[..., start:start + batch_size, :]

    def _log(self, epoch: int, cost: np.ndarray, verbose: bool) -> None:
        self.history["epoch"].append(epoch)
        self.history["cost"].append(np.array(cost, dtype=float))
        if verbose:
            text = (f"{cost[0]:.10g}" if self.replicas == 1 else
                    f"mean {np.mean(cost):.6g} +- {np.std(cost):.2g} over {self.replicas} replicas")
            print(f"Epoch {epoch} - cost {text}")

    @property
    def costs(self) -> list:
        """The logged costs: floats for a single model, arrays of R values otherwise."""
        return [float(c[0]) if self.replicas == 1 else c for c in self.history["cost"]]

    # --- the replica axis split over processes ------------------------------------------------

    def _workers(self, workers: int | None, X: np.ndarray, epochs: int, callbacks,
                 verbose: bool) -> int:
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
                raise ValueError(f"workers must be a positive int or None; got workers={workers!r}")
            return min(workers, self.replicas)
        if (self.replicas < 2 or callbacks or verbose or any(self._hooks.values())
                or "fork" not in multiprocessing.get_all_start_methods()):
            return 1
        # per sample and epoch: the multiply-adds, and the elementwise work of every unit
        # (an activation such as tanh costs some ten multiply-adds here)
        per_sample = sum(p.size for p in self.parameters()) + 10 * self.replicas * sum(
            layer.units for layer in self.layers)
        work = epochs * X.shape[-2] * per_sample
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return min(cores, self.replicas) if work >= _PARALLEL_MIN_WORK else 1

    def take(self, index: Sequence[int]) -> Sequential:
        """A new model holding copies of the given replicas (``take([r])``: replica r alone)."""
        index = list(index)
        sub = copy.copy(self)
        sub.layers = [layer.take(index) for layer in self.layers]
        sub.rngs = [copy.deepcopy(self.rngs[i]) for i in index]
        sub.replicas = len(index)
        sub.history = {"epoch": list(self.history["epoch"]),
                       "cost": [c[index] for c in self.history["cost"]]}
        sub._hooks = {"forward": [], "backward": []}
        sub.optimizer = _take_optimizer(self.optimizer, index)
        return sub

    def put(self, index: Sequence[int], sub: Sequential) -> Sequential:
        """Write back the parameters and streams of ``sub``, a :meth:`take` of these replicas
        that a scheme (LSUV, ZerO...) has changed."""
        index = list(index)
        for layer, sub_layer in zip(self.layers, sub.layers, strict=True):
            for key, value in sub_layer.params.items():
                layer.params[key][index] = value
        for i, gen in zip(index, sub.rngs, strict=True):
            self.rngs[i] = gen
        return self

    def _fit_in_workers(self, n_workers: int, X, y, args: dict) -> None:
        global _FORKED
        chunks = [c for c in np.array_split(np.arange(self.replicas), n_workers) if len(c)]
        _FORKED = (self, X, y, args)
        try:
            with multiprocessing.get_context("fork").Pool(len(chunks)) as pool:
                parts = pool.map(_fit_chunk, chunks)
        finally:
            _FORKED = None
        for part, chunk in zip(parts, chunks, strict=True):
            for layer, params in zip(self.layers, part["params"], strict=True):
                for key, value in params.items():
                    layer.params[key][chunk] = value
            for i, state in zip(chunk, part["rng_states"], strict=True):
                self.rngs[i].bit_generator.state = state
        self.history["epoch"] += parts[0]["epochs"]
        self.history["cost"] += list(np.concatenate([p["costs"] for p in parts], axis=1))
        self.epochs_trained += args["epochs"]
        self.optimizer = _merge_optimizer(self.optimizer, [p["optimizer"] for p in parts])

    # --- inference ----------------------------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray:
        """Outputs of the last layer, (n, k), or (R, n, k) for R replicas."""
        X, _ = self._prepare(X)
        return self._out(np.ascontiguousarray(self._forward(X)))

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """``{"loss": ..., "accuracy": ...}`` (accuracy a fraction; None for regression)."""
        X, y = self._prepare(X, y)
        self._forward(X)
        out = self._loss_input()
        accuracy = self.loss.accuracy(out, y)
        return {"loss": self._out(self.loss.value(out, y)),
                "accuracy": None if accuracy is None else self._out(accuracy)}


def _fit_chunk(chunk: np.ndarray) -> dict[str, Any]:
    """Train some replicas in a forked worker; return their new state (plain arrays)."""
    model, X, y, args = _FORKED
    sub = model.take(chunk)
    X = feature_major(X[chunk]) if X.ndim == 3 else X
    y = feature_major(y[chunk]) if y.ndim == 3 and y.shape[0] == model.replicas else y
    logged = len(sub.history["cost"])
    with threadpool_limits(1):  # one BLAS thread per worker: the workers fill the cores
        sub._fit(X, y, **args)
    new_costs = sub.history["cost"][logged:]
    return {"params": [layer.params for layer in sub.layers],
            "rng_states": [gen.bit_generator.state for gen in sub.rngs],
            "epochs": sub.history["epoch"][logged:],
            "costs": np.stack(new_costs) if new_costs else np.zeros((0, len(chunk))),
            "optimizer": sub.optimizer}


def _take_optimizer(opt: optimizers.Optimizer | None, index: list[int]):
    # every optimizer state array but a scalar step count has the replica axis first
    if opt is None:
        return None
    sub = copy.copy(opt)
    sub.state = [{k: v[index] if v.ndim else v.copy() for k, v in s.items()} for s in opt.state]
    return sub


def _merge_optimizer(opt, parts):
    if not parts[0].state:
        return opt
    merged = copy.copy(opt)
    merged.state = [{k: np.concatenate([p.state[i][k] for p in parts]) if v.ndim else v
                     for k, v in entry.items()} for i, entry in enumerate(parts[0].state)]
    return merged


NeuralNetwork = Sequential  # the sources' name


def replica_labels(variants: Mapping[str, Any], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(variant, seed) for each replica of a variant-major sweep, as :func:`sweep` lays it out."""
    return [(name, seed) for name in variants for seed in seeds]


def sweep(variants: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, list]:
    """Arguments for ``build`` of a variants x seeds sweep, variant-major: replica
    ``v * len(seeds) + s`` uses variant v and ``SeedSequence(seeds[s])``, so every variant of
    a seed starts from the same stream (and the same data, if drawn from it)."""
    labels = replica_labels(variants, seeds)
    return {"rng": [np.random.SeedSequence(seed) for _, seed in labels],
            "variants": [variants[name] for name, _ in labels]}
