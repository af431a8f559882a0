"""Image datasets as float32 tensors in [-1, 1], in the official order (paper App. E).

``load("cifar10", n=1000)`` is the first 1000 images of the official ``data_batch_1``, whatever
copy of CIFAR-10 is found. Files live in :func:`paperlib.config.data_dir` (``PAPERLIB_DATA``)::

    cifar10/cifar-10-python.tar.gz                  official pickles (preferred when present)
    cifar10/CIFAR-10-images-jpg.tar.gz              offline JPEG copy of all 60k images, with
    cifar10/cifar10_original_order_index.npz          the map from official index to JPEG file
    cifar10/lossless_subset_convnetjs/*.png, *.js   exact pixels of train[:4000] and test[:1000]
    mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   official idx (also found in mnist/idx/)
    mnist/convnetjs_png/mnist_batch_{0..19}.png     lossless train images (offline copy)
    fashion-mnist/{train,t10k}-*-ubyte.gz           official idx (Zalando's or Debian's gzip)
    olivetti/olivettifaces.mat                      400 faces, 64x64 (Roweis' MATLAB file)

Every file is checked against its sha256 (once per process). When nothing usable is found,
:class:`DatasetNotFound` says what to put where; the official files are downloaded only when
``PAPERLIB_ALLOW_DOWNLOAD=1`` or on Colab. Decoded images are cached as ``.npy`` under
``cache_dir()/datasets/`` (keyed by the sources' sha256) and kept in memory.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import io
import numbers
import os
import pickle
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import cache as _cache
from . import config as _config

SPLITS = ("train", "test")
SIZES = {
    "cifar10": {"train": 50000, "test": 10000},
    "mnist": {"train": 60000, "test": 10000},
    "fashion-mnist": {"train": 60000, "test": 10000},
    "olivetti": {"train": 400},
}
TITLES = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "olivetti": "Olivetti faces"}

# Expected sha256 of every file read, by path relative to data_dir(). Fashion-MNIST accepts
# Zalando's gzip files and Debian's re-gzipped ones (same content).
SHA256 = {
    "cifar10/cifar-10-python.tar.gz": ("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",),
    "cifar10/CIFAR-10-images-jpg.tar.gz": ("2f5a2b27350b044dbb72dfb561ed63a9b49a77fefe7c520e3c023a9c1d81f78b",),
    "cifar10/cifar10_original_order_index.npz": ("f03a24f251642a54bc1458fb054e5786760089e1461ad24eed1c79de9a3c1e2f",),
    "cifar10/lossless_subset_convnetjs/cifar10_batch_0.png": ("0614720d69293a033786d5fe2924c4e9a9b48874f19ca4627c4662a864ee9f2d",),
    "cifar10/lossless_subset_convnetjs/cifar10_batch_1.png": ("2927e26ea68602e34a7424826b76b7336ce36b8f6bcc2e9fce0c05568ff6b4c1",),
    "cifar10/lossless_subset_convnetjs/cifar10_batch_2.png": ("0b2759e307bb405bb1a6531f8a0f557eaec46d7546050612fdb836f0fa60eae0",),
    "cifar10/lossless_subset_convnetjs/cifar10_batch_3.png": ("a4530ff15c83886058a97c352f53f38be07d191de8f410e998e91786b5900a26",),
    "cifar10/lossless_subset_convnetjs/cifar10_batch_50.png": ("5cea9e8fb7933540a2236a4bb25c1ed3a8447f345c55ae659143a95a5d8dac5e",),
    "cifar10/lossless_subset_convnetjs/cifar10_labels.js": ("f8e4cced3cb4ac08bc842380ad30f904622d1faea630a0c7e1a18bf29e39d845",),
    "mnist/train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
    "mnist/train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
    "mnist/t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
    "mnist/t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
    "mnist/convnetjs_png/mnist_batch_0.png": ("54d39dfaf0057158346bcabe733a4a93a8a02595adf2496abe8123c7eed85457",),
    "mnist/convnetjs_png/mnist_batch_1.png": ("de5ff3ee0fb8052d80c8124a61dbd9896a10cec11237ceae61cd4d8053288bb0",),
    "mnist/convnetjs_png/mnist_batch_2.png": ("14578a89cd497e00403c345c7b6523995f84f7a30561de28b238483364f6c1cd",),
    "mnist/convnetjs_png/mnist_batch_3.png": ("2d6161d591840118584158b98df72203b16373a92602a1597d837333181de55b",),
    "mnist/convnetjs_png/mnist_batch_4.png": ("cd84689bd8dfc3737b821097fc604d3b7e8bc125d3cd6a3bb30a7507ef4d7ce5",),
    "mnist/convnetjs_png/mnist_batch_5.png": ("abf32f587873280bb38c1593d4555b74eac743156569a2e380effd944732102c",),
    "mnist/convnetjs_png/mnist_batch_6.png": ("20ae1fc9d7381ae9f3f8e93e6f717a829b9c5f2648ab90d859359c34f6df370b",),
    "mnist/convnetjs_png/mnist_batch_7.png": ("b601118422f7c8cbea0a8daf008b10bbe10c17a3e3162d69db7068bd0f81aadb",),
    "mnist/convnetjs_png/mnist_batch_8.png": ("b4f82b66b9f155c7ee00e1265ad3f6d6fa10dcf48134f5b7ec650a719e0c07b9",),
    "mnist/convnetjs_png/mnist_batch_9.png": ("3578cf8893f90d94909250faa124d26df2a015a936bf38e93c8294ea262c74f4",),
    "mnist/convnetjs_png/mnist_batch_10.png": ("0e115b0b2618bd472aec7aca32a0614ff6804a00c91414ca1ab8926bec1d9d82",),
    "mnist/convnetjs_png/mnist_batch_11.png": ("47b3c7da91a1a6f6d2be559b7b34144a2b7098dc6e131432b0bed4607f95e5cb",),
    "mnist/convnetjs_png/mnist_batch_12.png": ("708bb164b1a0fb3ab07ebc57e63ba324af3f311d57f0849a1e105f4ae90f11ad",),
    "mnist/convnetjs_png/mnist_batch_13.png": ("708bffa630556b78d1954b66198bbb706afefce7c96268970b67c69c1a71968e",),
    "mnist/convnetjs_png/mnist_batch_14.png": ("1dae86b58155d10c39c9a1103851cc3e830ae4f1d6d8d436dcc8aea24f99eff8",),
    "mnist/convnetjs_png/mnist_batch_15.png": ("f4e1ba671eaa6cde349d21be84b53967aba199e51dc43358b4ee0defb62a4018",),
    "mnist/convnetjs_png/mnist_batch_16.png": ("1a6e9e424fab5c1ab0f6df455e8dbda94a132db99a199f27c576babc15b21317",),
    "mnist/convnetjs_png/mnist_batch_17.png": ("bc37aca4047ce38258e1cce2357d0267dd2bdce930743dd111ee9944081b5cd4",),
    "mnist/convnetjs_png/mnist_batch_18.png": ("c1a0167b5a8489408ec955a5c3b82f8b9238174ba63006758bd1d8352dac2b98",),
    "mnist/convnetjs_png/mnist_batch_19.png": ("dcc5166de8a1155640ea4afd5bd4cfef547608d3dea82aeade74bc5e03927dcd",),
    "fashion-mnist/train-images-idx3-ubyte.gz": (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # Zalando
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",  # Debian
    ),
    "fashion-mnist/train-labels-idx1-ubyte.gz": (
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    "fashion-mnist/t10k-images-idx3-ubyte.gz": (
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": (
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
    "olivetti/olivettifaces.mat": ("b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d",),
}

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Where the official files can be downloaded from (each checked against SHA256 above).
URLS = {
    # md5 c58f30108f718f92721af3b95e74349a, as published on the Toronto page.
    "cifar10/cifar-10-python.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    **{f"mnist/{f}": tuple(m + f for m in _MNIST_MIRRORS) for f in _IDX},
    **{f"fashion-mnist/{f}": (_FASHION_URL + f,) for f in _IDX},
    "olivetti/olivettifaces.mat": (
        "https://raw.githubusercontent.com/sjgershm/DBM/f2c3daacb880342847ed24283fb5a753c006b5d6/olivettifaces.mat",
    ),
}


def _idx_files(name: str, split: str) -> list[str]:
    stem = "train" if split == "train" else "t10k"
    return [f"{name}/{stem}-images-idx3-ubyte.gz", f"{name}/{stem}-labels-idx1-ubyte.gz"]


_LOSSLESS = "cifar10/lossless_subset_convnetjs/"
_JPEG = ["cifar10/CIFAR-10-images-jpg.tar.gz", "cifar10/cifar10_original_order_index.npz"]
_MNIST_PNG = [f"mnist/convnetjs_png/mnist_batch_{i}.png" for i in range(20)]

# name -> copy -> (what source() says, {split: files needed}). "auto" tries the copies in this
# order, except "lossless" (a 5k-image subset, used only when asked for).
COPIES = {
    "cifar10": {
        "official": ("CIFAR-10, official pickles", {s: ["cifar10/cifar-10-python.tar.gz"] for s in SPLITS}),
        "jpeg": ("CIFAR-10, JPEG-decoded copy (offline)", {s: _JPEG for s in SPLITS}),
        "lossless": ("CIFAR-10, lossless PNG subset: train[:4000], test[:1000] (offline)", {
            "train": [f"{_LOSSLESS}cifar10_batch_{i}.png" for i in range(4)] + [f"{_LOSSLESS}cifar10_labels.js"],
            "test": [f"{_LOSSLESS}cifar10_batch_50.png", f"{_LOSSLESS}cifar10_labels.js"]}),
    },
    "mnist": {
        "official": ("MNIST, official idx files", {s: _idx_files("mnist", s) for s in SPLITS}),
        "png": ("MNIST, lossless PNG train images + official idx labels (offline)",
                {"train": _MNIST_PNG + _idx_files("mnist", "train")[1:], "test": _idx_files("mnist", "test")}),
    },
    "fashion-mnist": {"official": ("Fashion-MNIST, official idx files", {s: _idx_files("fashion-mnist", s) for s in SPLITS})},
    "olivetti": {"official": ("Olivetti faces, olivettifaces.mat (AT&T/ORL via S. Roweis)",
                              {"train": ["olivetti/olivettifaces.mat"]})},
}


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are not in ``data_dir()`` and may not be downloaded."""


