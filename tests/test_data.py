"""Datasets: IDX files written here and read back, their errors, the splits and standardisation."""

import gzip
import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import load_digits

from initlab import data
from initlab.data import IDXError, load_idx_dir, read_idx, standardize

FASHION_PRESENT = data.FASHION_MNIST_DIR.is_dir()
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray, dims=None, code=None) -> bytes:
    """The IDX encoding of an array (written from the format's definition, not from read_idx)."""
    array = np.asarray(array)
    dt = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, _CODES[dt] if code is None else code, len(dims)])
    header += b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + array.astype(dt).tobytes()


def write(path, payload: bytes):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


# --- read_idx -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 5), dtype=np.uint8)
    images[0, 0, 0], images[-1, -1, -1] = 0, 255
    labels = rng.integers(0, 10, 4).astype(np.uint8)
    got = read_idx(write(tmp_path / name, idx_bytes(images)))
    assert got.dtype == np.uint8 and got.shape == (4, 3, 5)
    np.testing.assert_array_equal(got, images)
    got = read_idx(write(tmp_path / ("labels-" + name), idx_bytes(labels)))
    assert got.shape == (4,)
    np.testing.assert_array_equal(got, labels)


def test_read_idx_multibyte_types_are_big_endian(tmp_path):
    values = np.array([[-300, 2], [32767, -32768]], dtype=np.int16)
    got = read_idx(write(tmp_path / "x.idx", idx_bytes(values)))
    np.testing.assert_array_equal(got, values)
    floats = np.array([1.5, -2.25, 1e300])
    np.testing.assert_array_equal(read_idx(write(tmp_path / "f.idx", idx_bytes(floats))), floats)
    # the same bytes read as little-endian would be different numbers: byte order matters
    raw = (tmp_path / "x.idx").read_bytes()[12:]
    assert not np.array_equal(np.frombuffer(raw, "<i2"), values.ravel())


GOOD = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize("payload,message", [
    (b"\x01\x00" + GOOD[2:], "bad magic number 01000802"),
    (b"\x00\x00\x07\x02" + GOOD[4:], "bad magic number 00000702"),  # no such type code
    (GOOD[:10], r"truncated header \(10 bytes for 2 dims\)"),
    (GOOD[:-1], r"is truncated: dims \(2, 3\) need 18 bytes, file has 17"),
    (GOOD + b"\x00", r"longer than its header says: dims \(2, 3\) need 18 bytes, file has"),
    (b"", "bad magic number empty"),
    (b"\x00\x00", "bad magic number 0000"),
])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_errors_say_what_is_wrong(tmp_path, payload, message, suffix):
    path = write(tmp_path / ("bad.idx" + suffix), payload)
    with pytest.raises(IDXError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_read_idx_says_how_much_longer_the_file_is(tmp_path):
    path = write(tmp_path / "long.idx", GOOD + b"\x00")
    with pytest.raises(IDXError) as err:
        read_idx(path)
    assert str(err.value) == (f"{path} is longer than its header says: dims (2, 3) need 18 "
                              f"bytes, file has 19")
    # a gzipped file is read no further than one byte past what its header announces
    path = write(tmp_path / "long.idx.gz", GOOD + b"\x00" * 100)
    with pytest.raises(IDXError) as err:
        read_idx(path)
    assert str(err.value) == (f"{path} is longer than its header says: dims (2, 3) need 18 "
                              f"bytes, file has more when decompressed (reading stopped at 19 "
                              f"bytes)")


def test_read_idx_stops_a_gzip_that_inflates_far_past_its_header(tmp_path):
    # a gzip bomb: a valid header for 10 images of 28x28, then 64 MiB of zeros, which
    # compress to a few hundred kB
    path = tmp_path / "bomb.idx.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
        for _ in range(64):
            handle.write(bytes(2**20))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(IDXError) as err:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # reading it all would hold 64 MiB at least
    assert str(err.value) == (f"{path} is longer than its header says: dims (10, 28, 28) need "
                              f"7856 bytes, file has more when decompressed (reading stopped "
                              f"at 7857 bytes)")


def test_read_idx_a_corrupt_gzip_is_an_idx_error(tmp_path):
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(GOOD)  # not gzipped
    with pytest.raises(IDXError, match="cannot read IDX file"):
        read_idx(path)
    write(tmp_path / "cut.idx.gz", GOOD)
    cut = (tmp_path / "cut.idx.gz").read_bytes()
    (tmp_path / "cut.idx.gz").write_bytes(cut[:-10])  # stream ends early
    with pytest.raises(IDXError, match="cannot read IDX file"):
        read_idx(tmp_path / "cut.idx.gz")
    packed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    packed[12:15] = b"\x07\x07\x07"  # the deflate data, after the 10-byte gzip header
    (tmp_path / "garbled.idx.gz").write_bytes(packed)
    with pytest.raises(IDXError, match="cannot read IDX file .*garbled.idx.gz: Error -3"):
        read_idx(tmp_path / "garbled.idx.gz")


@pytest.mark.parametrize("dims", [(2**31, 28, 28), (2**32 - 1, 2**32 - 1, 2**32 - 1)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_checks_announced_size_before_allocating(tmp_path, dims, suffix):
    path = write(tmp_path / ("huge.idx" + suffix), idx_bytes(np.zeros(10, np.uint8), dims=dims))
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match="truncated"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the announced data would be > 1 GB


# --- a folder of the four standard files ----------------------------------------------------

def _mnist_folder(folder, n_train=5, n_test=3, gz=("train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte")):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 2, 3), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 2, 3), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8)}
    arrays["train-images-idx3-ubyte"][0, 0, :2] = [0, 255]
    folder.mkdir(exist_ok=True)
    for stem, array in arrays.items():
        write(folder / (stem + ".gz" if stem in gz else stem), idx_bytes(array))
    return arrays


