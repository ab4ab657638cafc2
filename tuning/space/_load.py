"""Loading and validating a search-space document (see ``search_spaces/README.md``)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, NoReturn

from training.config import ConfigError, TrainConfig, flat_keys, unknown_name
from training.metrics import METRIC_MODES as ALL_METRIC_MODES
from training.tasks import TASKS, preset_config
from tuning.space._distributions import DISTRIBUTIONS
from tuning.space._errors import Invalid, KeyPath, Locator
from tuning.space._param import Param
from tuning.space._points import points_of
from tuning.space._search_space import SearchSpace
from tuning.space._yaml import read_yaml

__all__ = ["METRIC_MODES", "load_space", "parse_space"]

TOP_KEYS = ("task", "metric", "mode", "objectives", "asha", "search", "scheduler", "cv", "fixed", "params", "enqueue")
#: metric → the only sensible mode (also the default mode)
#: the metrics a sweep can rank by (train_loss says nothing about generalisation)
METRIC_MODES = {k: v for k, v in ALL_METRIC_MODES.items() if k.startswith("val_")}
ASHA_KEYS = ("max_epochs", "grace_period", "reduction_factor")
ASHA_DEFAULTS: dict[str, int] = {"grace_period": 1, "reduction_factor": 3}
#: config keys a space may not set, and why
RESERVED = {
    "task": "the preset is chosen by the top-level `task:`",
    "optim.epochs": "the epoch budget is asha.max_epochs",
}
#: why no ``data.*`` key and no ``seed`` may be searched (``tuning/sweep.py``)
SHARED_REASON = (
    "every trial of a sweep shares the data that the driver decodes, filters, splits and "
    "normalises once, so a searched value would be ignored while the checkpoint records it"
)
#: keys that may sit next to the distribution name
_DIST_EXTRAS = frozenset({"when", "step", "log"})


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file.

    Raises :class:`SpaceError` naming the file, line and key path of the first problem.
    """
    path = Path(path)
    data, locator = read_yaml(path)
    return _Parser(locator).parse(data, path)


def parse_space(data: Any, *, source: str = "<search space>") -> SearchSpace:
    """Validate an already-parsed document (e.g. :meth:`SearchSpace.to_dict` read back)."""
    return _Parser(Locator(source)).parse(data, None)