# ---------------------------------------------------------------------------------------------
# Public API


def load(name: str, split: str = "train", n: int | None = None, *, variant: str = "auto") -> torch.Tensor:
    """The first ``n`` images (all when ``None``) of ``name``'s ``split``: float32 ``(n, C, H, W)`` in [-1, 1].

    Pixels map as ``x / 127.5 - 1``; Olivetti is min-max scaled first, like scikit-learn's copy.
    ``variant`` (CIFAR-10: ``"official"``, ``"jpeg"``, ``"lossless"``; MNIST: ``"official"``,
    ``"png"``) forces one copy; ``"auto"`` takes the best one present (see :func:`source`).
    """
    n = _check(name, split, n, variant)
    copy, files = _resolve(name, split, variant)
    a = _images(name, split, copy, *_stamp(files))
    lo, hi = (int(a.min()), int(a.max())) if name == "olivetti" else (0, 255)
    return torch.from_numpy(a[:n].astype(np.float32)).sub_(lo).div_((hi - lo) / 2).sub_(1)


def load_labels(name: str, split: str = "train", n: int | None = None, *, variant: str = "auto") -> torch.Tensor:
    """Class labels (int64, ``[n]``) matching :func:`load` (Olivetti: the subject, ``i // 10``)."""
    n = _check(name, split, n, variant)
    copy, files = _resolve(name, split, variant)
    return torch.from_numpy(_labels(name, split, copy, *_stamp(files))[:n].copy())


