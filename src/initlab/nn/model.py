"""A Keras-like Sequential model that holds R independent replicas of one network.

Replica r is initialised from its own random stream, exactly as a stand-alone model built with
that stream, and trains exactly as it would alone: every operation acts per replica. A sweep of
seeds x initializers is thus one model trained in one batched pass; with R = 1 (the default)
outputs and costs come without the replica axis. Each replica knows its coordinates (the
variant and seed a sweep built it with), and :meth:`Sequential.select` finds replicas by them.

This module is the model: layers, build, replicas, the forward and backward passes, hooks and
inference. A sweep's layout of replicas is in :mod:`initlab.nn.replicas`, training in
:mod:`initlab.nn.training`, the process pool in :mod:`initlab.nn.parallel`, the compiled
kernels in :mod:`initlab.nn.kernels`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from initlab import initializers
from initlab._validate import RngLike, as_rng, check_dtype
from initlab.nn import losses, optimizers
from initlab.nn.contract import Gradients, Layer, Trace, feature_major
from initlab.nn.replicas import Coordinates

ForwardHook = Callable[[int, Layer, Trace], None]
BackwardHook = Callable[[int, Layer, Gradients], None]


class HookHandle:
    """Removes its hook on ``remove()`` or at the end of a ``with`` block."""

    def __init__(self, hooks: list[Any], fn: Any, periods: dict[Any, int] | None = None):
        self._hooks, self._fn, self._periods = hooks, fn, periods

    def remove(self) -> None:
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)
            if self._periods is not None and self._fn not in self._hooks:
                self._periods.pop(self._fn, None)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Sequential:
    """A stack of layers: ``add``, ``compile``, ``build``, ``fit``, ``predict``, ``evaluate``.

    >>> model = Sequential([Dense(12, "relu", init="he"), Dense(1, "sigmoid")])
    >>> model.compile(loss="binary_crossentropy")
    """

    def __init__(self, layers: Iterable[Layer] = ()):
        self.layers: list[Layer] = []
        for layer in layers:
            self.add(layer)
        self.loss: losses.Loss | None = None
        self.optimizer_spec: Any = "sgd"
        self.optimizer: optimizers.Optimizer | None = None
        self.replicas = 0
        self.dtype = np.dtype(np.float64)
        self.rngs: list[np.random.Generator] = []
        self.coords: list[Coordinates] = []
        self.history: dict[str, list] = {"epoch": [], "step": [], "cost": [], "engine": []}
        self.epochs_trained = 0
        self.steps_trained = 0
        self.traces: list[Trace] = []  # of the last forward pass, one per layer
        self.grads: list[dict[str, np.ndarray]] = []  # of the last backward pass
        self.forward_hooks: list[ForwardHook] = []
        self.backward_hooks: list[BackwardHook] = []
        # hook -> its period: it reads only the training epochs that are multiples of it
        self.hook_periods: dict[Any, int] = {}

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.layers))
        engine = f", engine={self.history['engine'][-1]}" if self.history["engine"] else ""
        return (f"Sequential([{inner}], loss={self.loss!r}, "
                f"replicas={self.replicas or '?'}{engine})")

    # --- set-up -------------------------------------------------------------------------------

    def add(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must implement initlab.nn.Layer (Dense, Residual, "
                            f"LayerNorm, ...); got {layer!r}")
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

    @property
    def input_dim(self) -> int | None:
        return self.layers[0].fan_in if self.layers else None

    def build(self, input_dim: int, *, rng: RngLike | Sequence[RngLike] = None,
              replicas: int | None = None, variants: Sequence[Any] | None = None,
              coords: Sequence[Coordinates] | None = None,
              dtype: Any = np.float64) -> Sequential:
        """Allocate and initialise R replicas.

        Args:
            input_dim: number of input features.
            rng: one stream for every replica (spawned into R children) or a sequence of R
                streams (None, int, SeedSequence or Generator each); replica r draws its
                layers' weights then biases, layer by layer, from its own stream.
            replicas: R; defaults to the length of ``rng``, ``variants`` or ``coords``, else 1.
            variants: per replica, a weight-init spec for every layer, or a list with one spec
                (or None: the layer's own) per layer.
            coords: per replica, a mapping of its coordinates ({"variant": ..., "seed": ...}
                from :func:`sweep`); default ``{"replica": r}``.
            dtype: float64 (default) or float32.
        """
        if not self.layers:
            raise ValueError("the model has no layers; add a Dense layer before build")
        if isinstance(input_dim, bool) or not isinstance(input_dim, int | np.integer) \
                or input_dim < 1:
            raise ValueError(f"input_dim must be a positive int; got input_dim={input_dim!r}")
        self.dtype = check_dtype(dtype)
        given = list(rng) if isinstance(rng, list | tuple) else None
        sizes = {len(x) for x in (given, variants, coords) if x is not None}
        if replicas is not None:
            sizes.add(int(replicas))
        if len(sizes) > 1:
            raise ValueError(f"replicas, len(rng), len(variants) and len(coords) disagree: "
                             f"{sorted(sizes)}")
        R = sizes.pop() if sizes else 1
        if R < 1:
            raise ValueError(f"replicas must be >= 1; got replicas={R}")
        self._check_memory(int(input_dim), R)
        if given is not None:
            streams = given
        elif R == 1:
            streams = [rng]
        elif isinstance(rng, np.random.Generator | np.random.SeedSequence):
            streams = list(rng.spawn(R))
        else:
            assert rng is None or isinstance(rng, int | np.integer), f"rng={rng!r}"
            streams = list(np.random.SeedSequence(rng).spawn(R))
        self.rngs = [as_rng(s) for s in streams]
        self.replicas = R
        self.coords = [dict(c) for c in coords] if coords is not None else \
            [{"replica": r} for r in range(R)]
        fan_in = int(input_dim)
        for layer in self.layers:
            layer.build(fan_in, R, self.dtype)
            fan_in = layer.units
        for r, gen in enumerate(self.rngs):
            per_layer = self._variant_inits(None if variants is None else variants[r])
            for layer, init in zip(self.layers, per_layer, strict=True):
                layer.init_replica(r, gen, init)
        self.history = {"epoch": [], "step": [], "cost": [], "engine": []}
        self.epochs_trained = self.steps_trained = 0
        self.optimizer = None
        self._check_output_layer()
        return self

    def _check_memory(self, input_dim: int, replicas: int) -> None:
        """Refuse, before allocating, parameters that cannot fit in this machine's memory
        (counting the Dense layers' weights and biases; a width-keeping layer adds little)."""
        from initlab.nn.layers import Dense

        count, fan_in = 0, input_dim
        for layer in self.layers:
            units = layer.units if isinstance(layer, Dense) else 0
            if units:
                count, fan_in = count + (fan_in + 1) * units, units
        need = count * replicas * np.dtype(self.dtype).itemsize
        have = _physical_memory()
        if have and need > have:
            raise ValueError(f"the model's weights need {_bytes(need)} ({replicas} replicas x "
                             f"{count:,} parameters, {np.dtype(self.dtype).name}); this "
                             f"machine has {_bytes(have)} of memory: make the layers narrower "
                             f"or use fewer replicas")

    def _variant_inits(self, variant: Any) -> list[initializers.Initializer | None]:
        if isinstance(variant, list):
            if len(variant) != len(self.layers):
                raise ValueError(f"a per-layer variant needs {len(self.layers)} specs; "
                                 f"got {len(variant)}")
            return [None if v is None else initializers.get(v) for v in variant]
        init = None if variant is None else initializers.get(variant)
        return [init] * len(self.layers)

    # --- replicas by coordinates --------------------------------------------------------------

    def select(self, **where: Any) -> list[int]:
        """The replicas whose coordinates match: ``select(variant="he")``,
        ``select(variant="he", seed=3)``. A value may be a list of accepted values."""
        for key in where:
            if self.coords and key not in self.coords[0]:
                raise ValueError(f"no replica coordinate {key!r}; the coordinates are "
                                 f"{', '.join(self.coords[0])}")
        return [r for r, c in enumerate(self.coords)
                if all(c[k] in v if isinstance(v, list | tuple | set) else c[k] == v
                       for k, v in where.items())]

    def coordinate(self, key: str) -> list[Any]:
        """One coordinate of every replica, in replica order (``coordinate("seed")``)."""
        if self.coords and key not in self.coords[0]:
            raise ValueError(f"no replica coordinate {key!r}; the coordinates are "
                             f"{', '.join(self.coords[0])}")
        return [c[key] for c in self.coords]

    def take(self, index: Sequence[int]) -> Sequential:
        """A new model holding copies of the given replicas (``take([r])``: replica r alone)."""
        index = list(index)
        sub = copy.copy(self)
        sub.layers = [layer.take(index) for layer in self.layers]
        sub.rngs = [copy.deepcopy(self.rngs[i]) for i in index]
        sub.coords = [dict(self.coords[i]) for i in index]
        sub.replicas = len(index)
        sub.history = {**self.history, "epoch": list(self.history["epoch"]),
                       "step": list(self.history["step"]),
                       "engine": list(self.history["engine"]),
                       "cost": [c[index] for c in self.history["cost"]]}
        if "diverged" in self.history:
            sub.history["diverged"] = [self.history["diverged"][i] for i in index]
        sub.forward_hooks, sub.backward_hooks, sub.hook_periods = [], [], {}
        sub.traces, sub.grads = [], []
        sub.optimizer = optimizers.take_state(self.optimizer, index)
        return sub

    def put(self, index: Sequence[int], sub: Sequential) -> Sequential:
        """Write back the parameters and streams of ``sub``, a :meth:`take` of these replicas
        that a scheme (LSUV, ZerO...) has changed."""
        index = list(index)
        for layer, sub_layer in zip(self.layers, sub.layers, strict=True):
            for key, value in sub_layer.params.items():
                layer.params[key][index] = value
            for key, value in sub_layer.buffers.items():
                layer.buffers[key][index] = value
        for i, gen in zip(index, sub.rngs, strict=True):
            self.rngs[i] = gen
        return self

    # --- parameters and hooks -----------------------------------------------------------------

    def parameters(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.params.values()]

    def gradients(self) -> list[np.ndarray]:
        """The parameter gradients of the last backward pass, in :meth:`parameters` order."""
        if len(self.grads) != len(self.layers):
            raise ValueError("no backward pass to read gradients from: call "
                             "compute_gradients(X, y) (a compiled fit keeps none)")
        return [g[k] for layer, g in zip(self.layers, self.grads, strict=True)
                for k in layer.params]

    def register_hook(self, kind: Literal["forward", "backward"], fn: Callable[..., None], *,
                      every: int | None = None) -> HookHandle:
        """Call ``fn(index, layer, trace)`` after each layer's forward (a :class:`Trace`:
        ``trace.z`` the pre-activation, ``trace.a`` the activation, (R, n, units)) or
        ``fn(index, layer, grads)`` after its backward (:class:`Gradients`: ``grads.dz`` the
        gradient w.r.t. the pre-activation, ``grads.params`` dW, db, ...). The arrays are the
        engine's own: read them, do not keep or change them.

        A fit with hooks runs on the NumPy engine, unless every hook says ``every``: it reads
        only the epochs that are multiples of ``every`` (epochs_trained at the epoch's start),
        and ``fit(engine="auto")`` runs the other epochs on the compiled kernels (the same
        training, to rounding; ``history["engine"]`` says "numba+numpy")."""
        hooks: dict[str, list[Any]] = {"forward": self.forward_hooks,
                                       "backward": self.backward_hooks}
        if kind not in hooks:
            raise ValueError(f"kind must be 'forward' or 'backward'; got kind={kind!r}")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)
                                  or every < 1):
            raise ValueError(f"every must be a positive int or None; got every={every!r}")
        hooks[kind].append(fn)
        if every is not None:
            self.hook_periods[fn] = every
        return HookHandle(hooks[kind], fn, self.hook_periods)

    @contextlib.contextmanager
    def frozen_buffers(self) -> Iterator[None]:
        """Training passes inside leave the layers' buffers (running statistics) as they were:
        for passes that measure (gradcheck, a logged cost) rather than train."""
        saved = [{k: v.copy() for k, v in layer.buffers.items()} for layer in self.layers]
        try:
            yield
        finally:
            for layer, buffers in zip(self.layers, saved, strict=True):
                for key, value in buffers.items():
                    layer.buffers[key][...] = value

    @property
    def hooked(self) -> bool:
        return bool(self.forward_hooks or self.backward_hooks)

    # --- computation --------------------------------------------------------------------------

    def forward(self, X: np.ndarray, *, training: bool = False, hooks: bool = True) -> Trace:
        """Forward prepared data (see :meth:`prepare`) through every layer; keeps the traces in
        ``self.traces`` and returns the last. In training with a fused loss only the last
        layer's logits are computed (unless a forward hook wants the activation)."""
        run_hooks = hooks and bool(self.forward_hooks)
        skip_last = training and self.fused and not run_hooks
        last = len(self.layers) - 1
        self.traces = []
        out = X
        for i, layer in enumerate(self.layers):
            trace = layer.forward(out, training=training, activate=not (skip_last and i == last))
            self.traces.append(trace)
            if run_hooks:
                for hook in self.forward_hooks:
                    hook(i, layer, trace)
            out = trace.out
        return self.traces[-1]

    def loss_input(self) -> np.ndarray:
        """What the loss takes from the last forward pass: logits or the output activation."""
        last = self.traces[-1]
        return last.z if self.fused else last.out

    def cost(self, X: np.ndarray, y: np.ndarray, *, training: bool = True,
             hooks: bool = True) -> np.ndarray:
        """The per-replica loss of prepared data, (R,), from one forward pass."""
        assert self.loss is not None, "compile the model before computing a cost"
        self.forward(X, training=training, hooks=hooks)
        return self.loss.value(self.loss_input(), y)

    def backward(self, y: np.ndarray, *, param_grads: bool = True) -> None:
        """Back-propagate the loss of the last forward pass; gradients in ``self.grads``."""
        assert self.loss is not None, "compile the model before back-propagating"
        grad: np.ndarray | None = self.loss.grad(self.loss_input(), y)
        last = len(self.layers) - 1
        self.grads = [{} for _ in self.layers]
        for i in range(last, -1, -1):
            layer = self.layers[i]
            assert grad is not None
            result = layer.backward(self.traces[i], grad,
                                    wrt_preactivation=self.fused and i == last,
                                    need_input_grad=i > 0, need_param_grads=param_grads)
            self.grads[i] = result.params
            for hook in self.backward_hooks:
                hook(i, layer, result)
            grad = result.dx

    def compute_gradients(self, X: Any, y: Any, *, param_grads: bool = True) -> np.ndarray:
        """Forward and backward once without updating; per-replica loss, gradients in
        ``self.grads``. ``param_grads=False`` back-propagates only the gradients that backward
        hooks see (w.r.t. each layer's pre-activation), skipping the weight gradients: for a
        probe of a wide network they are most of the work."""
        Xp, yp = self.prepare(X, y)
        assert yp is not None
        cost = self.cost(Xp, yp)
        self.backward(yp, param_grads=param_grads)
        return cost

    # --- data ---------------------------------------------------------------------------------

    def prepare(self, X: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Check X (and y) against the model and put them in the engine's layout (building a
        model not yet built from X's width)."""
        if self.loss is None and y is not None:
            raise ValueError("compile the model (set its loss) before fit or evaluate")
        X = np.asarray(X, dtype=self.dtype if self.replicas else np.float64)
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be (n_samples, n_features) or, one per replica, "
                             f"(replicas, n_samples, n_features); got X.shape={X.shape}")
        if X.shape[-2] == 0:
            raise ValueError(f"X has no samples; got X.shape={X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"X contains {np.count_nonzero(~np.isfinite(X))} NaN or inf values")
        if not self.replicas:
            self.build(X.shape[-1])
            X = X.astype(self.dtype, copy=False)
        if X.shape[-1] != self.input_dim:
            raise ValueError(f"X has {X.shape[-1]} features; the model was built for "
                             f"{self.input_dim}")
        if X.ndim == 3 and X.shape[0] != self.replicas:
            raise ValueError(f"X with a replica axis must have {self.replicas} entries on it; "
                             f"got X.shape={X.shape}")
        X = feature_major(X)  # the layers' memory layout, once per call rather than per epoch
        if y is None:
            return X, None
        assert self.loss is not None
        y = self.loss.targets(y, self.layers[-1].units).astype(self.dtype, copy=False)
        if y.ndim not in (2, 3) or y.shape[-2] != X.shape[-2] or \
                (y.ndim == 3 and y.shape[0] not in (1, self.replicas)):
            raise ValueError(f"X and y disagree: X.shape={X.shape}, y has shape {y.shape} "
                             f"(need {X.shape[-2]} samples)")
        return X, feature_major(y)

    def _out(self, values: np.ndarray) -> Any:
        """Drop the replica axis for a single model."""
        return values[0] if self.replicas == 1 else values

    # --- training (see initlab.nn.training) ---------------------------------------------------

    def fit(self, X: Any, y: Any, *, learning_rate: float | None = None,
            epochs: int | None = None, steps: int | None = None,
            batch_size: int | None = None, log_every: int | None = 1000,
            optimizer: Any = None, shuffle: bool = True, verbose: bool = False,
            print_log: bool | None = None, callbacks: Sequence[Callable[..., None]] = (),
            workers: int | None = None,
            engine: Literal["auto", "numba", "numpy"] = "auto") -> Sequential:
        """Train every replica; see :func:`initlab.nn.training.fit`, which documents each
        argument."""
        from initlab.nn import training

        return training.fit(self, X, y, learning_rate=learning_rate, epochs=epochs,
                            steps=steps, batch_size=batch_size, log_every=log_every,
                            optimizer=optimizer, shuffle=shuffle,
                            verbose=verbose if print_log is None else print_log,
                            callbacks=callbacks, workers=workers, engine=engine)

    @property
    def costs(self) -> list:
        """The logged costs: floats for a single model, arrays of R values otherwise."""
        return [float(c[0]) if self.replicas == 1 else c for c in self.history["cost"]]

    # --- inference ----------------------------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray:
        """Outputs of the last layer, (n, k), or (R, n, k) for R replicas."""
        Xp, _ = self.prepare(X)
        return self._out(np.ascontiguousarray(self.forward(Xp).out))

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """``{"loss": ..., "accuracy": ...}`` (accuracy a fraction; None for regression)."""
        Xp, yp = self.prepare(X, y)
        assert self.loss is not None and yp is not None
        self.forward(Xp)
        out = self.loss_input()
        accuracy = self.loss.accuracy(out, yp)
        return {"loss": self._out(self.loss.value(out, yp)),
                "accuracy": None if accuracy is None else self._out(accuracy)}


NeuralNetwork = Sequential  # the sources' name


def _physical_memory() -> int:
    """Bytes of memory on this machine (0 where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