def test_load_idx_dir_scales_and_flattens(tmp_path):
    arrays = _mnist_folder(tmp_path / "mini")
    split = load_idx_dir(tmp_path / "mini")
    assert split.X_train.shape == (5, 6) and split.X_test.shape == (3, 6)
    assert split.X_train.dtype == np.float64
    np.testing.assert_array_equal(split.X_train * 255.0,
                                  arrays["train-images-idx3-ubyte"].reshape(5, 6))
    np.testing.assert_allclose(split.X_test, arrays["t10k-images-idx3-ubyte"].reshape(3, 6) / 255)
    assert split.X_train.min() == 0.0 and split.X_train.max() == 1.0
    assert split.y_train.dtype == np.int64 and split.y_test.dtype == np.int64
    np.testing.assert_array_equal(split.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(split.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert split.name == "mini" and split.source == str(tmp_path / "mini")
    assert load_idx_dir(tmp_path / "mini", name="tiny").name == "tiny"


def test_load_idx_dir_limit_keeps_the_first_images(tmp_path):
    arrays = _mnist_folder(tmp_path)
    split = load_idx_dir(tmp_path, limit=2)
    assert split.X_train.shape == (2, 6) and split.X_test.shape == (2, 6)
    np.testing.assert_array_equal(split.y_train, arrays["train-labels-idx1-ubyte"][:2])
    np.testing.assert_array_equal(split.X_test * 255,
                                  arrays["t10k-images-idx3-ubyte"][:2].reshape(2, 6))


def test_load_idx_dir_names_the_missing_file(tmp_path):
    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"no t10k-labels-idx1-ubyte\[\.gz\]"):
        load_idx_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_idx_dir(tmp_path / "nowhere")


@pytest.mark.parametrize("empty", [("train-images-idx3-ubyte",),
                                   ("train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"),
                                   ("t10k-labels-idx1-ubyte",)])
def test_load_idx_dir_names_a_file_with_no_items(tmp_path, empty):
    arrays = _mnist_folder(tmp_path)
    for name in empty:
        shape = (0, *arrays[name.removesuffix(".gz")].shape[1:])
        write(tmp_path / name, idx_bytes(np.zeros(shape, np.uint8)))
    path = tmp_path / empty[0]
    with pytest.raises(IDXError) as err:
        load_idx_dir(tmp_path)
    assert str(err.value) == f"{path} has 0 items (dims {(0, *arrays[empty[0]].shape[1:])})"


def test_load_idx_dir_names_a_file_whose_items_hold_nothing(tmp_path):
    _mnist_folder(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((5, 0, 3), np.uint8)))
    with pytest.raises(IDXError) as err:
        load_idx_dir(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'train-images-idx3-ubyte'} has items of 0 values "
                              f"(dims (5, 0, 3))")


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_load_idx_dir_limit_must_be_a_positive_int(tmp_path, limit):
    _mnist_folder(tmp_path)
    with pytest.raises(ValueError) as err:
        load_idx_dir(tmp_path, limit=limit)
    assert str(err.value) == f"limit must be a positive int or None; got limit={limit!r}"


