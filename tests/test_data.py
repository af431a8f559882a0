"""paperlib.data against the dataset statistics published with the offline copies (data README).

Real data comes from ``PAPERLIB_DATA`` (the tests skip when it is unset); nothing is downloaded:
the download path is exercised with a fake ``urlopen`` serving local files.
"""
from __future__ import annotations

import io
import os
import pickle
import shutil
import socket
import sys
import tarfile
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from paperlib import data
from paperlib.data import DatasetNotFound

CIFAR_FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official data_batch_1
CIFAR_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # official test_batch
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def root() -> Path:
    value = os.environ.get("PAPERLIB_DATA", "").strip()
    if not value:
        pytest.skip("PAPERLIB_DATA is not set: point it at the offline datasets folder to run the data tests")
    if not Path(value).is_dir():
        pytest.skip(f"PAPERLIB_DATA={value} is not a folder")
    return Path(value)


def need(root: Path, *rels: str) -> None:
    for rel in rels:
        if data._find(root, rel) is None:
            pytest.skip(f"{rel} is not in PAPERLIB_DATA={root}")


@pytest.fixture(scope="module")
def cifar_jpeg(root) -> torch.Tensor:
    """The whole JPEG-decoded train set, decoded once for the module (about 6 s cold)."""
    need(root, *data._JPEG)
    return data.load("cifar10", variant="jpeg")


@pytest.fixture
def offline(monkeypatch):
    """No downloads allowed and any network access fails loudly."""
    monkeypatch.delenv("PAPERLIB_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("paperlib.data touched the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x.double() + 1) / 2


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse)


# ------------------------------------------------------------------------------------------------
# Arguments (no data needed: they are checked before any file is looked for)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="imagenet"), r"^name must"),
    (dict(name="cifar10", split="val"), r"^split must"),
    (dict(name="olivetti", split="test"), r"^split='test'"),
    (dict(name="cifar10", n=0), r"^n must"),
    (dict(name="mnist", n=-3), r"^n must"),
    (dict(name="cifar10", n=50001), r"^n must.*50000"),
    (dict(name="olivetti", n=401), r"^n must"),
    (dict(name="mnist", n=2.5), r"^n must"),
    (dict(name="mnist", n=True), r"^n must"),
    (dict(name="cifar10", variant="png"), r"^variant must"),
    (dict(name="fashion-mnist", variant="jpeg"), r"^variant must"),
    (dict(name="cifar10", variant="lossless"), r"^variant='lossless'.*n <= 4000"),
    (dict(name="cifar10", n=4001, variant="lossless"), r"^variant='lossless'.*n=4001"),
    (dict(name="cifar10", split="test", n=1001, variant="lossless"), r"^variant='lossless'.*n <= 1000"),
])
@pytest.mark.parametrize("fn", [data.load, data.load_labels])
def test_bad_arguments_raise_value_error_naming_the_argument(fn, kwargs, match, offline, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path / "empty"))  # would be DatasetNotFound if args passed
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


# ------------------------------------------------------------------------------------------------
# Shapes, ranges, labels


@pytest.mark.parametrize("name, split, shape", [
    ("cifar10", "test", (10000, 3, 32, 32)),
    ("mnist", "train", (60000, 1, 28, 28)),
    ("mnist", "test", (10000, 1, 28, 28)),
    ("fashion-mnist", "train", (60000, 1, 28, 28)),
    ("fashion-mnist", "test", (10000, 1, 28, 28)),
    ("olivetti", "train", (400, 1, 64, 64)),
])
def test_shape_dtype_range_labels(root, name, split, shape):
    x, y = data.load(name, split), data.load_labels(name, split)
    assert x.shape == shape and x.dtype == torch.float32 and x.device.type == "cpu"
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # every set has black and white pixels
    assert y.shape == (shape[0],) and y.dtype == torch.int64
    classes = 40 if name == "olivetti" else 10
    assert torch.equal(torch.unique(y), torch.arange(classes))
    # n takes a prefix, and each call returns a fresh copy
    assert torch.equal(data.load(name, split, n=7), x[:7]) and torch.equal(data.load_labels(name, split, n=7), y[:7])
    x[:7].fill_(0.25)
    assert not torch.equal(data.load(name, split, n=7), x[:7])


