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
* ``nsga2``: Optuna's NSGA-II, a genetic algorithm for several objectives (``objectives:``);
  TPE searches several objectives too (its multi-objective mode), so ``tpe`` stays the default.
* ``gp``: Gaussian-process Bayesian optimisation (Optuna's ``GPSampler``); handles categoricals,
  conditionals fall back to independent sampling; costs more per proposal, fine for sweeps of
  tens of trials.

Schedulers (``epoch`` is their clock: fit's own count):

* ``asha`` (default): asynchronous successive halving with the space's ``asha:`` block.
  ``prune_on: best`` compares trials at a rung by their best epoch so far instead of the
  epoch that reached it (:mod:`tuning._tune_asha`): for curves that jump between epochs.
  ``spare: enqueued`` never stops the space's own ``enqueue:`` configs at a rung (the budget
  still does): known-good configs that start slowly.
* (no ``hyperband``: Ray's synchronous ``HyperBandScheduler`` pauses trials until their
  bracket fills; with a searcher proposing one trial at a time, a sample count below the
  bracket size or a time budget, a tiny sweep here ended with two of four trials still paused
  at ``max_t`` and never reported to Optuna. ``asha`` is its asynchronous form.)
* ``median``: the median stopping rule (stop a trial below the median of the others at the
  same epoch), after ``grace_period`` epochs.
* ``fifo``: every trial runs to ``max_epochs``.
* ``pbt``: population-based training (Ray's ``PopulationBasedTraining``). Ray refuses a
  searcher beside it, so the space's distributions become Tune's ``param_space`` (sampled
  once per member of the population, ``--samples``, default 4) and PBT's mutations. Every
  ``perturbation_interval`` epochs (default: the space's ``grace_period``) a trial in the
  bottom ``quantile_fraction`` copies a top trial's weights and state and goes on with its
  hyperparameters perturbed (×1.2 / ×0.8, or resampled). Only what a copied checkpoint can
  take is mutated (:func:`pbt_mutations`: learning rates, weight decay, label smoothing,
  momentum, dropout, augmentation strengths, focal γ; not the model's shape, optimizer or
  scheduler); ``mutate: [keys]`` picks some of them. Conditional (``when:``) parameters are
  sampled for every member and take effect only while their condition holds, as in any
  config. The preset trial, ``--enqueue`` and ``--warm-start`` are Optuna's, so they do not
  apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from training.errors import PoketuneError
from training.registry import Registry

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler
    from ray.tune.schedulers import TrialScheduler

    from tuning.space import SearchSpace

__all__ = ["MUTABLE", "SAMPLERS", "SCHEDULERS", "Strategy", "StrategyError", "check_options", "pbt_mutations"]


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
    #: False: the scheduler samples its own configs (PBT): no Optuna searcher beside it
    searcher: bool = True
    #: the options the factory consumes itself (poketune's, not the library object's)
    own: tuple[str, ...] = ()
    #: options whose value is one of a few names (checked when the space loads)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


def check_options(kind: str, name: str, strategy: Strategy, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(strategy.options))
    if unknown:
        valid = ", ".join(strategy.options) or "none"
        raise StrategyError(f"{kind} {name!r} has no option {unknown[0]!r}; its options: {valid}", unknown[0])
    for option, valid_values in strategy.choices.items():
        if option in options and options[option] not in valid_values:
            raise StrategyError(
                f"{kind} {name!r}: {option} {options[option]!r}; valid: {', '.join(valid_values)}", option
            )


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


def _nsga2(seed: int, samples: int | None, **options: Any) -> BaseSampler:
    from optuna.samplers import NSGAIISampler

    return NSGAIISampler(seed=seed, **options)


SAMPLERS.register("tpe")(Strategy(_tpe, ("n_startup_trials", "multivariate", "group", "constant_liar")))
SAMPLERS.register("random")(Strategy(_random))
SAMPLERS.register("cmaes")(Strategy(_cmaes, ("n_startup_trials", "sigma0", "restart_strategy")))
SAMPLERS.register("qmc")(Strategy(_qmc, ("qmc_type", "scramble")))
SAMPLERS.register("gp")(Strategy(_gp, ("n_startup_trials", "deterministic_objective")))
SAMPLERS.register("nsga2")(Strategy(_nsga2, ("population_size", "mutation_prob", "crossover_prob", "swapping_prob")))


# ---------------------------------------------------------------------------------- schedulers
#: ``build(space, **options) -> Tune trial scheduler``
SCHEDULERS: Registry[Strategy] = Registry("scheduler")


#: what ASHA compares at a rung: the epoch that reached it, or the trial's best so far
PRUNE_ON = ("last", "best")


#: which trials ASHA never stops at a rung: none, or the space's own ``enqueue:`` configs
SPARE = ("none", "enqueued")


def _asha(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import ASHAScheduler

    from tuning._tune_asha import PoketuneASHA

    best_so_far = options.pop("prune_on", "last") == "best"
    spared = space.enqueue if options.pop("spare", "none") == "enqueued" else []
    # fit's own epoch count, not Tune's: a retried TorchTrainer trial resumes its run's
    # checkpoint but restarts Tune's training_iteration at 1
    common = {"time_attr": "epoch", "max_t": space.max_epochs, "grace_period": space.grace_period,
              "reduction_factor": space.reduction_factor, **options}  # fmt: skip
    if best_so_far or spared:
        return PoketuneASHA(best_so_far=best_so_far, spared=spared, **common)
    return ASHAScheduler(**common)


def _median(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="epoch", **{"grace_period": space.grace_period, **options})


def _fifo(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


#: what a trial can change when it takes another trial's checkpoint: values read afresh from
#: the config (or applied to the restored optimizer, the learning rates and weight decay),
#: none of which changes a weight's shape or the optimizer's or scheduler's state layout
MUTABLE = (
    "optim.lr", "optim.finetune_lr", "optim.weight_decay", "optim.momentum", "optim.label_smoothing",
    "loss.focal_gamma", "model.dropout", "model.head_dropout", "augment.",
)  # fmt: skip


def _mutable(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MUTABLE)


def pbt_mutations(space: SearchSpace, mutate: list[str] | None = None) -> dict[str, Any]:
    """``hyperparam_mutations`` for PBT: the searched parameters it may perturb, as Tune
    domains (by default every searched one a copied checkpoint can take)."""
    keys = list(mutate) if mutate is not None else [k for k in space.params if _mutable(k)]
    bad = [k for k in keys if k not in space.params or not _mutable(k)]
    if bad:
        able = ", ".join(k for k in space.params if _mutable(k)) or "none"
        raise StrategyError(
            f"pbt cannot mutate {bad[0]!r}: a trial that copies another's checkpoint can only "
            f"change searched {', '.join(MUTABLE)}*; this space's: {able}",
            "mutate",
        )
    if not keys:
        raise StrategyError(
            f"pbt needs a searched parameter it can mutate ({', '.join(MUTABLE)}*); "
            f"{space.path or 'the space'} searches none",
            "mutate",
        )
    return {k: space.params[k].tune_domain() for k in keys}


def _pbt(space: SearchSpace, **options: Any) -> TrialScheduler:
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = pbt_mutations(space, options.pop("mutate", None))
    options.pop("population", None)  # the sweep's trial count, not the scheduler's
    options.setdefault("perturbation_interval", space.grace_period)
    if "perturbation_factors" in options:
        options["perturbation_factors"] = tuple(options["perturbation_factors"])
    # fit's own epoch is the clock: a trial that copied another's checkpoint at epoch e
    # continues at e + 1, and PBT compares trials at equal epochs
    return PopulationBasedTraining(time_attr="epoch", hyperparam_mutations=mutations, **options)


SCHEDULERS.register("asha")(
    Strategy(_asha, ("brackets", "stop_last_trials", "prune_on", "spare"), own=("prune_on", "spare"),
             choices={"prune_on": PRUNE_ON, "spare": SPARE})
)
SCHEDULERS.register("median")(Strategy(_median, ("grace_period", "min_samples_required", "min_time_slice", "hard_stop")))
SCHEDULERS.register("fifo")(Strategy(_fifo))
SCHEDULERS.register("pbt")(
    Strategy(
        _pbt,
        ("perturbation_interval", "burn_in_period", "quantile_fraction", "resample_probability",
         "perturbation_factors", "synch", "mutate", "population"),
        searcher=False,
        own=("mutate", "population"),
    )
)  # fmt: skip