class _Parser:
    def __init__(self, locator: Locator) -> None:
        self.loc = locator
        self.keys = flat_keys()
        #: config key → where the space sets it (for errors)
        self.where: dict[str, KeyPath] = {}

    def fail(self, path: KeyPath, message: str) -> NoReturn:
        raise self.loc.error(path, message)

    # ------------------------------------------------------------------ document
    def parse(self, data: Any, path: Path | None) -> SearchSpace:
        if not isinstance(data, dict):
            self.fail((), f"a search space is a mapping with keys {', '.join(TOP_KEYS)}")
        for key in data:
            if key not in TOP_KEYS:
                self.fail((key,), f"unknown top-level key; allowed: {', '.join(TOP_KEYS)}")
        task = self._task(data.get("task"))
        metric, mode = self._objective(data)
        objectives = self._objectives(data.get("objectives"), data)
        if objectives:
            metric, mode = objectives[0]
        max_epochs, grace_period, reduction_factor = self._asha(data.get("asha"))
        fixed = self._fixed(data.get("fixed"))
        params = self._params(data.get("params"), fixed)
        search, search_options = self._strategy("search", data.get("search"))
        scheduler, scheduler_options = self._strategy("scheduler", data.get("scheduler"))
        cv = data.get("cv")
        if cv is not None and (not _is_int(cv) or cv < 2):
            self.fail(("cv",), f"the number of cross-validation folds: an integer >= 2, got {cv!r}")
        self._check_values(task, max_epochs, fixed, params)
        self._check_conditions(fixed, params)
        space = SearchSpace(
            path=path,
            task=task,
            metric=metric,
            mode=mode,
            max_epochs=max_epochs,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            fixed=fixed,
            params={name: params[name] for name in self._dependency_order(params)},
            search=search,
            search_options=search_options,
            scheduler=scheduler,
            scheduler_options=scheduler_options,
            cv=cv,
            objectives=objectives,
        )
        if data.get("enqueue") is None:
            return space
        # checked like ``tune --enqueue``'s file, against the finished space (its conditions
        # and the preset's values for what a config leaves out)
        return dataclasses.replace(space, enqueue=points_of(data["enqueue"], space, self.loc, ("enqueue",)))

    def _strategy(self, key: str, spec: Any) -> tuple[str | None, dict[str, Any]]:
        """``search: NAME`` or ``search: {name: NAME, OPTION: VALUE, ...}`` (same for scheduler)."""
        from tuning.strategies import SAMPLERS, SCHEDULERS, StrategyError, check_options

        if spec is None:
            return None, {}
        registry = SAMPLERS if key == "search" else SCHEDULERS
        options: dict[str, Any] = {}
        if isinstance(spec, dict):
            if "name" not in spec:
                self.fail((key,), f"a mapping needs `name:` (one of {', '.join(registry.names())})")
            options = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
            path: KeyPath = (key, "name")
        else:
            name, path = spec, (key,)
        if not isinstance(name, str) or name not in registry:
            self.fail(path, f"unknown {registry.kind} {name!r}; valid: {', '.join(registry.names())}")
        try:
            check_options(registry.kind, name, registry.get(name), options)
        except StrategyError as exc:
            self.fail((key, exc.option), str(exc))
        return name, options

    def _task(self, task: Any) -> str:
        if task is None:
            self.fail((), f"missing `task:` (a preset: {', '.join(TASKS.names())})")
        if not isinstance(task, str) or task not in TASKS:
            self.fail(("task",), f"unknown task preset {task!r}; valid: {', '.join(TASKS.names())}")
        return task

    def _objective(self, data: dict[str, Any]) -> tuple[str, str]:
        metric = data.get("metric", "val_f1")
        if metric not in METRIC_MODES:
            self.fail(("metric",), f"unknown metric {metric!r}; valid: {', '.join(METRIC_MODES)}")
        mode = data.get("mode", METRIC_MODES[metric])
        if mode not in ("max", "min"):
            self.fail(("mode",), f"mode must be max or min, got {mode!r}")
        if mode != METRIC_MODES[metric]:
            self.fail(
                ("mode",),
                f"{metric} is {METRIC_MODES[metric]}imized; mode: {mode} would rank the worst "
                f"trials first (use mode: {METRIC_MODES[metric]} or leave it out)",
            )
        return metric, mode

    def _objectives(self, spec: Any, data: dict[str, Any]) -> list[tuple[str, str]]:
        """``objectives: [{metric: val_f1, mode: max}, {metric: latency_ms, mode: min}]``: the
        first is what ASHA prunes on (a validation metric); the others are model costs (or
        other validation metrics) Optuna trades it against."""
        from training.metrics import COST_METRICS

        if spec is None:
            return []
        if not isinstance(spec, list) or len(spec) < 2:
            self.fail(("objectives",), "a list of at least two {metric: NAME, mode: max|min} (one objective: use metric:)")
        if "metric" in data or "mode" in data:
            self.fail(("objectives",), "give either metric:/mode: or objectives:, not both (the first objective is the metric)")
        out: list[tuple[str, str]] = []
        valid = {**METRIC_MODES, **dict.fromkeys(COST_METRICS, "min")}
        for i, item in enumerate(spec):
            if not isinstance(item, dict) or set(item) - {"metric", "mode"} or "metric" not in item:
                self.fail(("objectives", i), "expects {metric: NAME, mode: max|min}")
            metric = item["metric"]
            if metric not in (METRIC_MODES if i == 0 else valid):
                what = "the first objective is what ASHA prunes on, a validation metric" if i == 0 else "valid"
                names = METRIC_MODES if i == 0 else valid
                self.fail(("objectives", i, "metric"), f"unknown metric {metric!r}; {what}: {', '.join(names)}")
            mode = item.get("mode", valid[metric])
            if mode != valid[metric]:
                self.fail(("objectives", i, "mode"), f"{metric} is {valid[metric]}imized, got mode: {mode!r}")
            if metric in (m for m, _ in out):
                self.fail(("objectives", i, "metric"), f"{metric} is already an objective")
            out.append((metric, mode))
        return out

    def _asha(self, asha: Any) -> tuple[int, int, int | float]:
        if asha is None:
            self.fail((), f"missing `asha:` (keys {', '.join(ASHA_KEYS)})")
        if not isinstance(asha, dict):
            self.fail(("asha",), f"expects a mapping with keys {', '.join(ASHA_KEYS)}")
        for key in asha:
            if key not in ASHA_KEYS:
                self.fail(("asha", key), f"unknown ASHA key; allowed: {', '.join(ASHA_KEYS)}")
        if "max_epochs" not in asha:
            self.fail(("asha",), "missing max_epochs (the epoch budget of the best trials)")
        max_epochs = asha["max_epochs"]
        grace = asha.get("grace_period", ASHA_DEFAULTS["grace_period"])
        factor = asha.get("reduction_factor", ASHA_DEFAULTS["reduction_factor"])
        if not _is_int(max_epochs) or max_epochs < 1:
            self.fail(("asha", "max_epochs"), f"must be an integer >= 1, got {max_epochs!r}")
        if not _is_int(grace) or not 1 <= grace <= max_epochs:
            self.fail(
                ("asha", "grace_period"),
                f"must be an integer in [1, max_epochs={max_epochs}], got {grace!r}",
            )
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor >= 2:
            self.fail(("asha", "reduction_factor"), f"must be a number >= 2, got {factor!r}")
        return max_epochs, grace, factor

    # ------------------------------------------------------------------ keys
    def _config_key(self, key: Any, path: KeyPath) -> str:
        if not isinstance(key, str):
            self.fail(path, f"config keys are dotted strings like optim.lr, got {key!r}")
        if key in RESERVED:
            self.fail(path, f"{key} cannot be set in a search space: {RESERVED[key]}")
        if key not in self.keys:
            close = difflib.get_close_matches(key, list(self.keys), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            self.fail(
                path,
                f"unknown TrainConfig key {key!r}; {hint}valid keys: {', '.join(sorted(self.keys))}",
            )
        if key in self.where:
            self.fail(path, f"{key} is already set at {_dotted(self.where[key])}; set it once")
        self.where[key] = path
        return key

    def _section(self, value: Any, name: str, *, required: bool) -> dict[Any, Any]:
        if value is None:
            if required:
                self.fail((), f"missing `{name}:` (dotted TrainConfig keys → distributions)")
            return {}
        if not isinstance(value, dict):
            self.fail((name,), "expects a mapping of dotted TrainConfig keys")
        if required and not value:
            self.fail((name,), "is empty: nothing to search")
        return value

    def _fixed(self, section: Any) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        for key, value in self._section(section, "fixed", required=False).items():
            name = self._config_key(key, ("fixed", key))
            if isinstance(value, dict):
                self.fail(
                    ("fixed", key), "fixed values are plain values; distributions go under params"
                )
            fixed[name] = value
        return fixed

    def _params(self, section: Any, fixed: dict[str, Any]) -> dict[str, Param]:
        params: dict[str, Param] = {}
        for key, spec in self._section(section, "params", required=True).items():
            name = self._config_key(key, ("params", key))
            if isinstance(spec, dict):
                self._searchable(name, ("params", name))
                params[name] = self._param(name, spec, ("params", name))
            else:  # a bare value under params is a fixed value
                fixed[name] = spec
        return params

    def _searchable(self, name: str, path: KeyPath) -> None:
        """The sweep loads the data and seeds the trials once: those keys cannot vary."""
        if name.startswith("data."):
            self.fail(
                path,
                f"{name} cannot be searched: {SHARED_REASON}; put it under `fixed:` (or pass "
                f"`poketune tune --set {name}=VALUE`) instead",
            )
        if name == "seed":
            self.fail(
                path,
                "seed cannot be searched: the sweep seeds every trial with one value "
                "(`poketune tune --seed N`), so a searched seed would be ignored; "
                "use --seed instead",
            )

    def _param(self, name: str, spec: dict[str, Any], path: KeyPath) -> Param:
        valid = ", ".join(DISTRIBUTIONS.names())
        kinds = [k for k in spec if k in DISTRIBUTIONS]
        if not kinds:
            unknown = [k for k in spec if k not in _DIST_EXTRAS]
            if unknown:
                self.fail(
                    (*path, unknown[0]), f"unknown distribution {unknown[0]!r}; valid: {valid}"
                )
            self.fail(path, f"no distribution given; use one of: {valid}")
        if len(kinds) > 1:
            self.fail(path, f"one distribution per parameter, got {' and '.join(kinds)}")
        kind = kinds[0]
        dist = DISTRIBUTIONS.get(kind)
        allowed = {"when", *dist.options}
        for key in spec:
            if key != kind and key not in allowed:
                what = f"{kind} allows {', '.join(sorted(allowed))}"
                self.fail((*path, key), f"unknown option {key!r}; {what}")
        try:
            dist.check(spec[kind], spec.get("step"), spec.get("log"))
        except Invalid as exc:
            sub = exc.subpath
            at = (*path, *sub) if sub and sub[0] in _DIST_EXTRAS else (*path, kind, *sub)
            self.fail(at, f"{exc.message} ({kind} expects {dist.usage})")
        return Param(
            name=name,
            kind=kind,
            args=spec[kind],
            step=spec.get("step"),
            log=bool(spec.get("log", False)),
            when=self._when(spec.get("when"), (*path, "when")),
        )

    def _when(self, when: Any, path: KeyPath) -> dict[str, list[Any]]:
        if when is None:
            return {}
        if not isinstance(when, dict) or not when:
            self.fail(path, "expects a mapping {parameter: [values it must have]}")
        for key, values in when.items():
            if not isinstance(values, list) or not values:
                self.fail((*path, key), f"expects a non-empty list of values, got {values!r}")
        return dict(when)

    # ------------------------------------------------------------------ values
    def _check_values(
        self, task: str, max_epochs: int, fixed: dict[str, Any], params: dict[str, Param]
    ) -> None:
        """Every fixed value, choice and range bound must survive TrainConfig.from_flat."""
        preset = preset_config(task)
        for key, value in fixed.items():
            self._coerces(key, value, preset, self.where[key])
        try:
            shared = preset_config(task, {**fixed, "optim.epochs": max_epochs})
        except ConfigError as exc:
            self.fail(("fixed",), f"the fixed values do not make a valid config: {exc}")
        for name, param in params.items():
            dist = DISTRIBUTIONS.get(param.kind)
            at = (*self.where[name], param.kind)
            if dist.yields_float and _scalar_type(self.keys[name]) is int:
                self.fail(at, f"{name} holds integers; {param.kind} draws floats (use int)")
            for i, value in enumerate(dist.probes(param)):
                self._coerces(name, value, shared, (*at, i))

    def _coerces(self, key: str, value: Any, base: TrainConfig, at: KeyPath) -> None:
        if isinstance(value, str):  # other types are refused by from_flat, with the type named
            problem = unknown_name(key, value)
            if problem is not None:
                self.fail(at, problem)
        try:
            TrainConfig.from_flat({key: value}, base=base)
        except ConfigError as exc:
            self.fail(at, f"not a valid value: {exc}")

    def _check_conditions(self, fixed: dict[str, Any], params: dict[str, Param]) -> None:
        testable = sorted([*fixed, *(n for n, p in params.items() if p.is_choice)])
        for param in params.values():
            for parent, values in param.when.items():
                at = (*self.where[param.name], "when", parent)
                if parent == param.name:
                    self.fail(at, "a parameter cannot depend on itself")
                if parent in fixed:
                    possible = [fixed[parent]]
                elif parent in params:
                    if not params[parent].is_choice:
                        self.fail(
                            at,
                            f"`when` can test a choice or fixed parameter; {parent} is "
                            f"{params[parent].kind} (testable: {', '.join(testable)})",
                        )
                    possible = params[parent].args
                else:
                    self.fail(
                        at,
                        f"{parent!r} is not a parameter of this space; `when` can test: "
                        f"{', '.join(testable) or 'nothing (no choice or fixed values)'}",
                    )
                for i, value in enumerate(values):
                    if value not in possible:
                        problem = unknown_name(parent, value) if isinstance(value, str) else None
                        self.fail(
                            (*at, i),
                            f"{parent} can never be {value!r}; it takes {possible!r}"
                            + (f" ({problem})" if problem else ""),
                        )

    def _dependency_order(self, params: dict[str, Param]) -> list[str]:
        """Parents before children, otherwise file order; a cycle is an error."""
        order: list[str] = []
        active: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            if name in active:
                cycle = [*active[active.index(name) :], name]
                self.fail((*self.where[name], "when"), f"conditional cycle: {' -> '.join(cycle)}")
            active.append(name)
            for parent in params[name].when:
                if parent in params:
                    visit(parent)
            active.pop()
            order.append(name)

        for name in params:
            visit(name)
        return order


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def _scalar_type(hint: Any) -> Any:
    """``int | None`` → int, ``list[int]`` → int."""
    while (args := typing.get_args(hint)) and typing.get_origin(hint) is not None:
        inner = [a for a in args if a is not type(None)]
        hint = inner[0]
    return hint


