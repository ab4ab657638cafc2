"""What a model costs at inference: parameters, FLOPs per image, and latency by one fixed
protocol, so trials of one sweep can be compared on accuracy against cost.

The protocol (:data:`LATENCY_PROTOCOL`): a CPU copy of the model in eval mode, one torch
thread, no autograd; ``warmup`` untimed calls, then the median of ``repeats`` timed calls,
at batch 1 and at the evaluation batch size (per image). One thread, because latency
measured with the threads a trial shares with its neighbours says more about the neighbours
than the model; the median, because on a shared machine a few calls are always slowed. It
is still a measurement next to training neighbours: ``poketune results NAME --pareto``
times the front's models again by the same protocol, in its own process once the sweep is
over, and shows both (``latency_ms``, ``driver_latency_ms``). A trial measures its model
before training (latency and FLOPs depend on the architecture, not the weights), so even a
trial ASHA stops early tells Optuna its cost.

FLOPs come from torch's own :class:`~torch.utils.flop_counter.FlopCounterMode` (a
multiply-add counts 2), for one image at the trained size.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.metrics import COST_METRICS

__all__ = ["COST_METRICS", "LATENCY_PROTOCOL", "ModelCost", "measure_cost"]

LATENCY_PROTOCOL = (
    "CPU, one thread, eval mode, no grad; 3 warm-up calls, then the median of 20 timed calls "
    "at batch 1 and of 5 at the eval batch (per image)"
)


@dataclass(frozen=True)
class ModelCost:
    params: int
    flops_per_image: float
    latency_ms: float  # batch 1, median
    latency_batch_ms: float  # per image at the eval batch size, median

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _median_ms(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


@torch.no_grad()
def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    eval_batch: int = 64,
    warmup: int = 3,
    repeats: int = 20,
    batch_repeats: int = 5,
) -> ModelCost:
    """``model``'s cost for C×H×W ``input_shape`` images (the model itself is not changed)."""
    from torch.utils.flop_counter import FlopCounterMode

    cpu = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    one = torch.zeros(1, *input_shape)
    batch = torch.zeros(eval_batch, *input_shape)
    with FlopCounterMode(display=False) as counter:
        cpu(one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            cpu(one)
        latency = _median_ms(lambda: cpu(one), repeats)
        cpu(batch)
        per_image = _median_ms(lambda: cpu(batch), batch_repeats) / eval_batch
    finally:
        torch.set_num_threads(threads)
    return ModelCost(
        params=sum(p.numel() for p in cpu.parameters()),
        flops_per_image=float(counter.get_total_flops()),
        latency_ms=latency,
        latency_batch_ms=per_image,
    )
