"""The CUDA and data-parallel paths, checked on a CPU-only machine (issue 14).

No GPU here: ``torch.cuda`` is monkeypatched where a path asks about the device, the
``meta`` device stands in for GPU-resident data, and the rest are pure functions.  The
data-parallel test runs two real gloo processes on the CPU.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import RandomSampler, WeightedRandomSampler

from training import engine
from training import loop as loop_module
from training.config import AugmentConfig
from training.data import BatchAugment, Preprocessing
from training.data.augment import affine_batch, color_jitter_batch
from training.engine import PreparedData
from training.loop import (
    ArrayLoader,
    autocast_for,
    data_fits_on_device,
    evaluate,
    kernels_for,
    train_one_epoch,
)
from training.tasks import preset_config

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)


def _mock_cuda(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    """A CUDA device of ``capability`` as far as the device queries go; ``is_bf16_supported``
    says True as it does on a T4 (it counts emulation)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


# --------------------------------------------------------------- 3: equal steps per rank
@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_runs_the_same_number_of_batches(world: int) -> None:
    for n in range(1, 301):
        labels = torch.arange(n)
        images = torch.zeros(n, 1, 1, 1, dtype=torch.uint8)
        for drop_last in (False, True):
            train = [
                ArrayLoader(
                    images,
                    labels,
                    16,
                    RandomSampler(range(n), generator=torch.Generator().manual_seed(n)),
                    rank,
                    world,
                    drop_last=drop_last,
                )
                for rank in range(world)
            ]
            batches = [list(loader) for loader in train]
            counts = {len(b) for b in batches}
            assert len(counts) == 1, f"n={n} world={world}: batches per rank {counts}"
            assert len(train[0]) == counts.pop()
            if drop_last:
                continue
            drawn = [torch.cat([y for _, y in b]).tolist() for b in batches]
            everything = [i for d in drawn for i in d]
            # disjoint up to padding: every index once, plus the few repeated to even the
            # shares out (each short shard repeats one of its own)
            assert sorted(set(everything)) == list(range(n))
            assert len(everything) - n == -n % world
            if n >= world:
                assert all(len(set(d)) >= len(d) - 1 for d in drawn)
                assert len(set(everything)) == sum(len(set(d)) for d in drawn)

        evals = [ArrayLoader(images, labels, 16, None, rank, world) for rank in range(world)]
        assert len({len(list(loader)) for loader in evals}) == 1
        assert {len(loader) for loader in evals} == {len(list(evals[0]))}
        # what evaluate gathers: each image exactly once, in order, padding dropped
        parts = [torch.cat([y for _, y in loader]) for loader in evals]
        assert torch.equal(evals[0].merge_shards(parts), labels)


