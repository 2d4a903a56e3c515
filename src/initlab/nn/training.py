"""The training loop: epochs or steps, minibatches, callbacks, the history, and the choice of
engine (the compiled kernels or the NumPy reference)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from initlab.nn import optimizers
from initlab.nn.contract import feature_major
from initlab.nn.layers import Dense
from initlab.nn.normalization import BatchNorm, LayerNorm
from initlab.nn.residual import Residual

if TYPE_CHECKING:
    from initlab.nn.model import Sequential

Engine = Literal["auto", "numba", "numpy"]


def fit(model: Sequential, X: Any, y: Any, *, learning_rate: float | None = None,
        epochs: int | None = None, steps: int | None = None, batch_size: int | None = None,
        log_every: int | None = 1000, optimizer: Any = None, shuffle: bool = True,
        verbose: bool = False, callbacks: Sequence[Callable[..., None]] = (),
        workers: int | None = None, engine: Engine = "auto") -> Sequential:
    """Train every replica of ``model``; log the training cost every ``log_every`` epochs and
    at the last.

    Args:
        epochs / steps: the budget, in passes over the data or in optimizer updates (give one;
            default 1 epoch). With minibatches a step budget may end inside an epoch.
        learning_rate: the rate, kept for later fits. A second fit continues the optimizer's
            state (momentum, Adam's moments and step count): fit(5) then fit(5) is fit(10), also
            with a new learning rate; a new ``optimizer`` starts a fresh state.
        batch_size: None is full-batch gradient descent; otherwise each replica shuffles with
            its own stream (unless ``shuffle=False``).
        callbacks: called as ``callback(model, epoch)`` after every epoch; one that is also a
            context manager (a Probe) is entered for the whole fit.
        workers: with the compiled engine, its threads (default all cores); with the NumPy
            engine, processes that split the replicas (default 1: no processes; a pool never
            forks this process).
        engine: "numba" (the compiled kernels), "numpy" (the reference), or "auto": the
            kernels where they apply (Dense layers, no hooks or callbacks), else NumPy (the
            environment variable INITLAB_ENGINE=numpy|numba sets what "auto" means); with
            hooks that read every k-th epoch only (a Probe), the kernels run the epochs
            between ("numba+numpy"). Which ran is appended to ``model.history["engine"]``
            and shown in ``repr(model)``.

    The cost logged at epoch e is the loss at the start of that epoch.
    """
    if model.loss is None:
        raise ValueError("compile the model (set its loss) before fit")
    Xp, yp = model.prepare(X, y)
    assert yp is not None
    n = Xp.shape[-2]
    batch = _check_batch_size(batch_size, n)
    per_epoch = 1 if batch is None else math.ceil(n / batch)
    n_steps = _budget(epochs, steps, per_epoch)
    if log_every is not None and (isinstance(log_every, bool) or
                                  not isinstance(log_every, int | np.integer) or log_every < 0):
        raise ValueError(f"log_every must be an int >= 0 or None; got log_every={log_every!r}")
    _set_optimizer(model, optimizer, learning_rate)
    chosen = choose_engine(model, engine, callbacks)
    plan = Plan(n_steps, per_epoch, batch, int(log_every or 0), shuffle, verbose)
    hooked = _hooked_epochs(model, plan) if chosen == "numba+numpy" else None
    if hooked is not None and hooked.all():
        chosen = "numpy"  # every epoch is read by a hook: there is nothing to compile
    model.history["engine"].append(chosen)
    before = divergence(model.history, model.replicas)
    # a diverging replica is data (history["diverged"], one warning below), not a storm of
    # numpy's overflow warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if chosen == "numba":
            run_compiled(model, Xp, yp, plan, threads=workers)
        elif hooked is not None and chosen == "numba+numpy":
            run_scheduled(model, Xp, yp, plan, hooked, threads=workers)
        elif (n_workers := _workers(workers, model.replicas)) > 1:
            from initlab.nn import parallel

            parallel.fit_in_workers(model, Xp, yp, plan, n_workers)
        else:
            with contextlib.ExitStack() as stack:
                for callback in callbacks:  # a callback that is a context manager spans fit
                    if hasattr(callback, "__enter__"):
                        stack.enter_context(callback)  # type: ignore[arg-type]
                run_numpy(model, Xp, yp, plan, callbacks)
    _report_divergence(model, before)
    return model


DIVERGED = 1e3  # a logged cost above this many times the first one counts as diverged


def divergence(history: dict[str, list], replicas: int) -> np.ndarray:
    """Per replica, the first logged epoch whose cost is not finite or above ``DIVERGED``
    times the first logged cost; -1 where there is none."""
    out = np.full(replicas, -1)
    if not history["cost"]:
        return out
    costs = np.array(history["cost"], dtype=float).reshape(len(history["cost"]), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(costs) | (costs > DIVERGED * np.abs(costs[0]))
    first = np.argmax(bad, axis=0)
    epochs = np.asarray(history["epoch"])
    return np.where(bad.any(axis=0), epochs[first], -1)


def _report_divergence(model: Sequential, before: np.ndarray) -> None:
    """Keep each replica's divergence epoch in ``history["diverged"]``; one warning, in
    words, for the replicas that diverged in this fit."""
    now = divergence(model.history, model.replicas)
    model.history["diverged"] = now.tolist()
    new = np.flatnonzero((now >= 0) & (before < 0))
    if not new.size:
        return
    lr = getattr(model.optimizer, "learning_rate", None)
    first = ", ".join(f"replica {r} at epoch {now[r]}" for r in new[:3])
    more = f" and {new.size - 3} more" if new.size > 3 else ""
    warnings.warn(f"{new.size} of {model.replicas} replicas diverged (the cost became "
                  f"non-finite or over {DIVERGED:g} times its first logged value): {first}"
                  f"{more}, learning rate {lr:g}; model.history['diverged'] has every "
                  f"replica's epoch (-1: none)", RuntimeWarning, stacklevel=3)


class Plan:
    """What one fit does: ``steps`` updates, ``per_epoch`` of them an epoch, in batches of
    ``batch`` (None: full batch), logging every ``log_every`` epochs and at the last."""

    def __init__(self, steps: int, per_epoch: int, batch: int | None, log_every: int,
                 shuffle: bool, verbose: bool):
        self.steps, self.per_epoch, self.batch = steps, per_epoch, batch
        self.log_every, self.shuffle, self.verbose = log_every, shuffle, verbose

    @property
    def epochs(self) -> int:
        """Epochs begun (the last one partial when the step budget ends inside it)."""
        return math.ceil(self.steps / self.per_epoch)

    def steps_in(self, k: int) -> int:
        """How many updates epoch k of this fit makes."""
        return min(self.per_epoch, self.steps - k * self.per_epoch)

    def part(self, k: int, end: int) -> Plan:
        """Epochs k ... end - 1 of this fit as a fit of their own."""
        steps = (end - k - 1) * self.per_epoch + self.steps_in(end - 1)
        return Plan(steps, self.per_epoch, self.batch, self.log_every, self.shuffle,
                    self.verbose)

    def logs(self, first_epoch: int) -> np.ndarray:
        """Which epochs of this fit log their starting cost."""
        epochs = first_epoch + np.arange(self.epochs)
        log = (epochs % self.log_every == 0) if self.log_every else np.zeros(self.epochs, bool)
        if self.epochs:
            log[-1] = True
        return log


def _check_batch_size(batch_size: int | None, n: int) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None; "
                         f"got batch_size={batch_size!r}")
    return None if batch_size >= n else int(batch_size)


def _budget(epochs: int | None, steps: int | None, per_epoch: int) -> int:
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs= or steps=, not both; got epochs={epochs!r}, "
                         f"steps={steps!r}")
    for name, value in (("epochs", epochs), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, int | np.integer) or value < 0):
            raise ValueError(f"{name} must be an int >= 0; got {name}={value!r}")
    if steps is not None:
        return int(steps)
    return (1 if epochs is None else int(epochs)) * per_epoch


def _set_optimizer(model: Sequential, optimizer: Any, learning_rate: float | None) -> None:
    lr = {} if learning_rate is None else {"learning_rate": learning_rate}
    if optimizer is not None or model.optimizer is None:
        model.optimizer = optimizers.get(optimizer or model.optimizer_spec, **lr)
    elif learning_rate is not None:  # a new rate for the same optimizer: its state goes on
        optimizers.get(model.optimizer_spec, **lr)  # validates the rate, names it if bad
        model.optimizer.learning_rate = float(learning_rate)


def choose_engine(model: Sequential, engine: Engine, callbacks: Sequence[Any]) -> str:
    """The engine a fit will run on, or a ValueError saying why the one asked for cannot."""
    if engine not in ("auto", "numba", "numpy"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'numpy'; got engine={engine!r}")
    if engine == "auto":
        default = os.environ.get("INITLAB_ENGINE", "auto")
        if default not in ("auto", "numba", "numpy"):
            raise ValueError(f"INITLAB_ENGINE must be auto, numba or numpy; got "
                             f"INITLAB_ENGINE={default!r}")
        engine = default  # type: ignore[assignment]
    if engine == "numpy":
        return "numpy"
    reason = compiled_unsupported(model, callbacks)
    if reason is None:
        return "numba"
    if engine == "numba":
        raise ValueError(f"engine='numba' cannot train this model: {reason}; "
                         f"use engine='numpy' or 'auto'")
    if (not callbacks and model.hooked and _periods(model) is not None
            and compiled_unsupported(model, hooks=False) is None):
        return "numba+numpy"  # the hooks read every k-th epoch: the kernels run the rest
    return "numpy"


def _periods(model: Sequential) -> list[int] | None:
    """The period of every hook (see ``Sequential.register_hook``), or None if one has none."""
    hooks = [*model.forward_hooks, *model.backward_hooks]
    periods = [model.hook_periods.get(hook) for hook in hooks]
    return None if None in periods else [p for p in periods if p is not None]


def _hooked_epochs(model: Sequential, plan: Plan) -> np.ndarray:
    """Which epochs of this fit a hook reads."""
    epochs = model.epochs_trained + np.arange(plan.epochs)
    return np.any([epochs % p == 0 for p in _periods(model) or [1]], axis=0)


def compiled_unsupported(model: Sequential, callbacks: Sequence[Any] = (),
                         hooks: bool = True) -> str | None:
    """Why the compiled kernels cannot train this model, or None when they can (``hooks``:
    whether hooks count)."""
    if callbacks:
        return "callbacks need the NumPy engine (they see every epoch)"
    if hooks and model.hooked:
        return "hooks need the NumPy engine (they see every layer's arrays)"
    plain = (Dense, LayerNorm, BatchNorm)
    odd = [layer for layer in model.layers if type(layer) not in plain and not (
        type(layer) is Residual and all(type(sub) in plain for sub in layer.branch))]
    if odd:
        return (f"the kernels train stacks of Dense, LayerNorm and BatchNorm layers and "
                f"residual blocks of them; got {odd[0]!r}")
    if type(model.layers[-1]) is not Dense:
        return "the kernels need a Dense last layer"
    try:
        from initlab.nn import kernels
    except ImportError as error:  # numba missing or broken: say so, never fail silently
        return f"numba is not available ({error})"
    assert model.loss is not None and model.optimizer is not None
    return kernels.supported(_kernel_layers(model.layers)[2], model.loss, model.optimizer,
                             model.dtype)


def _workers(workers: int | None, replicas: int) -> int:
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None; got workers={workers!r}")
    return min(workers, replicas)


def log_cost(model: Sequential, epoch: int, cost: np.ndarray, verbose: bool) -> None:
    model.history["epoch"].append(epoch)
    model.history["step"].append(model.steps_trained)
    model.history["cost"].append(np.array(cost, dtype=float))
    if verbose:
        text = (f"{cost[0]:.10g}" if model.replicas == 1 else
                f"mean {np.mean(cost):.6g} +- {np.std(cost):.2g} over {model.replicas} replicas")
        print(f"Epoch {epoch} - cost {text}")


def orders(model: Sequential, n: int) -> np.ndarray:
    """Each replica's sample order for one epoch, (R, n), drawn from its own stream."""
    return np.stack([gen.permutation(n) for gen in model.rngs])


def run_scheduled(model: Sequential, X: np.ndarray, y: np.ndarray, plan: Plan,
                  hooked: np.ndarray, threads: int | None = None) -> None:
    """The epochs a hook reads on the NumPy engine, each run of the others in the kernels:
    one training, logged as either engine alone logs it."""
    log = plan.logs(model.epochs_trained)
    k = 0
    while k < plan.epochs:
        end = k + 1
        while end < plan.epochs and not hooked[k] and not hooked[end]:
            end += 1
        run = run_numpy if hooked[k] else functools.partial(run_compiled, threads=threads)
        run(model, X, y, plan.part(k, end), log=log[k:end])
        k = end


def run_numpy(model: Sequential, X: np.ndarray, y: np.ndarray, plan: Plan,
              callbacks: Sequence[Callable[..., None]] = (),
              log: np.ndarray | None = None) -> None:
    """The reference training loop, on the NumPy engine (``log``: which epochs log their
    cost, default ``plan.logs``)."""
    assert model.loss is not None and model.optimizer is not None
    params = model.parameters()
    log = plan.logs(model.epochs_trained) if log is None else log
    for k in range(plan.epochs):
        epoch = model.epochs_trained
        if plan.batch is None:
            model.forward(X, training=True)
            if log[k]:
                log_cost(model, epoch, model.loss.value(model.loss_input(), y), plan.verbose)
            model.backward(y)
            model.optimizer.step(params, model.gradients())
            model.steps_trained += 1
        else:
            if log[k]:  # the cost of all the data, which is not a step: no buffer moves
                with model.frozen_buffers():
                    log_cost(model, epoch, model.cost(X, y), plan.verbose)
            for xb, yb in _batches(model, X, y, plan, plan.steps_in(k)):
                model.cost(xb, yb)
                model.backward(yb)
                model.optimizer.step(params, model.gradients())
                model.steps_trained += 1
        model.epochs_trained += 1
        for callback in callbacks:
            callback(model, epoch)


def _batches(model: Sequential, X: np.ndarray, y: np.ndarray, plan: Plan,
             count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n, batch = X.shape[-2], plan.batch
    assert batch is not None
    if plan.shuffle:
        order = orders(model, n)
        X = X[order] if X.ndim == 2 else np.take_along_axis(X, order[..., None], axis=1)
        y = y[order] if y.ndim == 2 else np.take_along_axis(
            np.broadcast_to(y, (model.replicas, *y.shape[-2:])), order[..., None], axis=1)
        X, y = feature_major(X), feature_major(y)
    for start in range(0, count * batch, batch):
        yield X[..., start:start + batch, :], y[..., start:start + batch, :]


# the sample orders handed to the kernels at once stay below this many entries (~32 MB)
_ORDER_ENTRIES = 4_000_000


def _kernel_layers(layers: Sequence[Any]) -> tuple[list, list, list, list]:
    """The kernels' flat layers: per layer its weights, biases, activation and extra (see
    ``kernels.train``), a residual block as its branch's layers and then its sum."""
    from initlab.nn import kernels

    weights: list = []
    biases: list = []
    acts: list = []
    extras: list = []
    for layer in layers:
        if isinstance(layer, Residual):  # its branch holds no block (compiled_unsupported)
            start = len(weights)
            sub = _kernel_layers(layer.branch)
            weights += sub[0] + [layer.scale]
            biases += sub[1] + [None]
            acts += sub[2] + [layer.activation]
            extras += sub[3] + [kernels.Skip(start)]
            continue
        weights.append(layer.params["W" if type(layer) is Dense else "gamma"])
        biases.append(layer.params.get("b" if type(layer) is Dense else "beta"))
        acts.append(layer.activation)
        extras.append(None if type(layer) is Dense else
                      kernels.Norm("layer", layer.eps) if isinstance(layer, LayerNorm) else
                      kernels.Norm("batch", layer.eps, layer.momentum,
                                   layer.buffers["running_mean"], layer.buffers["running_var"]))
    return weights, biases, acts, extras


def run_compiled(model: Sequential, X: np.ndarray, y: np.ndarray, plan: Plan,
                 threads: int | None = None, log: np.ndarray | None = None) -> None:
    """The same training as :func:`run_numpy`, by the compiled kernels: whole epochs in chunks
    (between logged epochs when verbose, so the log prints as it goes), each replica's sample
    orders drawn from its stream exactly as the NumPy loop draws them; a step budget that ends
    inside an epoch makes that epoch's few steps in the kernels too."""
    from initlab.nn import kernels

    assert model.loss is not None and model.optimizer is not None
    model.traces, model.grads = [], []  # no pass of the NumPy engine describes the new weights
    n = X.shape[-2]
    weights, biases, activations, extras = _kernel_layers(model.layers)
    X, y = np.ascontiguousarray(X), np.ascontiguousarray(y)
    epochs = plan.epochs
    log = plan.logs(model.epochs_trained) if log is None else log
    shuffled = plan.batch is not None and plan.shuffle
    chunk = max(1, _ORDER_ENTRIES // (model.replicas * n)) if shuffled else max(epochs, 1)
    k = 0
    while k < epochs:
        end = min(epochs, k + chunk)
        if plan.verbose:  # stop after the next logged epoch, to print it
            later = np.flatnonzero(log[k:end])
            end = k + int(later[0]) + 1 if len(later) else end
        order = np.stack([orders(model, n) for _ in range(k, end)]) if shuffled else None
        costs = kernels.train(weights, biases, activations, model.loss, model.optimizer, X, y,
                              epochs=end - k, batch_size=plan.batch, orders=order,
                              log=log[k:end], threads=threads, extras=extras,
                              last_steps=plan.steps_in(end - 1))
        start_epoch, start_step = model.epochs_trained, model.steps_trained
        for row, j in zip(costs, np.flatnonzero(log[k:end]), strict=True):
            model.epochs_trained, model.steps_trained = \
                start_epoch + int(j), start_step + int(j) * plan.per_epoch
            log_cost(model, model.epochs_trained, row, plan.verbose)
        model.epochs_trained = start_epoch + end - k
        model.steps_trained = start_step + (end - k - 1) * plan.per_epoch + plan.steps_in(end - 1)
        k = end
