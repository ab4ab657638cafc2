"""CIFAR-10's pickled batches as the ``cifar10`` data layout.

``--data DIR`` holds ``DIR/cifar-10-batches-py/`` (the unpacked official archive; DIR may also
be that folder itself). torchvision's own :class:`~torchvision.datasets.CIFAR10` reads the
pickles and checks every file's md5, one batch file at a time so each image can name the file
it came from (the decode cache fingerprints those files). The five ``data_batch_*`` files are
the train split (ids ``train_00000`` …), ``test_batch`` is the test split (``test_00000`` …,
labelled); the validation split is carved out of train by ``prepare_data`` as for any layout.
Images are decoded, resized to ``data.image_size`` and cached by the shared pipeline.

Nothing here downloads unless asked: :func:`download_cifar10` (or
``torchvision.datasets.CIFAR10(DIR, download=True)``) fetches the official archive once.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from training.config import DataConfig
from training.data._errors import DataError
from training.data._layouts import LAYOUTS
from training.data._sources import Listing, SourceItem

__all__ = [
    "BASE_FOLDER",
    "CLASS_NAMES",
    "EXPECTED_MD5",
    "META_FILE",
    "SPLIT_FILES",
    "cifar10_layout",
    "download_cifar10",
    "file_md5s",
    "write_cifar10_batches",
]

BASE_FOLDER: str = CIFAR10.base_folder  # "cifar-10-batches-py"
META_FILE: str = CIFAR10.meta["filename"]  # "batches.meta"
#: split → the batch files holding it, in the official order
SPLIT_FILES: dict[str, list[str]] = {
    "train": [name for name, _ in CIFAR10.train_list],
    "test": [name for name, _ in CIFAR10.test_list],
}
#: the official label names, in label-index order (which is also alphabetical)
CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
#: file → the md5 torchvision checks it against. Tests swap in their generated files' sums
#: (``monkeypatch.setattr(cifar, "EXPECTED_MD5", file_md5s(folder))``) so a fixture goes
#: through the very same checks and parsing as the real files.
EXPECTED_MD5: dict[str, str] = {
    **{name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list},
    META_FILE: CIFAR10.meta["md5"],
}

_DOWNLOAD_HINT = (
    "download it once with: python -c \"from training.data.cifar import download_cifar10; "
    "download_cifar10('DIR')\" (about 170 MB), then pass --data DIR"
)


class _CifarBatch(CIFAR10):
    """torchvision's CIFAR10 reading exactly one batch file, checked against ``md5``.

    ``CIFAR10.__init__`` checks and loads the files listed in the *class* attributes
    ``train_list``/``test_list``/``meta``; instance attributes shadow them, so the parsing and
    the md5 checks stay torchvision's own while we learn which file each image is in.
    """

    def __init__(self, root: Path, filename: str, *, md5: str, meta_md5: str) -> None:
        self.train_list = [[filename, md5]]
        self.test_list: list[list[str]] = []
        self.meta = {**CIFAR10.meta, "md5": meta_md5}
        super().__init__(str(root), train=True, download=False)


def _dataset_root(root: Path) -> Path:
    """The folder torchvision wants: the one *containing* ``cifar-10-batches-py``."""
    if (root / BASE_FOLDER).is_dir():
        return root
    if root.name == BASE_FOLDER and root.is_dir():
        return root.parent
    raise DataError(f"cifar10 layout: {root / BASE_FOLDER} not found; {_DOWNLOAD_HINT}")


def _check_present(folder: Path, files: list[str]) -> None:
    """All missing files at once, before reading any (an incomplete unpack names them all)."""
    missing = [str(folder / n) for n in [*files, META_FILE] if not (folder / n).is_file()]
    if missing:
        raise DataError(f"cifar10 layout: missing file(s) {', '.join(missing)}; {_DOWNLOAD_HINT}")


def _read_batch(ds_root: Path, filename: str) -> _CifarBatch:
    folder = ds_root / BASE_FOLDER
    md5, meta_md5 = EXPECTED_MD5[filename], EXPECTED_MD5[META_FILE]
    try:
        return _CifarBatch(ds_root, filename, md5=md5, meta_md5=meta_md5)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        checks = ((filename, md5), (META_FILE, meta_md5))
        bad = [str(folder / n) for n, m in checks if not check_integrity(str(folder / n), m)]
        if not bad:
            raise DataError(f"cifar10 layout: cannot read {folder / filename}: {exc}") from None
        raise DataError(
            f"cifar10 layout: md5 of {', '.join(bad)} does not match the official CIFAR-10 "
            f"file (a partial or corrupted download?); delete {folder} and {_DOWNLOAD_HINT}"
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        # only reachable when the md5 table was replaced (tests) or a file passes with
        # a colliding sum: still name the file
        raise DataError(
            f"cifar10 layout: cannot parse {folder / filename}: {type(exc).__name__}: {exc}"
        ) from None


@LAYOUTS.register("cifar10")
def cifar10_layout(root: Path, cfg: DataConfig, split: str) -> Listing:
    """The train (``data_batch_1..5``) or test (``test_batch``) split of CIFAR-10.

    ``cfg.classes`` keeps a subset of the classes (rows outside it count as ``filtered``).
    """
    ds_root = _dataset_root(root)
    folder = ds_root / BASE_FOLDER
    files = SPLIT_FILES.get(split)
    if files is None:
        raise DataError(f"cifar10 layout: no split {split!r}; valid: {', '.join(SPLIT_FILES)}")
    _check_present(folder, files)
    wanted: set[str] | None = set(cfg.classes) if cfg.classes else None
    items: list[SourceItem] = []
    names: list[str] = []
    filtered = 0
    index = 0
    for filename in files:
        batch = _read_batch(ds_root, filename)
        names = list(batch.classes)
        unknown = sorted(wanted - set(names)) if wanted is not None else []
        if unknown:
            raise DataError(
                f"data.classes: {unknown} are not CIFAR-10 classes; valid: {', '.join(names)}"
            )
        for image, target in zip(batch.data, batch.targets, strict=True):
            label = names[target]
            if wanted is None or label in wanted:
                items.append(
                    SourceItem(
                        id=f"{split}_{index:05d}",
                        path=folder / filename,
                        label=label,
                        # the H×W×3 uint8 array is already in memory: no file to open
                        read=functools.partial(Image.fromarray, image),
                    )
                )
            else:
                filtered += 1
            index += 1
    kept = [n for n in names if wanted is None or n in wanted]
    return Listing(items, filtered=filtered, classes_found=kept, filters_classes=True)


def download_cifar10(root: str | Path) -> Path:
    """Download and unpack the official archive under ``root`` (once; torchvision verifies
    its md5). Returns ``root/cifar-10-batches-py``. The only function here that goes online."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)
    return root / BASE_FOLDER


