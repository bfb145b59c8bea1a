"""digits() and the MNIST IDX reader (on small files the test writes)."""

import gzip
import struct

import numpy as np
import pytest

import jaxode as jo
import jaxode.data


def _write_idx(path, array, code=0x08, compress=False):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(data)


def test_read_idx_raw_gzip_and_other_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    _write_idx(tmp_path / "a", images)
    _write_idx(tmp_path / "a.gz", images, compress=True)
    np.testing.assert_array_equal(jo.data.read_idx(tmp_path / "a"), images)
    np.testing.assert_array_equal(jo.data.read_idx(tmp_path / "a.gz"), images)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    _write_idx(tmp_path / "f", floats, code=0x0D)
    np.testing.assert_array_equal(jo.data.read_idx(tmp_path / "f"), floats)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        jo.data.read_idx(tmp_path / "bad")
    images = np.zeros((2, 3), np.uint8)
    _write_idx(tmp_path / "short", images)
    raw = (tmp_path / "short").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="promises shape"):
        jo.data.read_idx(tmp_path / "short")


def test_mnist_reads_four_files(tmp_path):
    rng = np.random.default_rng(1)
    xtr = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, size=6, dtype=np.uint8)
    xte = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, size=3, dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr, compress=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", xte)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte, compress=True)
    a, b, c, d = jo.data.mnist(tmp_path)
    assert a.dtype == np.float32 and a.shape == (6, 28, 28) and a.max() <= 1.0
    np.testing.assert_allclose(a * 255, xtr, atol=1e-4)
    np.testing.assert_array_equal(b, ytr)
    np.testing.assert_allclose(c * 255, xte, atol=1e-4)
    np.testing.assert_array_equal(d, yte)


def test_mnist_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*train-images-idx3"):
        jo.data.mnist(tmp_path / "nowhere")
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError) as err:
        jo.data.mnist(tmp_path)
    message = str(err.value)
    assert "train-labels-idx1-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert "train-images-idx3-ubyte," not in message  # present, so not listed


def test_mnist_mismatched_lengths(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((2,), np.uint8))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((1,), np.uint8))
    with pytest.raises(ValueError, match="do not form an image set"):
        jo.data.mnist(tmp_path)


def test_digits_split():
    xtr, ytr, xte, yte = jo.data.digits()
    assert xtr.shape == (1437, 8, 8) and xte.shape == (360, 8, 8)
    assert ytr.shape == (1437,) and yte.shape == (360,)
    assert xtr.dtype == np.float32 and 0.0 <= xtr.min() and xtr.max() == 1.0
    assert set(np.unique(yte)) == set(range(10)) == set(np.unique(ytr))
    again = jo.data.digits()
    np.testing.assert_array_equal(again[2], xte)  # fixed split
