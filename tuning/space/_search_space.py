"""A loaded, validated search space: what Optuna samples and how it becomes a TrainConfig."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from training.config import TrainConfig
from training.tasks import preset_config
from tuning.space._param import Param, choice_label

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace"]


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (build it with :func:`tuning.space.load_space`).

    ``params`` is in dependency order: a conditional parameter comes after every
    parameter its ``when`` tests, so suggesting in dict order is always possible.
    ``fixed`` holds the fixed values from both ``fixed:`` and bare values under ``params:``.
    """

    path: Path | None
    task: str
    metric: str
    mode: str
    max_epochs: int
    grace_period: int
    reduction_factor: int | float
    fixed: dict[str, Any]
    params: dict[str, Param]
    #: ``search:`` / ``scheduler:`` (tuning.strategies names; None: the defaults) and options
    search: str | None = None
    search_options: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    #: ``cv: K``: every trial trains K stratified folds (``tune --cv K``); None: one split
    cv: int | None = None
    #: ``objectives:`` (metric, mode) pairs, the first being ``metric``/``mode``; empty: one
    objectives: list[tuple[str, str]] = field(default_factory=list)
    #: ``enqueue:`` the space's known-good configs as points in Optuna's terms (each searched
    #: key, the preset's value where the config left it out), evaluated after the preset trial
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cost_objectives(self) -> list[str]:
        """The model-cost metrics among the objectives (trials then measure their cost)."""
        from training.metrics import COST_METRICS

        return [m for m, _ in self.objectives if m in COST_METRICS]

    # ------------------------------------------------------------------ sampling
    def is_active(self, param: Param, values: dict[str, Any]) -> bool:
        """Whether ``param`` exists given the (decoded) values chosen so far.

        A parameter whose condition tests an inactive parameter is inactive too.
        """
        for parent, allowed in param.when.items():
            value = self.fixed[parent] if parent in self.fixed else values.get(parent, _ABSENT)
            if value is _ABSENT or value not in allowed:
                return False
        return True

    def active_values(self, config: dict[str, Any]) -> dict[str, Any]:
        """The searched parameters a trial's full ``config`` really had (conditionals whose
        condition failed are left out), decoded."""
        values = self.decode({k: v for k, v in config.items() if k in self.params})
        return {
            name: values[name]
            for name, param in self.params.items()
            if name in values and self.is_active(param, values)
        }

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Ask ``trial`` for every active parameter; returns the decoded sampled values only.

        Conditional parameters whose condition does not hold are never suggested, so
        Optuna's trial only records parameters that exist.
        """
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if self.is_active(param, values):
                values[name] = param.suggest(trial)
        return values

    def define_by_run(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """The define-by-run function for Ray Tune's ``OptunaSearch(space=...)``.

        Ray records each ``suggest_*`` result under its name, then merges this function's
        return value (a dict of constants) over them. So the return value is the trial's
        *whole* flat config — :meth:`base_config` plus the decoded sampled values — and the
        decoded value of a list choice replaces Optuna's string label in Ray's config.
        ``TrainConfig.from_flat`` of Ray's config therefore equals :meth:`trial_config`.
        """
        return {**self.base_config(), **self.suggest(trial)}

    def preset_point(self) -> tuple[dict[str, Any], list[str]]:
        """The task preset as a point of this space, in Optuna's terms, to evaluate first.

        Each searched parameter takes the preset's value (with the space's fixed values and
        epochs applied). A value outside a range is clamped into it (TPE models the range it
        was given), and a choice that does not offer the preset's value is left to the
        sampler; both are named in the second list. Conditionals follow the preset's values,
        so the point is a consistent trial.
        """
        preset = preset_config(self.task, self._shared()).to_flat()
        point: dict[str, Any] = {}
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, param in self.params.items():
            if not self.is_active(param, values):
                continue
            value = preset[name]
            if param.is_choice:
                if value not in param.args:
                    missing.append(name)
                    continue
                point[name] = choice_label(value)
            else:
                if isinstance(value, list):  # a list key searched as one value for all
                    if len(set(value)) != 1:
                        missing.append(name)
                        continue
                    value = value[0]
                low, high = param.args
                clamped = min(max(value, low), high)
                if param.kind == "int":
                    step = int(param.step or 1)
                    clamped = int(low + round((clamped - low) / step) * step)
                if clamped != value:
                    missing.append(f"{name} (preset {value}, clamped to {clamped})")
                value = point[name] = clamped
            values[name] = value
        return point, missing

    # ------------------------------------------------------------------ configs
    def base_config(self, extra_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The flat dotted config every trial shares: the full preset with the fixed values,
        ``optim.epochs = max_epochs`` and ``extra_overrides`` (e.g. CLI ``--set``) applied.

        It spells out every key (not only the overrides) so a stored trial config still
        means the same thing after a preset changes.
        """
        overrides = {**self._shared(), **(extra_overrides or {})}
        return preset_config(self.task, overrides).to_flat()

    def trial_config(self, sampled: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of a trial from its sampled values (labels or decoded values;
        a whole :meth:`define_by_run` result works too)."""
        return preset_config(self.task, {**self._shared(), **self.decode(sampled)})

    def decode(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Optuna labels → config values (``"[256,128]"`` → ``[256, 128]``); other keys pass."""
        return {
            key: self.params[key].decode(value) if key in self.params else value
            for key, value in sampled.items()
        }

    def _shared(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.fixed), "optim.epochs": self.max_epochs}

    # ------------------------------------------------------------------ storing
    def to_dict(self) -> dict[str, Any]:
        """The YAML document form; ``parse_space(space.to_dict())`` rebuilds the space.

        Fixed values written as bare values under ``params`` come back under ``fixed``.
        """
        doc: dict[str, Any] = {"task": self.task}
        if self.objectives:
            doc["objectives"] = [{"metric": m, "mode": mode} for m, mode in self.objectives]
        else:
            doc.update(metric=self.metric, mode=self.mode)
        doc["asha"] = {
            "max_epochs": self.max_epochs,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
        }
        if self.cv:
            doc["cv"] = self.cv
        doc["fixed"] = copy.deepcopy(self.fixed)
        doc["params"] = {name: p.to_dict() for name, p in self.params.items()}
        if self.enqueue:
            doc["enqueue"] = [self.decode(point) for point in self.enqueue]
        return doc

    def to_yaml(self) -> str:
        header = f"# search space loaded from {self.path}\n" if self.path else ""
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