def source(name: str, split: str = "train", *, variant: str = "auto") -> str:
    """Which copy :func:`load` uses, in words, e.g. ``"CIFAR-10, JPEG-decoded copy (offline)"``."""
    _check(name, split, None if variant != "lossless" else 1, variant)
    copy, files = _resolve(name, split, variant, download=False)
    text = COPIES[name][copy][0]
    return text if files is not None else f"{text} (to be downloaded into {_config.data_dir() / name})"


# ---------------------------------------------------------------------------------------------
# Arguments, files, checksums, downloads


def _check(name, split, n, variant) -> int:
    """Validate the arguments; return ``n`` (the split's size when ``None``)."""
    if name not in COPIES:
        raise ValueError(f"name must be one of {tuple(COPIES)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split not in SIZES[name]:
        raise ValueError(f"split={split!r}: {name} has only a train split (all {SIZES[name]['train']} images)")
    if variant != "auto" and variant not in COPIES[name]:
        raise ValueError(f"variant must be one of {('auto', *COPIES[name])} for {name}, got {variant!r}")
    size = SIZES[name][split]
    if n is None:
        n = size
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 < n <= size:
        raise ValueError(f"n must be an integer in [1, {size}] for {name} {split}, got {n!r}")
    if variant == "lossless":
        have = 4000 if split == "train" else 1000
        if n > have:
            raise ValueError(f"variant='lossless' holds only the first {have} {split} images; pass n <= {have}, got n={n}")
    return int(n)


def _find(root: Path, rel: str) -> Path | None:
    """``root/rel``, or ``root/<folder>/idx/<file>`` (where the offline layout keeps idx files)."""
    folder, _, file = rel.rpartition("/")
    for path in (root / rel, root / folder / "idx" / file):
        if path.is_file():
            return path
    return None


def _may_download() -> bool:
    return os.environ.get("PAPERLIB_ALLOW_DOWNLOAD", "").strip() == "1" or "google.colab" in sys.modules


def _resolve(name: str, split: str, variant: str, download: bool = True) -> tuple[str, dict[str, Path] | None]:
    """The copy to use and its files; downloads the official files when allowed (``None`` if ``download=False``)."""
    root = _config.data_dir()
    order = [variant] if variant != "auto" else [c for c in COPIES[name] if c != "lossless"]
    for copy in order:
        found = {rel: _find(root, rel) for rel in COPIES[name][copy][1][split]}
        if all(found.values()):
            return copy, found
    if "official" in order and _may_download():
        rels = COPIES[name]["official"][1][split]
        if not download:
            return "official", None
        return "official", {rel: _find(root, rel) or _download(root, rel, name, split, variant) for rel in rels}
    raise DatasetNotFound(_instructions(name, split, variant, root))


def _instructions(name: str, split: str, variant: str, root: Path) -> str:
    order = [variant] if variant != "auto" else [c for c in COPIES[name] if c != "lossless"]
    lines = [f"{TITLES[name]} ({split} split, variant={variant!r}) was not found in {root}. Do one of:"]
    for copy in order:
        missing = [rel for rel in COPIES[name][copy][1][split] if _find(root, rel) is None]
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        lines.append(f"  - {COPIES[name][copy][0]}: put {shown} under {root}/")
    lines.append("  - or set PAPERLIB_DATA to a folder that has these files (layout: help(paperlib.data))")
    if "official" in order:
        lines.append(f"  - or set PAPERLIB_ALLOW_DOWNLOAD=1 on a networked machine to download the official files into {root}/")
    return "\n".join(lines)


def _download(root: Path, rel: str, name: str, split: str, variant: str) -> Path:
    """Fetch ``rel`` from its official URL into ``root/rel``, atomically, after checking its sha256."""
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in URLS[rel]:
        print(f"paperlib.data: downloading {url} -> {dest}", file=sys.stderr)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "paperlib"})
            with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            digest = _sha256(tmp)
            if digest not in SHA256[rel]:
                raise OSError(f"sha256 {digest} is not the expected {SHA256[rel][0]}")
            os.replace(tmp, dest)
            return dest
        except (OSError, http.client.HTTPException) as exc:  # urllib's errors are OSErrors
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetNotFound(f"could not download {rel} ({'; '.join(errors)}).\n" + _instructions(name, split, variant, root))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, checked this process


