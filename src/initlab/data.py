"""Datasets: moons, scikit-learn's bundled digits, MNIST-format IDX files, Gaussian noise.

Images come back as float64 rows (n, pixels) scaled to [0, 1], labels as int64. Standardise
with :func:`standardize`, which applies the TRAINING set's mean and std to both splits.
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from initlab._validate import RngLike, as_rng, check_int

# Debian's dataset-fashion-mnist package puts the IDX files here
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_TYPES: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
                                         0x0D: ">f4", 0x0E: ">f8"}
_CHUNK = 1 << 16  # bytes per read of an IDX payload


@dataclass
class Split:
    """A train/test split and where it came from."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


class IDXError(ValueError):
    """An IDX file that is truncated, corrupt or not IDX at all."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format; gzipped if the name ends in .gz).

    The header is checked before the data are read: the magic number (two zero bytes, a type
    code, the number of dims), then the dims. A plain file's size must be exactly what they
    announce before a byte of data is read. A gzipped file's size says nothing about what it
    inflates to, so it is decompressed in chunks and at most the announced bytes plus one are
    read: one that inflates to more than its header says (a gzip bomb) is rejected having
    read no more than that, whatever it would inflate to.
    """
    path = Path(path)
    gzipped = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
                raise IDXError(f"{path} is not an IDX file: bad magic number "
                               f"{magic.hex() or 'empty'}")
            ndim = magic[3]
            if ndim == 0:
                raise IDXError(f"{path}: the header announces 0 dims; an IDX array has >= 1")
            raw_dims = handle.read(4 * ndim)
            header = 4 + 4 * ndim
            if len(raw_dims) < 4 * ndim:
                raise IDXError(f"{path}: truncated header ({4 + len(raw_dims)} bytes for "
                               f"{ndim} dims)")
            dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_TYPES[magic[2]])
            expected = header + math.prod(dims) * dtype.itemsize
            if not gzipped:
                _check_length(path, dims, expected, os.fstat(handle.fileno()).st_size)
            payload = _read_at_most(handle, expected - header + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise IDXError(f"cannot read IDX file {path}: {err}") from None
    _check_length(path, dims, expected, header + len(payload), stopped=gzipped)
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def _read_at_most(handle: io.BufferedIOBase, limit: int) -> bytearray:
    """Up to ``limit`` bytes, read in chunks, so that memory grows with what the stream holds
    rather than with what a header claims (``read(n)`` would allocate n bytes up front)."""
    data = bytearray()
    # a buffered read returns short only at the end of the stream, so this many reads suffice
    for _ in range(-(-limit // _CHUNK)):
        chunk = handle.read(min(_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _check_length(path: Path, dims: tuple[int, ...], expected: int, length: int,
                  stopped: bool = False) -> None:
    """``stopped``: ``length`` is where reading stopped (one past ``expected`` at most)."""
    if length < expected:
        raise IDXError(f"{path} is truncated: dims {dims} need {expected} bytes, file has "
                       f"{length}")
    if length > expected:
        has = f"more when decompressed (reading stopped at {length} bytes)" if stopped \
            else str(length)
        raise IDXError(f"{path} is longer than its header says: dims {dims} need {expected} "
                       f"bytes, file has {has}")


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}: an MNIST-format folder holds "
                            f"train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (gzipped or not)")


def _read_items(directory: Path, stem: str) -> np.ndarray:
    """The IDX file ``stem`` of a dataset folder, which must hold at least one item."""
    path = _find(directory, stem)
    array = read_idx(path)
    if len(array) == 0:
        raise IDXError(f"{path} has 0 items (dims {array.shape})")
    if array.size == 0:
        raise IDXError(f"{path} has items of 0 values (dims {array.shape})")
    return array


def load_idx_dir(directory: str | Path, name: str | None = None, limit: int | None = None
                 ) -> Split:
    """MNIST or Fashion-MNIST from a folder of the four standard IDX files; ``limit`` keeps the
    first that many images of each split (converting 60,000 images to float takes seconds)."""
    directory = Path(directory)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | np.integer)
                              or limit < 1):
        raise ValueError(f"limit must be a positive int or None; got limit={limit!r}")
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory {directory} does not exist")
    parts = []
    for split in ("train", "t10k"):
        images = _read_items(directory, f"{split}-images-idx3-ubyte")
        labels = _read_items(directory, f"{split}-labels-idx1-ubyte")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXError(f"{directory}: {split} images {images.shape} and labels "
                           f"{labels.shape} do not match")
        images, labels = images[:limit], labels[:limit]
        parts += [images.reshape(len(images), -1) / 255.0, labels.astype(np.int64)]
    X_train, y_train, X_test, y_test = parts
    return Split(X_train, y_train, X_test, y_test, name=name or directory.name,
                 source=str(directory))


def digits(test_fraction: float = 0.25) -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), split in a fixed order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X, y = bunch.data / 16.0, bunch.target.astype(np.int64)
    cut = len(X) - math.ceil(len(X) * test_fraction)  # the test part rounded up, as sklearn
    return Split(X[:cut], y[:cut], X[cut:], y[cut:], name="digits",
                 source="sklearn.datasets.load_digits")


