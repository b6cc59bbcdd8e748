"""The CPU kernel's epilogue in one compiled pass: for a float32 tile of r, add
2z = log((1 + r) / (1 - r)) and (2z)^2 into two float32 tiles.

NumPy does the same in seven passes over the tile (``cpu.log_ratio_inplace`` and the
adds); this loop reads r once. numba's ``math.log`` is not vectorised on this kind of
machine (its vector log needs Intel's SVML), so the log here is written out in plain
float32 arithmetic that LLVM vectorises: the exponent is split off through the float's
bits, and log of the mantissa m in [sqrt(1/2), sqrt(2)) is 2 atanh(s) with
s = (m - 1) / (m + 1), |s| < 0.172, by its series to s^9 (the next term is below 1e-9).
For |r| <= 0.95 its absolute error is below 4e-7, as NumPy's float32 log
(tests/lnm/test_mapping_kernels.py).

Importing this module imports numba (``cpu`` does so only for a task that asks for the
loop): with the loop loaded from numba's cache that costs about half a second per
process, which a task earns back only when it is large (``cpu.COMPILED_EPILOGUE_FROM``).
The first process on a machine compiles it (a few seconds) into numba's cache, next to
this file (or numba's user-wide cache folder where this one is read-only).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

ONE, TWO = np.float32(1.0), np.float32(2.0)
# ln 2 in two parts, so that k ln 2 (|k| <= 6 here) keeps float32 accuracy.
LN2_HIGH = np.float32(0.693145751953125)
LN2_LOW = np.float32(math.log(2.0) - 0.693145751953125)
SQRT_HALF_BITS = np.int32(0x3F3504F3)
C9, C7, C5, C3 = (np.float32(1.0 / k) for k in (9, 7, 5, 3))
SHIFT = np.int32(23)

# No reassociation among the fast-math flags: it could fold k ln2_high + k ln2_low back
# into one rounded product. The loop needs none to vectorise (it has no reduction).
# nogil: both worker threads run it at once.
jit = numba.njit(fastmath={"nsz", "arcp", "contract"}, error_model="numpy", boundscheck=False, cache=True,
                 nogil=True)


@intrinsic
def _float_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))
    return types.int32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@jit
def twice_atanh(r):
    """2 atanh(r) = log((1 + r) / (1 - r)) of a float32 |r| <= 0.95."""
    ratio = (ONE + r) / (ONE - r)
    bits = _float_bits(ratio)
    exponent = (bits - SQRT_HALF_BITS) >> SHIFT
    mantissa = _bits_float(bits - (exponent << SHIFT))
    s = (mantissa - ONE) / (mantissa + ONE)
    s2 = s * s
    series = (((C9 * s2 + C7) * s2 + C5) * s2 + C3) * s2 + ONE
    k = np.float32(exponent)
    return TWO * s * series + k * LN2_HIGH + k * LN2_LOW


@jit
def _add_row(r, z_sum, z2_sum, width):
    for j in range(width):
        twice_z = twice_atanh(r[j])
        z_sum[j] += twice_z
        z2_sum[j] += twice_z * twice_z


@jit
def add_twice_z(r, z_sum, z2_sum, width):
    """z_sum[:, :width] += 2z and z2_sum[:, :width] += (2z)^2 for r[:, :width], |r| <= 0.95
    (three C-contiguous float32 tiles of lesions x block width)."""
    for row in range(r.shape[0]):
        _add_row(r[row], z_sum[row], z2_sum[row], width)