def _verify(rel: str, path: str, size: int, mtime: int) -> str:
    """sha256 of the file at ``path`` (the dataset file ``rel``); ``ValueError`` if it is not the expected one."""
    key = (path, size, mtime)
    if key not in _VERIFIED:
        digest = _sha256(Path(path))
        if digest not in SHA256[rel]:
            raise ValueError(f"{path} failed its checksum (sha256 {digest}, expected {SHA256[rel][0]} for {rel}): "
                             "the file is corrupted or a different copy; delete it and put back a good one")
        _VERIFIED[key] = digest
    return _VERIFIED[key]


def _stamp(files: dict[str, Path]) -> tuple[tuple[str, ...], tuple[tuple[str, int, int], ...]]:
    """Hashable ``(rels, (path, size, mtime_ns) per file)``: a changed file gives a new cache key."""
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p, st in ((p, p.stat()) for p in files.values())]
    return tuple(files), tuple(stats)


# ---------------------------------------------------------------------------------------------
# Decoding (uint8 arrays, (N, C, H, W)), cached on disk and in memory


@functools.lru_cache(maxsize=6)
def _images(name: str, split: str, copy: str, rels: tuple, stats: tuple) -> np.ndarray:
    """Decoded uint8 images (read-only), from the ``.npy`` cache when it holds them."""
    digests = [_verify(rel, *st) for rel, st in zip(rels, stats)]
    key = hashlib.sha256(" ".join([_DECODER_VERSION, *digests]).encode()).hexdigest()[:16]
    path = _config.cache_dir() / "datasets" / f"{name}-{split}-{copy}-{key}.npy"
    a = None
    if path.is_file():
        try:
            a = np.load(path)
        except (OSError, ValueError, EOFError):
            a = None  # unreadable cache file: decode again and overwrite it
    if a is None or a.dtype != np.uint8 or a.ndim != 4:
        a = np.ascontiguousarray(_decode(name, split, copy, [Path(st[0]) for st in stats]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, a)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=12)