def image_data(data: str | Path | None = None, limit: int | None = None) -> Split:
    """The image data a card or command asks for: a folder of IDX files, 'fashion-mnist'
    (Debian's package), 'digits', or None: Fashion-MNIST where installed, else digits."""
    if data is None:
        return load_idx_dir(FASHION_MNIST_DIR, "fashion-mnist", limit) \
            if FASHION_MNIST_DIR.is_dir() else digits()
    if str(data) == "digits":
        return digits()
    if str(data) == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR}: "
                                    f"apt-get install dataset-fashion-mnist, or pass a folder")
        return load_idx_dir(FASHION_MNIST_DIR, "fashion-mnist", limit)
    return load_idx_dir(data, limit=limit)


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Subtract the training set's mean and divide by its std (one scalar each, over all
    pixels), in BOTH splits: the test set is put on the training set's scale."""
    if np.ptp(X_train) == 0:  # its std would be rounding noise, not 0
        raise ValueError("the training set has std 0: every value is the same")
    mean, std = float(X_train.mean()), float(X_train.std())
    return (X_train - mean) / std, (X_test - mean) / std, {"mean": mean, "std": std}


def moons(seed: int, n_train: int = 400, n_test: int = 100, noise: float = 0.2
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two interleaved half-moons (scikit-learn), train and test drawn from one seed's
    independent streams."""
    from sklearn.datasets import make_moons

    train_state, test_state = np.random.SeedSequence(seed).generate_state(2)
    X, y = make_moons(n_train, noise=noise, random_state=int(train_state))
    X_test, y_test = make_moons(n_test, noise=noise, random_state=int(test_state))
    return X, y, X_test, y_test


def gaussian(n: int, features: int, classes: int = 10, *, rng: RngLike = None) -> Split:
    """Standard normal inputs with random labels: a probe batch with no structure."""
    rng = as_rng(rng)
    X = rng.standard_normal((2 * n, features))
    y = rng.integers(0, classes, 2 * n)
    return Split(X[:n], y[:n], X[n:], y[n:], name="gaussian", source="N(0, 1) noise")


def teacher_student(n_train: int = 1000, n_test: int = 500, *, features: int = 32,
                    classes: int = 4, depth: int = 2, width: int = 64, rng: RngLike = None
                    ) -> Split:
    """Data whose difficulty a sweep controls: inputs x ~ N(0, I_features), labels the argmax
    of a random teacher network (``depth`` tanh layers of ``width`` units, weights
    N(0, 1/fan_in) so its signal neither dies nor saturates, then a linear readout to
    ``classes`` logits). Classes are balanced exactly: inputs are drawn in rounds and each
    class keeps its first n / classes examples (n = n_train + n_test, a multiple of
    ``classes``), so a label stays the teacher's function of its input. A deeper or narrower
    teacher makes a harder task."""
    for name, value in (("n_train", n_train), ("n_test", n_test), ("features", features),
                        ("depth", depth), ("width", width)):
        check_int(name, value, minimum=1)
    check_int("classes", classes, minimum=2)
    n = n_train + n_test
    if n % classes or n_train % classes:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must be multiples of "
                         f"classes={classes}, for classes of equal size")
    rng = as_rng(rng)
    sizes = [features, *[width] * depth, classes]
    weights = [rng.standard_normal((a, b)) / math.sqrt(a)
               for a, b in itertools.pairwise(sizes)]

    def teacher(x: np.ndarray) -> np.ndarray:
        for W in weights[:-1]:
            x = np.tanh(x @ W)
        return np.argmax(x @ weights[-1], axis=1)

    quota = n // classes
    kept: list[list[np.ndarray]] = [[] for _ in range(classes)]
    counts = np.zeros(classes, dtype=int)
    for _ in range(200):  # rounds of n draws; a class the teacher almost never picks stops it
        X = rng.standard_normal((n, features))
        labels = teacher(X)
        for c in range(classes):
            take = X[labels == c][: quota - counts[c]]
            kept[c].append(take)
            counts[c] += len(take)
        if counts.min() == quota:
            break
    else:
        raise ValueError(f"the teacher gives class {int(counts.argmin())} to too few inputs "
                         f"to balance {classes} classes; try another seed or fewer classes")
    X = np.concatenate([np.concatenate(k) for k in kept])
    y = np.repeat(np.arange(classes), quota)
    order = rng.permutation(n)  # interleave the classes, then split
    X, y = X[order], y[order]
    # each class split in proportion: the test set is balanced too
    test = np.concatenate([np.flatnonzero(y == c)[: n_test // classes] for c in range(classes)])
    train = np.setdiff1d(np.arange(n), test)
    return Split(X[train], y[train].astype(np.int64), X[test], y[test].astype(np.int64),
                 name="teacher",
                 source=f"teacher-student: x ~ N(0, I_{features}), labels from a random tanh "
                        f"teacher {'-'.join(map(str, sizes))}, {classes} balanced classes")
