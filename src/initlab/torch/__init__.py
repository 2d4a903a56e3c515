"""The PyTorch adapter: initlab initializers, LSUV, Fixup and the probes on ``torch.nn`` modules.

Layouts: PyTorch stores Linear weights (out, in), convolutions (out, in / groups, *kernel) and
transposed convolutions (in, out / groups, *kernel); initlab's rule is (*kernel, in, out)
(see :mod:`initlab.fans`). Weights are drawn in initlab's layout and moved into PyTorch's, so
fan_in counts the channels a layer reads and fan_out those it writes, for transposed
convolutions too (PyTorch's own ``_calculate_fan_in_and_fan_out`` swaps those two).

torch is optional: importing this package needs it, the rest of initlab does not. Modules:
:mod:`~initlab.torch.layout` (layers and layouts), :mod:`~initlab.torch.schemes` (initialize, LSUV,
Fixup), :mod:`~initlab.torch.probes` (probes and inspection), :mod:`~initlab.torch.doctor`
(``doctor(model, example_input)``: the read-only audit behind ``initlab doctor``),
:mod:`~initlab.torch.coordcheck` (μP's coordinate check with a verdict per layer).
"""

from initlab.torch.coordcheck import CoordCheck, coordcheck
from initlab.torch.doctor import doctor
from initlab.torch.layout import LAYERS, initlab_shape, layers, to_torch, unit_weights
from initlab.torch.probes import (
                                  Probe,
                                  inspect_module,
                                  load_factory,
                                  probe,
                                  probe_batch,
                                  verdict_rows,
)
from initlab.torch.schemes import FixupResult, Residual, fixup, initialize, lsuv

__all__ = ["LAYERS", "CoordCheck", "FixupResult", "Probe", "Residual", "coordcheck", "doctor",
           "fixup", "initialize", "initlab_shape", "inspect_module", "layers", "load_factory",
           "lsuv", "probe", "probe_batch", "to_torch", "unit_weights", "verdict_rows"]