def test_cifar10_train_shape_order_and_labels(root, cifar_jpeg):
    assert cifar_jpeg.shape == (50000, 3, 32, 32) and cifar_jpeg.dtype == torch.float32
    assert cifar_jpeg.min().item() == -1.0 and cifar_jpeg.max().item() == 1.0
    y = data.load_labels("cifar10", variant="jpeg")
    assert y[:10].tolist() == CIFAR_FIRST_TRAIN_LABELS
    assert torch.bincount(y).tolist() == [5000] * 10
    assert data.load_labels("cifar10", "test", n=10, variant="jpeg").tolist() == CIFAR_FIRST_TEST_LABELS
    assert torch.equal(data.load("cifar10", n=1000, variant="jpeg"), cifar_jpeg[:1000])


def test_cifar10_labels_agree_between_copies(root):
    need(root, *data._JPEG, *data.COPIES["cifar10"]["lossless"][1]["train"], *data.COPIES["cifar10"]["lossless"][1]["test"])
    for split, n in (("train", 4000), ("test", 1000)):
        lossless = data.load_labels("cifar10", split, n=n, variant="lossless")
        assert torch.equal(lossless, data.load_labels("cifar10", split, n=n, variant="jpeg"))
    assert data.load_labels("cifar10", n=10, variant="lossless").tolist() == CIFAR_FIRST_TRAIN_LABELS


# ------------------------------------------------------------------------------------------------
# Pixel statistics (values from the data README; official ones in the comments)


def test_cifar10_jpeg_matches_lossless_subset(root, cifar_jpeg):
    need(root, *data.COPIES["cifar10"]["lossless"][1]["train"])
    lossless = data.load("cifar10", n=1000, variant="lossless")
    jpeg = cifar_jpeg[:1000]
    aligned, shifted = psnr(jpeg, lossless), psnr(jpeg[1:], lossless[:-1])
    assert aligned.mean() > 25 and aligned.min() > 18, aligned.mean()  # README: 30.5 dB, min 23.1
    assert shifted.mean() < 15, shifted.mean()  # README: 9.6 dB when misaligned by one image
    assert (to_unit(jpeg) - to_unit(lossless)).abs().mean() < 10 / 255  # README: 5.8 / 255


def test_cifar10_test_split_jpeg_matches_lossless(root):
    need(root, *data._JPEG, *data.COPIES["cifar10"]["lossless"][1]["test"])
    a = data.load("cifar10", "test", n=1000, variant="jpeg")
    b = data.load("cifar10", "test", n=1000, variant="lossless")
    assert psnr(a, b).mean() > 25 and psnr(a[1:], b[:-1]).mean() < 15


def test_cifar10_channel_means(root, cifar_jpeg):
    mean = (cifar_jpeg.mean(dim=(0, 2, 3), dtype=torch.float64) + 1) / 2
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465], dtype=torch.float64), atol=5e-4), mean
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=2e-3)  # official


@pytest.mark.parametrize("name, split, mean, std", [
    ("mnist", "train", 0.1307, 0.3081),
    ("mnist", "test", 0.1325, 0.3105),
    ("fashion-mnist", "train", 0.2860, 0.3530),
    ("fashion-mnist", "test", 0.2868, 0.3524),
    ("olivetti", "train", 0.5470, 0.1725),
])
def test_pixel_mean_and_std(root, name, split, mean, std):
    u = to_unit(data.load(name, split))
    assert abs(u.mean().item() - mean) < 5e-4 and abs(u.std().item() - std) < 5e-4, (u.mean(), u.std())


def test_mnist_counts_and_png_layout(root):
    need(root, "mnist/convnetjs_png/mnist_batch_0.png", "mnist/train-labels-idx1-ubyte.gz")
    assert torch.bincount(data.load_labels("mnist")).tolist() == MNIST_TRAIN_COUNTS
    # The PNG decoder on sprite 20, which holds the official test images 0-2999 bit for bit.
    sprite = data._find(root, "mnist/convnetjs_png/mnist_batch_20.png")
    if sprite is None:
        pytest.skip("mnist_batch_20.png is not in PAPERLIB_DATA")
    decoded = data._decode("mnist", "train", "png", [sprite, Path("labels")])
    official = data.load("mnist", "test", n=3000, variant="official")
    assert torch.equal(torch.from_numpy(decoded.astype(np.float32)) / 127.5 - 1, official)