def test_weighted_sampler_shards_are_equal_too() -> None:
    # build_sampler's imbalance sampler draws num_samples with replacement
    for n in (33, 101):
        sampler = WeightedRandomSampler([1.0] * n, n, generator=torch.Generator())
        loaders = [
            ArrayLoader(torch.zeros(n, 1, 1, 1), torch.arange(n), 16, sampler, r, 2) for r in (0, 1)
        ]
        assert len(loaders[0]) == len(loaders[1]) == math.ceil(math.ceil(n / 2) / 16)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, n: int) -> None:
    # a hang (one rank waiting in an all-reduce the other never joins) times out here
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=15),
    )
    try:
        torch.manual_seed(0)
        linear = nn.Linear(3 * 4 * 4, 3)
        model = nn.Sequential(nn.Flatten(), linear)
        ddp = nn.parallel.DistributedDataParallel(model)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 3, (n,), generator=g)
        sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(1))
        train = ArrayLoader(images, labels, 16, sampler, rank, world)
        prep = Preprocessing(image_size=4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        steps = []
        for _ in range(2):
            metrics = train_one_epoch(ddp, train, nn.CrossEntropyLoss(), opt, CPU, prep)
            steps.append(metrics["train_images"])
        result = evaluate(
            model, ArrayLoader(images, labels, 16, None, rank, world), CPU, prep, num_classes=3
        )
        torch.save(
            {
                "steps": steps,
                "y_true": torch.as_tensor(result.y_true),
                "labels": labels,
                "weight": linear.weight.detach().clone(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_finish_an_uneven_dataset(tmp_path: Path) -> None:
    """33 images, batch 16, 2 ranks: 17 + 16 images used to be 2 + 1 steps, and the rank
    with the extra step waited for an all-reduce that never came."""
    n, world = 33, 2
    ctx = mp.start_processes(
        _ddp_worker,
        args=(world, str(tmp_path / "pg"), str(tmp_path), n),
        nprocs=world,
        join=False,
        start_method="fork",  # the children inherit the imports: no seconds of start-up
    )
    deadline = time.monotonic() + 60  # a hang ends sooner: the 15 s process-group timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the two ranks did not finish: a collective is waiting")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert out[0]["steps"] == out[1]["steps"] == [17.0, 17.0]  # 17 each, one padded
    # evaluation counts every image once, in order, on every rank
    for o in out:
        assert torch.equal(o["y_true"], o["labels"])
    # DDP kept the replicas identical: every step's all-reduce had both ranks in it
    assert torch.equal(out[0]["weight"], out[1]["weight"])


# --------------------------------------------------------------- 4: AMP by capability
@pytest.mark.parametrize(
    ("capability", "dtype", "scaler"),
    [
        ((7, 5), torch.float16, True),
        ((8, 6), torch.bfloat16, False),
        ((9, 0), torch.bfloat16, False),
    ],
)
def test_amp_dtype_follows_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype, scaler: bool
) -> None:
    _mock_cuda(monkeypatch, capability)
    ctx, needs_scaler = autocast_for(CUDA, True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == dtype
    assert needs_scaler is scaler
    # no AMP off CUDA or when disabled, whatever the GPU
    assert autocast_for(CPU, True)[1] is False and not isinstance(
        autocast_for(CPU, True)[0], torch.autocast
    )
    assert not isinstance(autocast_for(CUDA, False)[0], torch.autocast)


# --------------------------------------------------------------- 6: no per-batch host syncs
_CREATORS = ("tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange")


def _count_loop_tensor_creation(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts tensor constructors called from training/loop.py (each one, on a GPU, is a
    host→device copy or at least an allocation the host waits on)."""
    counts = {"n": 0}
    loop_file = loop_module.__file__
    for name in _CREATORS:
        real = getattr(torch, name)

        def counting(*args: Any, _real: Callable[..., Any] = real, **kwargs: Any) -> Any:
            if sys._getframe(1).f_code.co_filename == loop_file:
                counts["n"] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, counting)
    return counts


def test_tensor_creation_per_epoch_is_constant_not_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prep = Preprocessing(image_size=4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    counts = _count_loop_tensor_creation(monkeypatch)
    train_counts, eval_counts = [], []
    for n_batches in (1, 10):
        n = 8 * n_batches
        images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8)
        labels = torch.randint(0, 3, (n,))
        loader = ArrayLoader(images, labels, 8, RandomSampler(range(n)))
        counts["n"] = 0
        train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, CPU, prep)
        train_counts.append(counts["n"])
        counts["n"] = 0
        evaluate(model, ArrayLoader(images, labels, 8), CPU, prep, num_classes=3)
        eval_counts.append(counts["n"])
    assert train_counts[0] == train_counts[1], train_counts
    assert eval_counts[0] == eval_counts[1], eval_counts


class _IndexSpy(TorchFunctionMode):
    """Records the device of every index used to gather from ``source``."""

    def __init__(self, source: torch.Tensor) -> None:
        super().__init__()
        self.source = source
        self.devices: list[torch.device] = []

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.__getitem__ and args[0] is self.source:
            self.devices.append(args[1].device)
        elif func is torch.index_select and args[0] is self.source:
            self.devices.append(args[2].device)
        return func(*args, **kwargs)


def test_batches_index_on_the_datas_device() -> None:
    # images resident on an accelerator (meta stands in), labels in host memory
    images = torch.empty(40, 3, 4, 4, dtype=torch.uint8, device="meta")
    labels = torch.arange(40)
    loader = ArrayLoader(images, labels, 8, RandomSampler(range(40)))
    with _IndexSpy(images) as spy:
        batches = list(loader)
    assert len(batches) == 5 and spy.devices
    assert {d.type for d in spy.devices} == {"meta"}, (
        "a CPU index into device data is a copy per batch"
    )
    assert all(xb.device.type == "meta" and yb.device.type == "cpu" for xb, yb in batches)


# --------------------------------------------------------------- 7: pin per batch, not the set
class _ClaimsToBeHuge(np.ndarray):
    """A small array that reports the size of a set too big for the GPU."""

    @property
    def nbytes(self) -> int:  # type: ignore[override]
        return 3 * 1024**3


def _prepared(n: int = 50, *, huge: bool = False) -> PreparedData:
    rng = np.random.default_rng(0)
    # task2's layout: RGBA kept
    x = rng.integers(0, 256, (n, 4, 8, 8), dtype=np.uint8)
    return PreparedData(
        x_train=x[:40].view(_ClaimsToBeHuge) if huge else x[:40],
        y_train=np.arange(40) % 3,
        x_val=x[40:],
        y_val=np.arange(n - 40) % 3,
        class_names=["a", "b", "c"],
        preprocessing=Preprocessing(image_size=8, rgba="keep"),
        source_hash="test",
    )


def test_pin_memory_is_never_called_on_the_whole_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_cuda(monkeypatch, (8, 6))
    # 1 GiB free of 16: a 3 GiB set stays in host memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024**3, 16 * 1024**3))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    pinned_whole: list[tuple[int, ...]] = []

    def pin_spy(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        pinned_whole.append(tuple(self.shape))
        return self  # no driver here to page-lock with

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_spy)
    staged: list[tuple[tuple[int, ...], torch.dtype]] = []

    def staging(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        staged.append((tuple(shape), dtype))
        return torch.empty(shape, dtype=dtype)

    monkeypatch.setattr(loop_module, "_pinned_empty", staging, raising=False)
    data = _prepared(huge=True)
    cfg = preset_config("task2", {"optim.batch_size": 16, "data.image_size": 8})
    batches = engine._batches(cfg, data, 0, 1, CUDA, 0)
    assert batches.train.images.device.type == "cpu"
    assert not [s for s in pinned_whole if s[0] >= len(data.y_train)], pinned_whole
    # batches reach the GPU through batch-sized pinned blocks instead
    assert batches.train.pin_memory and batches.val.pin_memory
    got = list(batches.train)
    assert [len(x) for x, _ in got] == [16, 16, 8]
    assert {s[0] for s, _ in staged} <= {16, 8} and {d for _, d in staged} == {
        torch.uint8,
        torch.int64,
    }


def test_loader_pins_nothing_for_a_cpu_target() -> None:
    loader = ArrayLoader(torch.zeros(10, 1, 2, 2), torch.arange(10), 4)
    assert not loader.pin_memory
    assert all(not x.is_pinned() for x, _ in loader)


# --------------------------------------------------------------- 9: what fits on the GPU
def test_data_fits_by_free_memory_and_the_trials_gpu_share(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    free = {"bytes": 8 * 1024**3}

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        calls.append("mem_get_info")
        return free["bytes"], 16 * 1024**3

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    gib = 1024**3
    # a quarter of a 16 GiB GPU is 4 GiB; half of it for data
    assert data_fits_on_device(CUDA, int(1.5 * gib), gpu_share=0.25)
    assert not data_fits_on_device(CUDA, 3 * gib, gpu_share=0.25)
    assert data_fits_on_device(CUDA, 3 * gib, gpu_share=1.0)
    # memory other processes hold counts: only what is free now
    free["bytes"] = gib
    assert not data_fits_on_device(CUDA, gib, gpu_share=1.0)
    # what an earlier trial of this reused actor cached is handed back before measuring
    assert calls[:2] == ["empty_cache", "mem_get_info"]
    assert not data_fits_on_device(CPU, 1)


def test_fit_keeps_the_data_in_host_memory_when_the_gpu_has_no_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _mock_cuda(monkeypatch, (8, 6))
    # a few KiB of data, but the GPU is (nearly) full: a fixed size threshold would move it
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4096, 16 * 1024**3))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(
        loop_module, "_pinned_empty", lambda shape, dtype: torch.empty(shape, dtype=dtype)
    )
    cfg = preset_config("task2", {"optim.batch_size": 16, "data.image_size": 8})
    batches = engine._batches(cfg, _prepared(), 0, 1, CUDA, 0)
    assert batches.train.images.device.type == "cpu" and batches.train.pin_memory


def test_gpu_share_is_what_ray_assigned(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.devices import granted_gpu_share

    assigned: dict[str, float] = {"CPU": 1.0, "GPU": 0.25}
    fake = types.SimpleNamespace(
        is_initialized=lambda: True,
        get_runtime_context=lambda: types.SimpleNamespace(get_assigned_resources=lambda: assigned),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert granted_gpu_share() == 0.25
    assigned["GPU"] = 2.0
    assert granted_gpu_share() == 1.0
    monkeypatch.delitem(sys.modules, "ray")
    assert granted_gpu_share() == 1.0


# --------------------------------------------------------------- 8: batched augmentation
def _image(c: int = 3, size: int = 16, n: int = 4) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(1))


def _fixed(n: int, value: float) -> torch.Tensor:
    return torch.full((n,), value)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_by_quarter_turns_matches_rot90(k: int) -> None:
    x = _image()
    out = affine_batch(x, _fixed(4, 90.0 * k), torch.zeros(4, 2), _fixed(4, 1.0), torch.zeros(3))
    assert torch.allclose(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5)


def test_whole_pixel_shift_moves_the_image_and_fills_the_gap() -> None:
    x = _image(c=4)
    fill = torch.tensor([1.0, 0.5, 0.25, 0.0])
    shift = torch.tensor([[3.0, -2.0]]).repeat(4, 1)  # 3 right, 2 up
    out = affine_batch(x, _fixed(4, 0.0), shift, _fixed(4, 1.0), fill)
    assert torch.allclose(out[:, :, :-2, 3:], x[:, :, 2:, :-3], atol=1e-5)
    assert torch.allclose(out[:, :, :, :3], fill.view(1, 4, 1, 1).expand(4, 4, 16, 3))
    assert torch.allclose(out[:, :, -2:, :], fill.view(1, 4, 1, 1).expand(4, 4, 2, 16))


def test_affine_fill_is_per_channel_and_exact_outside_the_frame() -> None:
    x = _image(c=4)
    fill = torch.tensor([1.0, 0.5, 0.25, 0.0])
    # a 45° turn puts the corners' sources 1.4× the half-width from the centre: outside
    out = affine_batch(x, _fixed(4, 45.0), torch.zeros(4, 2), _fixed(4, 1.0), fill)
    for corner in (out[:, :, 0, 0], out[:, :, 0, -1], out[:, :, -1, 0], out[:, :, -1, -1]):
        assert torch.allclose(corner, fill.expand(4, 4), atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_keeps_shape_dtype_and_memory_format(
    channels_last: bool, dtype: torch.dtype
) -> None:
    x = _image(c=4, n=8).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cfg = AugmentConfig(
        hflip=0.5, vflip=0.5, rotation=20.0, translate=0.1, scale=0.1, color_jitter=0.3
    )
    out, y = BatchAugment(cfg, 9, fill=(1.0, 1.0, 1.0, 0.0))(x, torch.zeros(8, dtype=torch.long))
    assert out.shape == x.shape and out.dtype == dtype and y.dtype == torch.int64
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    assert out.min() >= 0 and out.max() <= 1


def test_affine_and_jitter_parameters_are_drawn_per_sample() -> None:
    torch.manual_seed(0)
    one = _image(n=1)
    x = one.repeat(32, 1, 1, 1)
    for cfg in (
        AugmentConfig(rotation=30.0),
        AugmentConfig(translate=0.2),
        AugmentConfig(scale=0.3),
        AugmentConfig(color_jitter=0.4),
    ):
        out, _ = BatchAugment(cfg, 9)(x, torch.zeros(32, dtype=torch.long))
        distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
        assert len(distinct) > 16, cfg  # one draw per batch would give 1
    out, _ = BatchAugment(AugmentConfig(vflip=0.5), 9)(x, torch.zeros(32, dtype=torch.long))
    flipped = sum(torch.equal(o, one[0].flip(-2)) for o in out)
    kept = sum(torch.equal(o, one[0]) for o in out)
    assert flipped + kept == 32 and 0 < flipped < 32


def test_batched_colour_jitter_matches_torchvision_per_image() -> None:
    from torchvision.transforms.v2 import functional as TF

    x = _image(n=6)
    factors = torch.tensor(
        [
            [0.7, 1.3, 1.1, 0.9, 1.2, 0.8],
            [1.2, 0.6, 0.9, 1.4, 1.0, 0.75],
            [0.5, 1.5, 1.0, 0.8, 1.3, 0.6],
        ]
    )
    orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
    out = color_jitter_batch(x, factors, torch.tensor(orders))
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for i, order in enumerate(orders):
        ref = x[i]
        for op in order:
            ref = ops[op](ref, float(factors[op, i]))
        assert torch.allclose(out[i], ref, atol=1e-5), i


# --------------------------------------------------------------- 10: bench gpu compares like with like
class _Resident(nn.Module):
    """A model that stays put when moved (there is no CUDA here to move it to)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def to(self, *args: Any, **kwargs: Any) -> _Resident:  # type: ignore[override]
        return self


@pytest.mark.parametrize(
    ("capability", "dtype"), [((8, 6), torch.bfloat16), ((7, 5), torch.float16)]
)
def test_bench_gpu_plain_and_fit_arms_share_amp_and_memory_format(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype
) -> None:
    from bench import gpu

    _mock_cuda(monkeypatch, capability)
    cfg = preset_config("task2", {"optim.amp": True})
    plain = gpu.plain_kernels(cfg, CUDA)
    # the fit arm: what _build sets up and train_one_epoch's autocast runs on this device
    monkeypatch.setattr(engine, "build_model_for", lambda cfg, n: _Resident())
    run = engine._build(cfg, _prepared(), CUDA)
    autocast, _ = autocast_for(CUDA, cfg.optim.amp)
    assert isinstance(autocast, torch.autocast)
    assert plain.amp_dtype == autocast.fast_dtype == dtype
    assert plain.channels_last is run.channels_last is True
    assert plain.needs_scaler is (run.scaler is not None) is (dtype == torch.float16)
    assert plain == kernels_for(CUDA, amp=True, model_name=cfg.model.name)
    # and off the GPU both arms are fp32 NCHW
    cpu = gpu.plain_kernels(cfg, CPU)
    assert cpu.amp_dtype is None and not cpu.channels_last


def test_bench_gpu_plain_arm_runs(tmp_path: Path) -> None:
    cfg = preset_config(
        "task2",
        {
            "optim.epochs": 2,
            "data.image_size": 8,
            "model.stages": 2,
            "model.channels": 4,
            "optim.batch_size": 16,
        },
    )
    data = _prepared()
    from bench import gpu

    measured = gpu.plain_matched(cfg, data, CPU)
    assert len(measured.images_per_s) == 2 and all(r > 0 for r in measured.images_per_s)
    row = measured.row(None)
    assert row["startup_s"] >= 0 and row["img_per_s"] > 0


@pytest.mark.parametrize(("n", "batch", "world"), [(50, 7, 1), (99, 7, 2), (33, 16, 2), (17, 8, 1), (16, 8, 1)])
def test_a_last_batch_of_one_image_is_dropped_for_training(n: int, batch: int, world: int) -> None:
    """BatchNorm cannot train on one image ("Expected more than 1 value per channel"): the
    training loader drops such a last batch, on every rank alike (their shards are equal)."""
    from training.loop import ArrayLoader

    sizes = []
    for rank in range(world):
        loader = ArrayLoader(torch.zeros(n, 1), torch.arange(n), batch, None, rank, world, min_batch=2)
        got = [len(y) for _, y in loader]
        assert len(got) == len(loader) and all(s >= 2 for s in got)
        sizes.append(got)
    assert all(s == sizes[0] for s in sizes)  # the same steps on every rank
    per_rank = -(-n // world)
    assert sum(sizes[0]) == per_rank - (1 if per_rank % batch == 1 else 0)