def file_md5s(folder: str | Path) -> dict[str, str]:
    """md5 of every CIFAR-10 file in ``folder`` (the ``cifar-10-batches-py`` folder)."""
    folder = Path(folder)
    names = [*SPLIT_FILES["train"], *SPLIT_FILES["test"], META_FILE]
    return {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in names}


def write_cifar10_batches(
    root: str | Path,
    *,
    per_class: int = 6,
    test_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a small dataset in CIFAR-10's exact on-disk format (for tests and smoke runs).

    Every ``data_batch_*`` holds ``per_class`` 32×32 images of each class, ``test_batch``
    ``test_per_class`` (default ``per_class``). Each class has its own colour and stripe
    direction under noise, so a small model can learn it. Returns the batches folder; its
    md5s are not the official ones (see :data:`EXPECTED_MD5`).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(30, 226, size=(len(CLASS_NAMES), 3))

    def batch(n_per_class: int, label: str) -> dict[str, object]:
        labels = np.repeat(np.arange(len(CLASS_NAMES)), n_per_class)
        rng.shuffle(labels)
        yy, xx = np.mgrid[0:32, 0:32]
        images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
        for i, c in enumerate(labels):
            stripes = np.sin((xx * np.cos(c) + yy * np.sin(c)) * 0.8)[..., None] * 40
            noise = rng.normal(0, 20, size=(32, 32, 3))
            images[i] = np.clip(colours[c] + stripes + noise, 0, 255).astype(np.uint8)
        return {
            "batch_label": label,
            "labels": labels.tolist(),
            # CIFAR stores each image as 3072 bytes: the R plane, then G, then B
            "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3072),
            "filenames": [f"img_{label.replace(' ', '_')}_{i}.png" for i in range(len(labels))],
        }

    for k, name in enumerate(SPLIT_FILES["train"], 1):
        content = batch(per_class, f"training batch {k} of 5")
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    test = batch(per_class if test_per_class is None else test_per_class, "testing batch 1 of 1")
    (folder / SPLIT_FILES["test"][0]).write_bytes(pickle.dumps(test, protocol=2))
    meta = {"label_names": CLASS_NAMES, "num_cases_per_batch": per_class * 10, "num_vis": 3072}
    (folder / META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return folder
