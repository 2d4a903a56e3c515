"""How numba compiles the kernels: the options, a shorter pass pipeline, and a cache that
knows every file the cached kernel is compiled from.

Cold compile time is most of the cost of a short run (issue #9), so the kernels ask numba for
less: no Python wrappers where compiled code is the only caller, no rewrite or literal passes
where nothing needs them (:class:`KernelPipeline`), and no cache but the replica kernel's,
which holds everything compiled into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core import caching
from numba.core.compiler import CompilerBase
from numba.core.compiler_machinery import PassManager
from numba.core.typed_passes import (
    AnnotateTypes,
    IRLegalization,
    NativeLowering,
    NoPythonBackend,
    NopythonTypeInference,
    PreLowerStripPhis,
)
from numba.core.untyped_passes import (
    DeadBranchPrune,
    FixupArgs,
    IRProcessing,
    ReconstructSSA,
    TranslateByteCode,
)

from initlab.nn import activations as act_mod


class KernelPipeline(CompilerBase):
    """numba's nopython pipeline without the passes for what the kernels do not use: closures
    and ``with`` blocks, ``raise`` (the kernels follow numpy's error model), ``literally`` and
    ``literal_unroll``, numba-level inlining (``inline="always"`` compiles to a call), the
    rewrites (array expressions, constant folding: LLVM folds) and the feature checks, which
    only raise; it keeps dead-branch pruning, which leaves out the branches on an argument
    that is None. It saves ~6% of the cold compile; a kernel that raises or makes a closure
    fails to compile ("Unsupported constraint encountered: raise ...")."""

    def define_pipelines(self) -> list[PassManager]:
        pm = PassManager("kernel")
        for pass_class, what in [(TranslateByteCode, "analyzing bytecode"),
                                 (FixupArgs, "fix up args"),
                                 (IRProcessing, "processing IR"),
                                 # `if norm is not None` on an argument typed None: the
                                 # normalization code is left out of a Dense stack's kernel
                                 (DeadBranchPrune, "dead branch pruning"),
                                 (ReconstructSSA, "ssa"),
                                 (NopythonTypeInference, "nopython frontend"),
                                 (PreLowerStripPhis, "remove phis nodes"),
                                 (IRLegalization, "legalize, add the deletions (decrefs)"),
                                 (AnnotateTypes, "annotate types"),
                                 (NativeLowering, "native lowering"),
                                 (NoPythonBackend, "nopython mode backend")]:
            pm.add_pass(pass_class, what)
        pm.finalize()
        return [pm]


# numpy's error model: x / 0 is inf or nan as in numpy, not an exception (and loops vectorize)
_OPTIONS: dict[str, Any] = dict(nogil=True, error_model="numpy", pipeline_class=KernelPipeline)

# a per-op kernel: called from compiled code only, so no Python or C wrapper; and no cache of
# its own (numba caches it inside the replica kernel, and compiles it only when that misses)
kernel: Callable[[Callable[..., Any]], Any] = numba.njit(  # type: ignore[call-overload]
    no_cpython_wrapper=True, no_cfunc_wrapper=True, **_OPTIONS)  # (options numba's stubs lack)


def _sources_stamp() -> str:
    """A digest of every source compiled into the cached kernel: this package's modules and
    activations.py (the SELU constants)."""
    digest = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(str(act_mod.__file__))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


class _SourcesCacheImpl(caching.CompileResultCacheImpl):
    def __init__(self, py_func: Any):
        super().__init__(py_func)
        stamp = _sources_stamp()
        self._locator.get_source_stamp = lambda: stamp


class _SourcesCache(caching.FunctionCache):
    """numba's on-disk cache (``cache=True``) with the index stamped by
    :func:`_sources_stamp`. numba stamps it with the cached function's file alone ("cache
    invalidation fails to recognize changes in functions defined in a different file", its
    docs say), and the replica kernel compiles in code from three."""
    _impl_class = _SourcesCacheImpl


def cached_kernel(fn: Callable[..., Any]) -> Any:
    """``numba.njit(cache=True)`` for the kernel Python calls, with :class:`_SourcesCache`
    (set as ``Dispatcher.enable_caching`` sets numba's own)."""
    dispatcher = numba.njit(**_OPTIONS)(fn)
    dispatcher._cache = _SourcesCache(dispatcher.py_func)
    return dispatcher