def test_olivetti_labels_are_subjects(root):
    y = data.load_labels("olivetti")
    assert torch.equal(y, torch.arange(400) // 10)
    x = data.load("olivetti")
    assert torch.unique(x.flatten(1), dim=0).shape[0] == 400  # all faces distinct
    # Upright faces are nearly mirror-symmetric left-right, not top-bottom (catches a transposed load).
    def similarity(a, b):
        a, b = a - a.mean((2, 3), keepdim=True), b - b.mean((2, 3), keepdim=True)
        return ((a * b).sum((1, 2, 3)) / (a.norm(dim=(2, 3)) * b.norm(dim=(2, 3))).squeeze(1)).mean()
    assert similarity(x, x.flip(-1)) > 0.4 > similarity(x, x.flip(-2))  # 0.54 vs 0.16


def test_source_names_the_copy(root):
    need(root, *data._JPEG, "mnist/convnetjs_png/mnist_batch_0.png")
    if data._find(root, "cifar10/cifar-10-python.tar.gz") is None:
        assert data.source("cifar10") == "CIFAR-10, JPEG-decoded copy (offline)"
    assert "lossless" in data.source("cifar10", variant="lossless")
    if data._find(root, "mnist/train-images-idx3-ubyte.gz") is None:
        assert "PNG" in data.source("mnist")
    assert data.source("mnist", "test") == "MNIST, official idx files"


# ------------------------------------------------------------------------------------------------
# Missing data, downloads, checksums, caches


def test_missing_data_gives_instructions_and_no_network(tmp_path, monkeypatch, offline):
    where = tmp_path / "nowhere"
    monkeypatch.setenv("PAPERLIB_DATA", str(where))
    for name, wanted in [("cifar10", ["cifar-10-python.tar.gz", "CIFAR-10-images-jpg.tar.gz"]),
                         ("mnist", ["train-images-idx3-ubyte.gz", "mnist_batch_0.png"]),
                         ("fashion-mnist", ["train-images-idx3-ubyte.gz"]),
                         ("olivetti", ["olivettifaces.mat"])]:
        for fn in (data.load, data.load_labels, data.source):
            with pytest.raises(DatasetNotFound) as err:
                fn(name)
            assert isinstance(err.value, FileNotFoundError)
            message = str(err.value)
            for text in [str(where), "PAPERLIB_DATA", "PAPERLIB_ALLOW_DOWNLOAD=1", *wanted]:
                assert text in message, (text, message)
    with pytest.raises(DatasetNotFound) as err:
        data.load("cifar10", variant="jpeg")
    assert "CIFAR-10-images-jpg.tar.gz" in str(err.value) and "PAPERLIB_ALLOW_DOWNLOAD" not in str(err.value)
    assert not where.exists()


def test_download_when_allowed(root, tmp_path, monkeypatch):
    """With PAPERLIB_ALLOW_DOWNLOAD=1 the official files are fetched (here from a fake server)."""
    need(root, *data._idx_files("fashion-mnist", "test"))
    served = []

    def fake_urlopen(request, timeout=None):
        url = request.full_url
        served.append(url)
        return io.BytesIO(data._find(root, "fashion-mnist/" + url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PAPERLIB_ALLOW_DOWNLOAD", "1")
    assert "to be downloaded" in data.source("fashion-mnist", "test") and not served
    x = data.load("fashion-mnist", "test", n=50)
    assert sorted(served) == sorted(data.URLS[rel][0] for rel in data._idx_files("fashion-mnist", "test"))
    assert (tmp_path / "data/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file()
    assert sorted(os.listdir(tmp_path / "data/fashion-mnist")) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setenv("PAPERLIB_DATA", str(root))
    assert torch.equal(x, data.load("fashion-mnist", "test", n=50))

    # A server handing out the wrong bytes: nothing is kept, and the error says what to do.
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: io.BytesIO(b"not the data"))
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path / "other"))
    with pytest.raises(DatasetNotFound, match="sha256") as err:
        data.load("olivetti")
    assert "olivettifaces.mat" in str(err.value)
    assert os.listdir(tmp_path / "other/olivetti") == []


def test_colab_counts_as_download_allowed(tmp_path, monkeypatch, offline):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path))
    assert data.source("cifar10").startswith("CIFAR-10, official pickles (to be downloaded")

    def unreachable(request, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DatasetNotFound, match="(?s)could not download mnist/t10k-images.*no route to host.*PAPERLIB_DATA"):
        data.load("mnist", "test")


