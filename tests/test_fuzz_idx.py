"""The IDX reader under arbitrary bytes (hypothesis): it returns the array the header
describes, or refuses with an IDXError that names the file; never another exception."""

import gzip
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlab.data import IDXError, read_idx

TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_bytes(draw):
    """A header (often valid, sometimes not) followed by a payload of any length."""
    code = draw(st.sampled_from([*TYPES, 0x00, 0x07, 0xFF]))
    dims = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
    magic = bytes([0, 0, code, len(dims)]) if draw(st.booleans()) else draw(st.binary(
        min_size=0, max_size=4))
    header = magic + b"".join(struct.pack(">I", d) for d in dims)
    size = int(np.prod(dims)) * (np.dtype(TYPES.get(code, np.uint8)).itemsize) if dims else 0
    extra = draw(st.integers(-3, 3))
    payload = draw(st.binary(min_size=max(0, size + extra), max_size=max(0, size + extra)))
    return header + payload, draw(st.booleans())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=idx_bytes())
def test_any_bytes_give_the_array_or_a_refusal_naming_the_file(case, tmp_path):
    raw, zipped = case
    path = tmp_path / ("f.idx.gz" if zipped else "f.idx")
    path.write_bytes(gzip.compress(raw) if zipped else raw)
    try:
        array = read_idx(path)
    except IDXError as err:
        assert str(path) in str(err) or path.name in str(err), str(err)
        return
    # accepted: the header was valid and the payload exactly its size
    code, ndim = raw[2], raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    assert raw[:2] == b"\0\0" and code in TYPES and array.shape == tuple(dims)
    expected = np.frombuffer(raw[4 + 4 * ndim:], dtype=TYPES[code]).reshape(dims)
    np.testing.assert_array_equal(array, expected)
