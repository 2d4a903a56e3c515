"""How numba compiles the kernels: the options, a shorter pass pipeline, and a cache that
knows every file the cached kernel is compiled from.

Cold compile time is most of the cost of a short run (issue #9), so the kernels ask numba for
less: no Python wrappers where compiled code is the only caller, no rewrite or literal passes
where nothing needs them (:class:`KernelPipeline`), and no cache but the replica kernel's,
which holds everything compiled into it. A per-op kernel is optimized and made machine code
once, inside the replica kernel (:class:`_LinkedLibrary`), and out of line there (``kernel``:
called once per chunk and layer, its loops inside it, so a call costs nothing; inlined at each
of its call sites, LLVM optimized and emitted every copy). Only the scalar functions that
run per element (``scalar_kernel``) are inlined.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core import caching
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler import CompilerBase
from numba.core.compiler_machinery import PassManager, register_pass
from numba.core.typed_passes import (
    AnnotateTypes,
    IRLegalization,
    NativeLowering,
    NoPythonBackend,
    NopythonTypeInference,
)
from numba.core.untyped_passes import (
    DeadBranchPrune,
    FixupArgs,
    IRProcessing,
    TranslateByteCode,
)

from initlab.nn import activations as act_mod


class _LinkedLibrary(JITCodeLibrary):
    """The code library of a per-op kernel, which only compiled code calls: the caller links
    its module in, then optimizes the whole and makes the machine code. So this one skips its
    own module-level optimization and machine code, done once more in the caller and never
    used (~1 s of the cold compile)."""

    outlined: str | None = None  # the kernel's own function, kept out of line in the caller

    def _optimize_final_module(self) -> None:
        pass  # the caller's module passes run over the linked-in functions

    def _finalize_final_module(self) -> None:
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        if self.outlined is not None:
            self._final_module.get_function(self.outlined).add_function_attribute("noinline")
        self._finalized = True  # not added to the execution engine: no machine code

    def get_pointer_to_function(self, name: str) -> int:
        return 0  # no Python wrapper to point at (no_cpython_wrapper)

    @property
    def codegen(self) -> Any:
        return _NoEnvironment(self._codegen)


class _NoEnvironment:
    """The codegen, as lowering sees it for a :class:`_LinkedLibrary`: no environment to set
    (its global is in no engine; in the caller's module, the linked-in copy of a kernel that
    neither raises nor holds Python objects never reads it)."""

    def __init__(self, codegen: Any):
        self._codegen = codegen

    def set_env(self, name: str, env: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codegen, name)


@register_pass(mutates_CFG=True, analysis_only=False)
class _LinkedLowering(NativeLowering):
    """numba's lowering into a :class:`_LinkedLibrary` (with ``outline``, its function marked
    to stay out of line)."""
    _name = "initlab_linked_lowering"
    outline = False

    def run_pass(self, state: Any) -> bool:
        library = state.library = _LinkedLibrary(state.targetctx.codegen(),
                                                 state.func_id.func_qualname)
        done = bool(super().run_pass(state))
        if self.outline:
            library.outlined = state.cr.fndesc.llvm_func_name
        return done


@register_pass(mutates_CFG=True, analysis_only=False)
class _OutlinedLowering(_LinkedLowering):
    _name = "initlab_outlined_lowering"
    outline = True


class KernelPipeline(CompilerBase):
    """numba's nopython pipeline without the passes for what the kernels do not use: closures
    and ``with`` blocks, ``raise`` (the kernels follow numpy's error model), ``literally`` and
    ``literal_unroll``, numba-level inlining (``inline="always"`` compiles to a call), the
    rewrites (array expressions, constant folding: LLVM folds) and the feature checks, which
    only raise; and SSA reconstruction (with the removal of its phi nodes), which lets a
    variable take a new type at each assignment: a kernel's variable keeps one type, or
    numba unifies its assignments (an int and a float give a float) or fails to type it. It
    keeps dead-branch pruning, which leaves out the branches on an argument that is None. A
    kernel that raises or makes a closure fails to compile ("Unsupported constraint
    encountered: raise ..."). And a kernel calls none of numba's overloads (``min``, ``max``,
    ``shape[k]``, ``tup[k]``): numba compiles each with its own full pipeline, 30-40 ms apiece;
    a conditional, ``len`` or unpacking lower directly (a test lists what a cold compile
    compiles)."""

    lowering: type = NativeLowering

    def define_pipelines(self) -> list[PassManager]:
        pm = PassManager("kernel")
        for pass_class, what in [(TranslateByteCode, "analyzing bytecode"),
                                 (FixupArgs, "fix up args"),
                                 (IRProcessing, "processing IR"),
                                 # `if norm is not None` on an argument typed None: the
                                 # normalization code is left out of a Dense stack's kernel
                                 (DeadBranchPrune, "dead branch pruning"),
                                 (NopythonTypeInference, "nopython frontend"),
                                 (IRLegalization, "legalize, add the deletions (decrefs)"),
                                 (AnnotateTypes, "annotate types"),
                                 (self.lowering, "native lowering"),
                                 (NoPythonBackend, "nopython mode backend")]:
            pm.add_pass(pass_class, what)
        pm.finalize()
        return [pm]


class OpPipeline(KernelPipeline):
    lowering = _OutlinedLowering


class ScalarPipeline(KernelPipeline):
    lowering = _LinkedLowering


# numpy's error model: x / 0 is inf or nan as in numpy, not an exception (and loops vectorize)
_OPTIONS: dict[str, Any] = dict(nogil=True, error_model="numpy", pipeline_class=KernelPipeline)

# a per-op kernel: called from compiled code only, so no Python or C wrapper; and no cache of
# its own (numba caches it inside the replica kernel, and compiles it only when that misses)
kernel: Callable[[Callable[..., Any]], Any] = numba.njit(  # type: ignore[call-overload]
    no_cpython_wrapper=True, no_cfunc_wrapper=True, **{**_OPTIONS, "pipeline_class": OpPipeline})
scalar_kernel: Callable[[Callable[..., Any]], Any] = numba.njit(  # type: ignore[call-overload]
    no_cpython_wrapper=True, no_cfunc_wrapper=True,
    **{**_OPTIONS, "pipeline_class": ScalarPipeline})  # (options numba's stubs lack)


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
    :func:`_sources_stamp`, and an index per signature.

    numba stamps the index with the cached function's file alone ("cache invalidation fails
    to recognize changes in functions defined in a different file", its docs say), and the
    replica kernel compiles in code from three. And numba keeps one index per function, of
    every signature: a save reads it, takes the first free data file name and writes both,
    so two processes that save two signatures at once (a sweep's workers on a fresh cache,
    one in float64 and one in float32) can leave one's key naming the other's code. With an index per
    signature, two processes only ever save the same code under the same name (each write
    is a rename, whole)."""
    _impl_class = _SourcesCacheImpl

    def __init__(self, py_func: Any):
        super().__init__(py_func)
        self._files: dict[str, caching.IndexDataCacheFile] = {}

    def _file(self, sig: Any) -> caching.IndexDataCacheFile:
        tag = hashlib.sha256(str(sig).encode()).hexdigest()[:16]
        if tag not in self._files:
            self._files[tag] = caching.IndexDataCacheFile(
                cache_path=self._cache_path, filename_base=f"{self._impl.filename_base}-{tag}",
                source_stamp=self._impl.locator.get_source_stamp())
        return self._files[tag]

    def _load_overload(self, sig: Any, target_context: Any) -> Any:
        self._cache_file = self._file(sig)
        return super()._load_overload(sig, target_context)

    def _save_overload(self, sig: Any, data: Any) -> None:
        self._cache_file = self._file(sig)
        super()._save_overload(sig, data)

    def flush(self) -> None:
        for file in self._files.values():
            file.flush()


def cached_kernel(fn: Callable[..., Any]) -> Any:
    """``numba.njit(cache=True)`` for the kernel Python calls, with :class:`_SourcesCache`
    (set as ``Dispatcher.enable_caching`` sets numba's own)."""
    dispatcher = numba.njit(**_OPTIONS)(fn)
    dispatcher._cache = _SourcesCache(dispatcher.py_func)
    return dispatcher