def test_corrupted_file_raises_and_is_rechecked(root, tmp_path, monkeypatch, offline):
    need(root, "olivetti/olivettifaces.mat")
    target = tmp_path / "olivetti" / "olivettifaces.mat"
    target.parent.mkdir()
    shutil.copyfile(root / "olivetti/olivettifaces.mat", target)
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    calls = []
    sha256 = data._sha256
    monkeypatch.setattr(data, "_sha256", lambda path: calls.append(path) or sha256(path))
    good = data.load("olivetti")
    data._images.cache_clear()
    data.load("olivetti")
    assert [p.name for p in calls] == ["olivettifaces.mat"]  # verified once per process, not at every load

    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file is checked again
    with pytest.raises(ValueError, match="olivettifaces.mat"):
        data.load("olivetti")
    with pytest.raises(ValueError, match="olivettifaces.mat"):
        data.load_labels("olivetti")
    assert good.shape == (400, 1, 64, 64)


def test_decoded_arrays_are_cached_on_disk(root, tmp_path, monkeypatch, offline):
    need(root, *data._idx_files("fashion-mnist", "test"))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    data._images.cache_clear()
    first = data.load("fashion-mnist", "test")
    decode = data._decode
    files = os.listdir(tmp_path / "datasets")
    assert len(files) == 1 and files[0].startswith("fashion-mnist-test-official-") and files[0].endswith(".npy")

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode", no_decoding)
    data._images.cache_clear()
    assert torch.equal(data.load("fashion-mnist", "test"), first)

    # A truncated cache file is not trusted: the images are decoded again and the file rewritten.
    monkeypatch.setattr(data, "_decode", decode)
    cached = tmp_path / "datasets" / files[0]
    cached.write_bytes(cached.read_bytes()[:1000])
    data._images.cache_clear()
    assert torch.equal(data.load("fashion-mnist", "test"), first)
    assert cached.stat().st_size > 7_000_000 and os.listdir(tmp_path / "datasets") == files


def test_official_cifar_pickles_are_preferred(root, tmp_path, monkeypatch, offline):
    """A stand-in cifar-10-python.tar.gz (lossless pixels in the official pickle format) wins over the JPEGs."""
    lossless = data.COPIES["cifar10"]["lossless"][1]
    need(root, *data._JPEG, *lossless["train"], *lossless["test"])
    x = {s: (data.load("cifar10", s, n=1000, variant="lossless") + 1) * 127.5 for s in ("train", "test")}
    y = {s: data.load_labels("cifar10", s, n=1000, variant="lossless") for s in ("train", "test")}
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        batches = [(f"data_batch_{i + 1}", "train", slice(200 * i, 200 * (i + 1))) for i in range(5)]
        for name, split, rows in batches + [("test_batch", "test", slice(0, 1000))]:
            batch = {b"labels": y[split][rows].tolist(),
                     b"data": x[split][rows].round().to(torch.uint8).reshape(-1, 3072).numpy()}
            blob = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    for rel in data._JPEG:
        os.symlink(root / rel, tmp_path / rel)
    monkeypatch.setitem(data.SHA256, "cifar10/cifar-10-python.tar.gz", (data._sha256(archive),))
    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    assert data.source("cifar10") == "CIFAR-10, official pickles"
    for split in ("train", "test"):
        assert torch.equal(data.load("cifar10", split, n=1000), x[split] / 127.5 - 1)
        assert torch.equal(data.load_labels("cifar10", split, n=1000), y[split])
    assert data.source("cifar10", variant="jpeg") == "CIFAR-10, JPEG-decoded copy (offline)"