def _labels(name: str, split: str, copy: str, rels: tuple, stats: tuple) -> np.ndarray:
    for rel, st in zip(rels, stats):
        _verify(rel, *st)
    paths = [Path(st[0]) for st in stats]
    if name == "olivetti":
        y = np.arange(400) // 10
    elif copy == "official" and name == "cifar10":
        y = np.concatenate([b[b"labels"] for b in _cifar_batches(paths[0], split)])
    elif copy == "jpeg":
        with np.load(paths[1]) as index:
            y = index[f"{split}_labels"]
    elif copy == "lossless":
        y = _js_labels(paths[-1])
        y = y[:4000] if split == "train" else y[50000:51000]
    else:  # idx labels, the last file of both MNIST copies and of Fashion-MNIST
        y = _idx(paths[-1])
    y = np.asarray(y, dtype=np.int64)
    y.flags.writeable = False
    return y


def _decode(name: str, split: str, copy: str, paths: list[Path]) -> np.ndarray:
    if name == "cifar10" and copy == "official":
        return np.concatenate([b[b"data"] for b in _cifar_batches(paths[0], split)]).reshape(-1, 3, 32, 32)
    if copy == "jpeg":
        with np.load(paths[1]) as index:
            return _decode_jpeg_tar(paths[0], index[f"{split}_files"])
    if copy == "lossless":  # sprites: one image per row, 1024 RGB pixels = 32x32x3
        return np.concatenate([_png(p, "RGB").reshape(-1, 32, 32, 3) for p in paths[:-1]]).transpose(0, 3, 1, 2)
    if copy == "png":  # MNIST sprites: one 28x28 image per row
        return np.concatenate([_png(p, "L") for p in paths[:-1]]).reshape(-1, 1, 28, 28)
    if name == "olivetti":
        from scipy.io import loadmat

        faces = loadmat(paths[0])["faces"]  # (4096, 400), column-major 64x64 images
        return np.asarray(faces, dtype=np.uint8).T.reshape(-1, 64, 64).transpose(0, 2, 1)[:, None]
    return _idx(paths[0])[:, None]  # official idx images (MNIST, Fashion-MNIST)


