"""Device ownership (issue 14 items 1, 2, 5): the device follows what Ray granted, a granted
GPU that cannot start is one line, data-parallel ranks never share a GPU, and a resumed fused
optimizer's state takes its parameters' memory format. All on CPU."""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from training.devices import DeviceError, training_device


def _fake_ray(monkeypatch: pytest.MonkeyPatch, gpu_ids: list[int]) -> None:
    fake = types.SimpleNamespace(is_initialized=lambda: True, get_gpu_ids=lambda: gpu_ids)
    monkeypatch.setitem(sys.modules, "ray", fake)


def test_a_trial_granted_no_gpu_trains_on_cpu_even_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    _fake_ray(monkeypatch, [])
    assert training_device() == torch.device("cpu")
    # the engine's default device is this one
    from training import engine

    assert engine._device() == torch.device("cpu")


def test_a_granted_gpu_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    _fake_ray(monkeypatch, [3])
    assert training_device() == torch.device("cuda", 0)  # Ray made GPU 3 the only visible one


def test_a_granted_gpu_cuda_cannot_start_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040)")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", broken)
    _fake_ray(monkeypatch, [0])
    with pytest.raises(DeviceError) as err:
        training_device()
    assert "\n" not in str(err.value) and "granted GPU [0]" in str(err.value) and "too old" in str(err.value)


def test_outside_ray_a_visible_gpu_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device() == torch.device("cpu")


def test_data_parallel_ranks_may_not_share_a_gpu(task2_data: Path, tmp_path: Path) -> None:
    import ray

    from training.config import ConfigError
    from tuning.sweep import SweepOptions, run_sweep

    opts = SweepOptions(space="search_spaces/task2_cnn.yaml", data=str(task2_data), samples=1,
                        storage=str(tmp_path), workers_per_trial=2, gpus_per_trial=0.5)
    with pytest.raises(ConfigError, match="whole GPU each"):
        run_sweep(opts)
    assert not ray.is_initialized() and not any(tmp_path.iterdir())  # refused before Ray


def test_fused_adam_restored_into_channels_last_matches_unfused() -> None:
    """A state saved from an NCHW model, restored into a channels_last one (a CPU trial resumed
    on a GPU), then stepped with fused Adam, equals unfused Adam stepping the same state."""
    from training.engine import _match_state_layout

    torch.manual_seed(0)
    nchw = nn.Conv2d(3, 8, 3)
    opt = torch.optim.Adam(nchw.parameters(), lr=0.1)
    for _ in range(2):  # build a real state: non-trivial moments
        opt.zero_grad()
        nchw(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
    saved_state, saved_weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(nchw.state_dict())

    def resumed(fused: bool, channels_last: bool) -> nn.Conv2d:
        model = nn.Conv2d(3, 8, 3)
        model.load_state_dict(saved_weights)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        o = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
        o.load_state_dict(copy.deepcopy(saved_state))
        _match_state_layout(o)
        torch.manual_seed(1)
        for _ in range(3):
            o.zero_grad()
            x = torch.randn(2, 3, 8, 8)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            model(x).square().mean().backward()
            o.step()
        return model

    reference = resumed(fused=False, channels_last=False)
    fused = resumed(fused=True, channels_last=True)
    torch.testing.assert_close(fused.weight, reference.weight, rtol=1e-5, atol=1e-6)


def test_restored_optimizer_state_has_its_parameters_strides(
    task2_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism the fused CUDA kernels need (multi-tensor apply walks raw storage): after
    a resume every per-parameter state tensor is laid out like its parameter. (On CPU, torch
    2.14's fused Adam happens to handle mixed strides, so the numeric test above cannot tell.)"""
    from training import engine
    from training.engine import LocalReporter, fit, prepare_data
    from training.tasks import preset_config

    cfg = preset_config("task2", {"data.image_size": 32, "model.channels": 8, "model.stages": 2,
                                  "optim.epochs": 2, "num_threads": 1, "checkpoint_every_s": 0})
    data, _ = prepare_data(task2_data, cfg)
    first = LocalReporter()
    fit(cfg.replace(**{"optim.epochs": 1}), data, first)
    assert first.last_checkpoint is not None

    seen: list[torch.optim.Optimizer] = []
    real_build = engine._build

    def channels_last_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real_build(*args, **kwargs)
        run.model.to(memory_format=torch.channels_last)  # as on a GPU
        return run

    real_match = engine._match_state_layout

    def spy(optimizer: torch.optim.Optimizer) -> None:
        real_match(optimizer)
        seen.append(optimizer)

    monkeypatch.setattr(engine, "_build", channels_last_build)
    monkeypatch.setattr(engine, "_match_state_layout", spy)
    fit(cfg, data, LocalReporter(resume_from=first.last_checkpoint))
    (opt,) = seen
    four_d = [p for g in opt.param_groups for p in g["params"] if p.ndim == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    # the first step after the restore ran with matching layouts
    for p in four_d:
        for value in opt.state[p].values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                assert value.stride() == p.stride()


def test_a_finished_fit_releases_cached_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reused trial actors must not keep the previous trial's CUDA cache."""
    from training import devices

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    devices.release_device_memory(torch.device("cpu"))
    assert calls == []
    devices.release_device_memory(torch.device("cuda", 0))
    assert calls == ["empty"]


def test_fit_ends_by_releasing_its_device(task2_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import engine
    from training.engine import LocalReporter, fit, prepare_data
    from training.tasks import preset_config

    released: list[torch.device] = []
    monkeypatch.setattr(engine, "release_device_memory", released.append)
    cfg = preset_config("task2", {"data.image_size": 32, "model.channels": 8, "model.stages": 2,
                                  "optim.epochs": 1, "num_threads": 1})
    data, _ = prepare_data(task2_data, cfg)
    fit(cfg, data, LocalReporter(), device=torch.device("cpu"))
    assert released == [torch.device("cpu")]
