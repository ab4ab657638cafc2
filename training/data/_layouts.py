"""Where the images of a split are and what their labels are, per folder layout.

Each layout is a function ``(root, cfg, split) -> Listing`` in :data:`LAYOUTS`; a new layout
(CIFAR-10's pickled batches, say) registers one and :func:`load_split` needs no change.
Layouts only list and check; decoding and caching are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.config import DataConfig
from training.data._errors import DataError
from training.data._sources import (
    IMAGE_EXTS,
    Listing,
    Problems,
    SourceItem,
    image_files,
    inside,
    read_csv,
)
from training.registry import Registry

__all__ = ["LAYOUTS", "LayoutLoader"]

LayoutLoader = Callable[[Path, DataConfig, str], Listing]

#: layout name → loader; ``DataConfig.layout`` picks one
LAYOUTS: Registry[LayoutLoader] = Registry("data layout")


def _resolve(root: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / p


def _wrong_extension_hint(path: Path) -> str:
    if not path.parent.is_dir():
        return ""
    others = sorted(
        p.name
        for p in path.parent.glob(f"{path.stem}.*")
        if p.suffix.lower() in IMAGE_EXTS and p != path
    )
    return f" (but {', '.join(others)} exists: wrong extension in the CSV?)" if others else ""


# ---------------------------------------------------------------------------------- kaggle
@LAYOUTS.register("kaggle")
def kaggle_layout(root: Path, cfg: DataConfig, split: str) -> Listing:
    """``ROOT/train.csv`` (id,label) + ``ROOT/train/<id>.<ext>``; test = every image in
    ``ROOT/test/``, in ``ROOT/sample_submission.csv`` order when that exists."""
    return _kaggle_train(root, cfg) if split == "train" else _kaggle_test(root, cfg)


def _kaggle_train(root: Path, cfg: DataConfig) -> Listing:
    csv = _resolve(root, cfg.manifest)
    df = read_csv(csv, [cfg.id_col, cfg.label_col], what="labels CSV")
    folder = root / "train"
    if not folder.is_dir():
        raise DataError(f"kaggle layout: image folder {folder} not found (next to {csv.name})")
    by_stem: dict[str, list[Path]] = {}
    for p in image_files(folder):
        by_stem.setdefault(p.stem, []).append(p)

    problems = Problems(f"kaggle layout ({csv})")
    first_line: dict[str, int] = {}
    items: list[SourceItem] = []
    # line numbers as an editor shows them: the header is line 1
    for line, (id_, label) in enumerate(zip(df[cfg.id_col], df[cfg.label_col], strict=True), 2):
        where = f"{csv.name} line {line} (id {id_!r})"
        if not id_:
            problems.add(f"{csv.name} line {line}", f"empty {cfg.id_col!r}")
            continue
        if not label:
            problems.add(where, f"empty {cfg.label_col!r}")
            continue
        if id_ in first_line:
            problems.add(where, f"duplicate id (first on line {first_line[id_]})")
            continue
        first_line[id_] = line
        path, why = _find_train_image(folder, id_, by_stem)
        if path is None:
            problems.add(where, why)
            continue
        items.append(SourceItem(id_, path, label))
    return Listing(items, skipped=problems.settle(cfg.skip_bad))


def _find_train_image(
    folder: Path, id_: str, by_stem: dict[str, list[Path]]
) -> tuple[Path | None, str]:
    direct = folder / id_
    if not inside(direct, [folder]):
        return None, f"id escapes the image folder {folder}"
    if direct.suffix.lower() in IMAGE_EXTS and direct.is_file():
        return direct, ""
    if "/" in id_ or "\\" in id_:  # an id naming a sub-folder: not in the flat index
        found = [p for ext in IMAGE_EXTS if (p := direct.with_name(direct.name + ext)).is_file()]
    else:
        found = by_stem.get(id_, [])
    if not found:
        return None, f"no image train/{id_}.{{{','.join(e[1:] for e in IMAGE_EXTS)}}}"
    if len(found) > 1:
        return None, f"several images for this id: {', '.join(p.name for p in found)}"
    return found[0], ""


def _kaggle_test(root: Path, cfg: DataConfig) -> Listing:
    folder = root / "test"
    if not folder.is_dir():
        raise DataError(f"kaggle layout: test folder {folder} not found")
    problems = Problems(f"kaggle layout ({folder})")
    by_id: dict[str, Path] = {}
    for p in image_files(folder):
        if p.stem in by_id:
            problems.add(f"test/{p.name}", f"same id as test/{by_id[p.stem].name}")
            continue
        by_id[p.stem] = p

    sub = root / "sample_submission.csv"
    if sub.is_file():
        df = read_csv(sub, [cfg.id_col], what="sample submission")
        order: list[str] = []
        seen: set[str] = set()
        for line, id_ in enumerate(df[cfg.id_col], 2):
            if id_ in seen:
                problems.add(f"{sub.name} line {line} (id {id_!r})", "duplicate id")
            elif id_ not in by_id:
                problems.add(f"{sub.name} line {line} (id {id_!r})", "no image in test/")
            else:
                order.append(id_)
            seen.add(id_)
        for id_ in sorted(set(by_id) - seen):
            problems.add(f"test/{by_id[id_].name}", f"id {id_!r} is not in {sub.name}")
    else:
        order = sorted(by_id)
    skipped = problems.settle(cfg.skip_bad)
    return Listing([SourceItem(i, by_id[i]) for i in order], skipped=skipped)


# ---------------------------------------------------------------------------------- imagefolder
@LAYOUTS.register("imagefolder")
def imagefolder_layout(root: Path, cfg: DataConfig, split: str) -> Listing:
    """``ROOT/train/<class>/*`` (or ``ROOT/<class>/*``); test = ``ROOT/test/*``, unlabelled."""
    if split == "test":
        folder = root / "test"
        if not folder.is_dir():
            raise DataError(f"imagefolder layout: no test split, {folder} not found")
        problems = Problems(f"imagefolder layout ({folder})")
        by_id: dict[str, Path] = {}
        for p in image_files(folder):
            if p.stem in by_id:
                problems.add(f"test/{p.name}", f"same id as test/{by_id[p.stem].name}")
                continue
            by_id[p.stem] = p
        skipped = problems.settle(cfg.skip_bad)
        return Listing([SourceItem(i, p) for i, p in by_id.items()], skipped=skipped)

    base = root / "train" if (root / "train").is_dir() else root
    class_dirs = sorted(
        d
        for d in base.iterdir()
        if d.is_dir() and not d.name.startswith(".") and not (base == root and d.name == "test")
    )
    if not class_dirs:
        raise DataError(f"imagefolder layout: no class folders in {base}")
    items = [
        SourceItem(f"{d.name}/{p.name}", p, d.name) for d in class_dirs for p in image_files(d)
    ]
    return Listing(items, classes_found=[d.name for d in class_dirs])


# ---------------------------------------------------------------------------------- manifest
@LAYOUTS.register("manifest")
def manifest_layout(root: Path, cfg: DataConfig, split: str) -> Listing:
    """A CSV of image paths (relative to the CSV's folder) and labels.

    Rows whose label is outside ``cfg.classes`` are dropped on purpose and counted in
    ``Listing.filtered`` (the real artwork set has 18 types; the tasks use 9).  Ids come
    from ``cfg.id_col`` when the CSV has it, else they are the paths as written.
    """
    csv = _resolve(root, cfg.manifest)
    if split != "train":
        raise DataError(f"manifest layout ({csv}) has only a train split, not {split!r}")
    df = read_csv(csv, [cfg.path_col, cfg.label_col], what="manifest")
    base = csv.parent
    has_id = cfg.id_col in df.columns
    wanted = set(cfg.classes) if cfg.classes else None

    problems = Problems(f"manifest layout ({csv})")
    first_line: dict[str, int] = {}
    items: list[SourceItem] = []
    filtered = 0
    for line, row in enumerate(df.to_dict("records"), 2):
        rel, label = row[cfg.path_col], row[cfg.label_col]
        if wanted is not None and label not in wanted:
            filtered += 1
            continue
        id_ = row[cfg.id_col] if has_id else rel
        where = f"{csv.name} line {line} ({rel!r})"
        if not label:
            problems.add(where, f"empty {cfg.label_col!r}")
            continue
        if not rel:
            problems.add(f"{csv.name} line {line}", f"empty {cfg.path_col!r}")
            continue
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if not inside(path, [root, base]):
            problems.add(where, f"path escapes the data root {root}")
            continue
        if not path.is_file():
            problems.add(where, f"file not found: {path}{_wrong_extension_hint(path)}")
            continue
        if id_ in first_line:
            problems.add(where, f"duplicate id {id_!r} (first on line {first_line[id_]})")
            continue
        first_line[id_] = line
        items.append(SourceItem(id_, path, label))
    return Listing(
        items, skipped=problems.settle(cfg.skip_bad), filtered=filtered, filters_classes=True
    )


# ---------------------------------------------------------------------------------- auto
@LAYOUTS.register("auto")
def auto_layout(root: Path, cfg: DataConfig, split: str) -> Listing:
    """kaggle when ``cfg.manifest`` (train.csv) exists — manifest instead when that CSV has a
    path column and no id column — else imagefolder."""
    csv = _resolve(root, cfg.manifest)
    if not csv.is_file():
        return LAYOUTS.get("imagefolder")(root, cfg, split)
    header = read_csv(csv, [], what="labels CSV").columns
    is_manifest = cfg.path_col in header and cfg.id_col not in header
    return LAYOUTS.get("manifest" if is_manifest else "kaggle")(root, cfg, split)
