"""The residual block's sum in the kernels (:class:`initlab.nn.Residual`), gemm layout: ``y = x
+ scale h``, x the block's input, h its branch's output, scale a parameter of one value.

The engine's arithmetic: ``scale h`` rounded to the dtype, then the sum; backward, the scale's
gradient sum(dy h) (the products rounded, summed in float64), the branch's gradient scale dy,
and dy kept to be added to the gradient at the block's input, ``dy + dx_branch``.
"""

from __future__ import annotations

from initlab.nn.kernels.compiler import kernel
from initlab.nn.kernels.simd import like


@kernel
def forward(h, x, y, scale, m, cc):
    """y = x + scale[0] h over m values."""
    c = scale[0]
    for q in range(m):
        y[q] = x[q] + like(y, c * h[q])


@kernel
def backward(dy, h, scale, gscale, dh, kept, m, cc):
    """gscale[0] = sum(dy h); dh = scale[0] dy; kept = dy (for the block's input)."""
    s, c = 0.0, scale[0]
    for q in range(m):
        g = dy[q]
        s += like(dy, g * h[q])
        kept[q] = g
        dh[q] = g * c
    gscale[0] = s


@kernel
def add_kept(dx, kept, m):
    """dx = kept + dx: the identity's gradient joins the branch's at the block's input."""
    for q in range(m):
        dx[q] = kept[q] + dx[q]
