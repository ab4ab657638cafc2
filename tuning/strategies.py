"""Search strategies a sweep can use: Optuna samplers (behind Tune's ``OptunaSearch``) and
Tune trial schedulers, by name (``tune --search NAME --scheduler NAME``, or ``search:`` /
``scheduler:`` in a space, with the strategy's own options).

The registries are light (no Ray or Optuna import until a factory runs), so the space loader
checks names and options at load time.

What the samplers do with this project's spaces (categorical choices, ``when:`` conditionals):

* ``tpe`` (default): Optuna's TPE; categorical and conditional parameters are native.
* ``random``: the same define-by-run space drawn uniformly: the fair baseline.
* ``cmaes``: CMA-ES over the numeric parameters; Optuna samples categorical and conditional
  parameters with its independent (random) sampler, so it pays off on mostly-numeric spaces.
* ``qmc``: a scrambled Sobol sequence: even coverage of the numeric ranges; categorical and
  conditional parameters are sampled independently (at random).
* ``gp``: Gaussian-process Bayesian optimisation (Optuna's ``GPSampler``); handles categoricals,
  conditionals fall back to independent sampling; costs more per proposal, fine for sweeps of
  tens of trials.

Schedulers (``epoch`` is their clock: fit's own count):

* ``asha`` (default): asynchronous successive halving with the space's ``asha:`` block.
* (no ``hyperband``: Ray's synchronous ``HyperBandScheduler`` pauses trials until their
  bracket fills; with a searcher proposing one trial at a time, a sample count below the
  bracket size or a time budget, a tiny sweep here ended with two of four trials still paused
  at ``max_t`` and never reported to Optuna. ``asha`` is its asynchronous form.)
* ``median``: the median stopping rule (stop a trial below the median of the others at the
  same epoch), after ``grace_period`` epochs.
* ``fifo``: every trial runs to ``max_epochs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.errors import PoketuneError
from training.registry import Registry

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler
    from ray.tune.schedulers import TrialScheduler

    from tuning.space import SearchSpace

__all__ = ["SAMPLERS", "SCHEDULERS", "Strategy", "StrategyError", "check_options"]


class StrategyError(PoketuneError, ValueError):
    """An unknown strategy option (the message lists the valid ones); ``option`` names it."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Strategy:
    """A named factory and the keyword options it accepts from a space."""

    build: Callable[..., Any]
    #: the options a space may give (keyword → what it is), passed to the factory
    options: tuple[str, ...] = ()


def check_options(kind: str, name: str, strategy: Strategy, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(strategy.options))
    if unknown:
        valid = ", ".join(strategy.options) or "none"
        raise StrategyError(f"{kind} {name!r} has no option {unknown[0]!r}; its options: {valid}", unknown[0])


# ---------------------------------------------------------------------------------- samplers
#: ``build(seed, samples, **options) -> optuna sampler``
SAMPLERS: Registry[Strategy] = Registry("search algorithm")


def _tpe(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import TPESampler

    # a third of a counted sweep explores at random (3..10 trials); a budget-only sweep, 10
    startup = max(3, min(10, samples // 3)) if samples else 10
    return TPESampler(seed=seed, **{"n_startup_trials": startup, **options})


def _random(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed)


def _cmaes(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import CmaEsSampler

    # categorical/conditional parameters go to the independent sampler: say nothing per trial
    return CmaEsSampler(seed=seed, **{"warn_independent_sampling": False, **options})


def _qmc(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import QMCSampler

    return QMCSampler(seed=seed, **{"scramble": True, "warn_independent_sampling": False, **options})


def _gp(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import GPSampler

    return GPSampler(seed=seed, **{"warn_independent_sampling": False, **options})


SAMPLERS.register("tpe")(Strategy(_tpe, ("n_startup_trials", "multivariate", "group", "constant_liar")))
SAMPLERS.register("random")(Strategy(_random))
SAMPLERS.register("cmaes")(Strategy(_cmaes, ("n_startup_trials", "sigma0", "restart_strategy")))
SAMPLERS.register("qmc")(Strategy(_qmc, ("qmc_type", "scramble")))
SAMPLERS.register("gp")(Strategy(_gp, ("n_startup_trials", "deterministic_objective")))


# ---------------------------------------------------------------------------------- schedulers
#: ``build(space, **options) -> Tune trial scheduler``
SCHEDULERS: Registry[Strategy] = Registry("scheduler")


def _asha(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import ASHAScheduler

    # fit's own epoch count, not Tune's: a retried TorchTrainer trial resumes its run's
    # checkpoint but restarts Tune's training_iteration at 1
    return ASHAScheduler(
        time_attr="epoch", max_t=space.max_epochs, grace_period=space.grace_period,
        reduction_factor=space.reduction_factor, **options,
    )  # fmt: skip


def _median(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="epoch", **{"grace_period": space.grace_period, **options})


def _fifo(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


SCHEDULERS.register("asha")(Strategy(_asha, ("brackets", "stop_last_trials")))
SCHEDULERS.register("median")(Strategy(_median, ("grace_period", "min_samples_required", "min_time_slice", "hard_stop")))
SCHEDULERS.register("fifo")(Strategy(_fifo))

