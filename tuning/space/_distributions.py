"""The distributions a search space may use, as a registry (``DISTRIBUTIONS``).

Each one checks its own YAML arguments and knows how to ask an Optuna trial for a value,
and which Ray Tune domain samples the same values (population-based training samples and
mutates through Tune, without Optuna).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from training.registry import Registry
from tuning.space._errors import Invalid

if TYPE_CHECKING:
    import optuna

    from tuning.space._param import Param

__all__ = ["DISTRIBUTIONS", "Distribution"]


class Distribution:
    #: keys allowed next to the distribution name (besides ``when``)
    options: ClassVar[frozenset[str]] = frozenset()
    #: True when the values are floats, so an int config key cannot take them
    yields_float: ClassVar[bool] = False
    #: how the arguments look, for error messages
    usage: ClassVar[str] = ""

    def check(self, args: Any, step: Any, log: Any) -> None:
        """Raise :class:`Invalid` (with a sub-path) when the arguments are unusable."""
        raise NotImplementedError

    def probes(self, param: Param) -> list[Any]:
        """Values whose coercion into the config proves the whole distribution fits the key."""
        return list(param.args)

    def suggest(self, trial: optuna.trial.BaseTrial, param: Param) -> Any:
        raise NotImplementedError

    def tune_domain(self, param: Param) -> Any:
        """The ``ray.tune`` search-space domain of the same values."""
        raise NotImplementedError


DISTRIBUTIONS: Registry[Distribution] = Registry("distribution")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(args: Any, usage: str, *, integers: bool = False) -> tuple[Any, Any]:
    if not isinstance(args, list) or len(args) != 2:
        raise Invalid(f"expects {usage}, got {args!r}")
    kind = "integers" if integers else "numbers"
    for i, value in enumerate(args):
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if integers
            else _is_number(value)
        )
        if not ok:
            raise Invalid(f"bounds must be {kind}, got {value!r}", i)
    low, high = args
    if low >= high:
        raise Invalid(f"empty or inverted range: low ({low}) must be < high ({high})")
    return low, high


class _Uniform(Distribution):
    options = frozenset({"step"})
    yields_float = True
    usage = "[low, high] (floats; optional step)"

    def check(self, args: Any, step: Any, log: Any) -> None:
        low, high = _range(args, self.usage)
        if step is not None:
            if not _is_number(step) or step <= 0:
                raise Invalid(f"step must be a number > 0, got {step!r}", "step")
            n = (high - low) / step
            if not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-9):
                raise Invalid(
                    f"high - low ({high - low}) must be a multiple of step ({step})", "step"
                )

    def suggest(self, trial: optuna.trial.BaseTrial, param: Param) -> Any:
        low, high = param.args
        return trial.suggest_float(param.name, float(low), float(high), step=param.step)

    def tune_domain(self, param: Param) -> Any:
        from ray import tune

        low, high = param.args
        return tune.quniform(low, high, param.step) if param.step else tune.uniform(low, high)


class _LogUniform(Distribution):
    yields_float = True
    usage = "[low, high] with 0 < low < high"

    def check(self, args: Any, step: Any, log: Any) -> None:
        low, _ = _range(args, self.usage)
        if low <= 0:
            raise Invalid(f"loguniform needs low > 0, got {low}", 0)

    def suggest(self, trial: optuna.trial.BaseTrial, param: Param) -> Any:
        low, high = param.args
        return trial.suggest_float(param.name, float(low), float(high), log=True)

    def tune_domain(self, param: Param) -> Any:
        from ray import tune

        return tune.loguniform(*param.args)


class _Int(Distribution):
    options = frozenset({"step", "log"})
    usage = "[low, high] (integers, both included; optional step or log: true)"

    def check(self, args: Any, step: Any, log: Any) -> None:
        low, high = _range(args, self.usage, integers=True)
        if step is not None:
            if not isinstance(step, int) or isinstance(step, bool) or step < 1:
                raise Invalid(f"step must be an integer >= 1, got {step!r}", "step")
            if (high - low) % step:
                raise Invalid(
                    f"high - low ({high - low}) must be a multiple of step ({step})", "step"
                )
        if log is not None and not isinstance(log, bool):
            raise Invalid(f"log must be true or false, got {log!r}", "log")
        if log and step not in (None, 1):
            raise Invalid("use either step or log: true, not both", "log")
        if log and low < 1:
            raise Invalid(f"log: true needs low >= 1, got {low}", 0)

    def suggest(self, trial: optuna.trial.BaseTrial, param: Param) -> Any:
        low, high = param.args
        return trial.suggest_int(param.name, low, high, step=int(param.step or 1), log=param.log)

    def tune_domain(self, param: Param) -> Any:
        from ray import tune

        low, high = param.args
        if param.log:
            return tune.lograndint(low, high + 1)  # Tune's upper bound is exclusive
        # qrandint's upper bound is in or out depending on q's rounding (measured, Ray 2.60):
        # the values themselves, both ends included
        return tune.choice(list(range(low, high + 1, int(param.step or 1))))


class _Choice(Distribution):
    usage = "a non-empty list of values (values may be lists)"

    def check(self, args: Any, step: Any, log: Any) -> None:
        from tuning.space._param import choice_label

        if not isinstance(args, list) or not args:
            raise Invalid(f"expects {self.usage}, got {args!r}")
        seen: dict[Any, int] = {}
        for i, value in enumerate(args):
            if not _plain_value(value):
                raise Invalid(f"choices are plain values or lists of them, got {value!r}", i)
            label = choice_label(value)
            if label in seen:
                raise Invalid(f"{value!r} repeats choice [{seen[label]}]; choices must differ", i)
            seen[label] = i

    def suggest(self, trial: optuna.trial.BaseTrial, param: Param) -> Any:
        return param.decode(trial.suggest_categorical(param.name, param.labels()))

    def tune_domain(self, param: Param) -> Any:
        from ray import tune

        return tune.choice(list(param.args))


for _name, _dist in {
    "uniform": _Uniform(),
    "loguniform": _LogUniform(),
    "int": _Int(),
    "choice": _Choice(),
}.items():
    DISTRIBUTIONS.register(_name)(_dist)


def _plain_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain_value(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