def test_load_idx_dir_rejects_mismatched_counts(tmp_path):
    _mnist_folder(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(IDXError, match=r"train images \(5, 2, 3\) and labels \(4,\)"):
        load_idx_dir(tmp_path)


def test_image_data_reads_a_folder(tmp_path):
    _mnist_folder(tmp_path / "mine")
    split = data.image_data(tmp_path / "mine", limit=4)
    assert split.name == "mine" and split.X_train.shape == (4, 6) and split.X_test.shape == (3, 6)


# --- standardize ----------------------------------------------------------------------------

def test_standardize_uses_the_training_statistics_for_both_splits():
    rng = np.random.default_rng(0)
    X_train = 3.0 * rng.standard_normal((50, 8)) + 2.0
    X_test = 5.0 * rng.standard_normal((20, 8)) - 1.0
    train, test, stats = standardize(X_train, X_test)
    assert abs(train.mean()) < 1e-12 and abs(train.std() - 1.0) < 1e-12
    assert stats == {"mean": X_train.mean(), "std": X_train.std()}
    np.testing.assert_allclose(test, (X_test - X_train.mean()) / X_train.std(), rtol=1e-15)
    assert abs(test.mean()) > 0.5  # not put on its own scale
    assert not np.allclose(test, (X_test - X_test.mean()) / X_test.std())


def test_standardize_refuses_a_constant_training_set():
    with pytest.raises(ValueError, match="std 0"):
        standardize(np.zeros((10, 4)), np.ones((2, 4)))


def test_standardize_refuses_a_constant_that_is_not_a_binary_fraction():
    X = np.full((1347, 64), 0.1)
    assert X.std() > 0  # the premise: rounding makes the std of a constant non-zero
    with pytest.raises(ValueError, match="std 0"):
        standardize(X, X[:10])


# --- digits and image_data ------------------------------------------------------------------

def test_digits_is_sklearns_digits_in_order_scaled_to_unit_range():
    split = data.digits()
    bunch = load_digits()
    assert len(split.X_train) + len(split.X_test) == 1797
    assert split.X_train.shape[1] == split.X_test.shape[1] == 64
    assert abs(len(split.X_test) - 0.25 * 1797) <= 1
    np.testing.assert_array_equal(np.concatenate([split.X_train, split.X_test]) * 16, bunch.data)
    np.testing.assert_array_equal(np.concatenate([split.y_train, split.y_test]), bunch.target)
    assert split.X_train.min() == 0.0 and split.X_train.max() == 1.0
    assert split.y_train.dtype == np.int64 and split.n_classes == 10
    assert split.name == "digits"


def test_digits_split_is_1347_450():
    split = data.digits()
    assert split.X_train.shape == (1347, 64) and split.X_test.shape == (450, 64)


def test_image_data_digits():
    split = data.image_data("digits")
    assert split.name == "digits" and split.X_train.shape[1] == 64


def test_image_data_default_falls_back_to_digits_without_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert data.image_data(None).name == "digits"
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.image_data("fashion-mnist")


def test_image_data_default_uses_fashion_mnist_where_it_is_installed(tmp_path, monkeypatch):
    # a stand-in folder, so this runs whether or not the Debian package is installed
    _mnist_folder(tmp_path / "fashion")
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "fashion")
    split = data.image_data(None, limit=3)
    assert split.name == "fashion-mnist" and split.X_train.shape == (3, 6)
    split = data.image_data("fashion-mnist", limit=2)
    assert split.name == "fashion-mnist" and split.X_test.shape == (2, 6)


@pytest.mark.skipif(FASHION_PRESENT, reason="Fashion-MNIST is installed: the default is it")
def test_image_data_default_is_digits_on_this_machine():
    assert data.image_data(None).name == "digits"


@pytest.mark.skipif(not FASHION_PRESENT, reason=f"{data.FASHION_MNIST_DIR} is not installed")
def test_image_data_default_is_the_installed_fashion_mnist():
    split = data.image_data(None, limit=100)
    assert split.name == "fashion-mnist" and split.source == str(data.FASHION_MNIST_DIR)
    assert split.X_train.shape == (100, 784) and split.X_test.shape == (100, 784)
    assert 0.0 <= split.X_train.min() and split.X_train.max() <= 1.0
    assert split.X_train.max() == 1.0  # some pixel is white: scaled by 255, not by its max
    assert set(np.unique(split.y_train)) <= set(range(10)) and split.n_classes == 10
    assert len(np.unique(split.y_train)) > 5


# --- synthetic ------------------------------------------------------------------------------

def test_moons_is_deterministic_per_seed_and_balanced():
    X, y, X_test, y_test = data.moons(3)
    assert X.shape == (400, 2) and X_test.shape == (100, 2)
    assert y.shape == (400,) and y_test.shape == (100,)
    assert np.bincount(y).tolist() == [200, 200]
    assert np.bincount(y_test).tolist() == [50, 50]
    again = data.moons(3)
    for a, b in zip((X, y, X_test, y_test), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = data.moons(4)
    assert not np.allclose(X, other[0])
    assert not np.allclose(X[:100], X_test)  # test drawn from its own stream
    assert not (X_test[:, None, :] == X[None, :, :]).all(axis=-1).any()  # no shared point


def test_gaussian_shapes_and_determinism():
    split = data.gaussian(30, 7, classes=4, rng=5)
    assert split.X_train.shape == (30, 7) and split.X_test.shape == (30, 7)
    assert split.y_train.shape == (30,) and set(np.unique(split.y_train)) <= {0, 1, 2, 3}
    again = data.gaussian(30, 7, classes=4, rng=5)
    np.testing.assert_array_equal(split.X_train, again.X_train)
    np.testing.assert_array_equal(split.y_test, again.y_test)
    assert not np.allclose(split.X_train, data.gaussian(30, 7, classes=4, rng=6).X_train)
    assert not np.allclose(split.X_train, split.X_test)
    gen = np.random.default_rng(0)  # a Generator is advanced, not copied
    assert not np.allclose(data.gaussian(5, 3, rng=gen).X_train,
                           data.gaussian(5, 3, rng=gen).X_train)