def _cifar_batches(path: Path, split: str) -> list[dict]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    with tarfile.open(path) as tar:
        return [pickle.load(tar.extractfile(f"cifar-10-batches-py/{b}"), encoding="bytes") for b in names]


def _decode_jpeg_tar(path: Path, files: np.ndarray) -> np.ndarray:
    from PIL import Image

    prefix = str(files[0]).split("/")[0] + "/"
    with tarfile.open(path) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and m.name.startswith(prefix)}
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = np.asarray(Image.open(io.BytesIO(blobs[str(f)])).convert("RGB"))
    return out.transpose(0, 3, 1, 2)


def _png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def _js_labels(path: Path) -> np.ndarray:
    text = path.read_text()
    return np.array(text[text.index("[") + 1:text.rindex("]")].split(","), dtype=np.int64)


def _idx(path: Path) -> np.ndarray:
    """An idx(.gz) array of unsigned bytes (LeCun's format)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# Part of the .npy cache key: editing a decoder invalidates the arrays it decoded.
_DECODER_VERSION = _cache.code_version(_decode, _cifar_batches, _decode_jpeg_tar, _png, _idx)


def resize(x: torch.Tensor, res: int) -> torch.Tensor:
    """Images ``(n, C, H, W)`` resized to ``(n, C, res, res)``: the one resizer of the chapters and the CLI.

    Downscaling averages pixel areas (``F.interpolate(mode="area")``: for an integer factor ``k`` this is
    exactly ``avg_pool2d(x, k)``, each output pixel the mean of a ``k x k`` block, so a 32x32 image at
    ``res = 16`` is the mean of its 2x2 blocks); upscaling is bilinear. ``res`` equal to the size returns
    ``x`` itself. The result keeps ``x``'s dtype (float16/bfloat16 are computed in float32).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor of images (n, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point (images in [-1, 1]), got {x.dtype}")
    if isinstance(res, bool) or not isinstance(res, numbers.Integral) or res < 1:
        raise ValueError(f"res must be a positive integer, got {res!r}")
    res = int(res)
    h, w = x.shape[-2:]
    if h == res and w == res:
        return x
    y = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if res <= h and res <= w:
        y = F.interpolate(y, size=(res, res), mode="area")
    elif res >= h and res >= w:
        y = F.interpolate(y, size=(res, res), mode="bilinear", align_corners=False)
    else:  # down in one axis, up in the other: area along each in turn
        y = F.interpolate(F.interpolate(y, size=(min(h, res), min(w, res)), mode="area"), size=(res, res),
                          mode="bilinear", align_corners=False)
    return y.to(x.dtype)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_folder(folder, size: int | None = None, grayscale: bool = False) -> torch.Tensor:
    """All images under ``folder`` (recursively, sorted by path) as ``(n, C, size, size)`` in [-1, 1].

    For running the companion on your own data (e.g. ``python -m paperlib danger-zone FOLDER``).
    Images are converted to RGB (or grayscale) and, with ``size``, resized (Lanczos) to a square;
    without ``size`` they must all have the same shape.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"folder {str(root)!r} is not a directory")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(paths) < 2:
        raise ValueError(f"folder {str(root)!r} holds {len(paths)} images (.png/.jpg/...); need at least 2")
    from PIL import Image

    arrays = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("L" if grayscale else "RGB")
            if size is not None:
                im = im.resize((size, size), Image.LANCZOS)
            arrays.append(np.asarray(im, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"folder images have different shapes {sorted(shapes)[:3]}...; pass size=")
    x = torch.from_numpy(np.stack(arrays)).float()
    x = x[:, None] if grayscale else x.permute(0, 3, 1, 2)
    return x / 127.5 - 1
