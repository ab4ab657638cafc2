"""One searched hyperparameter and how its values travel through Optuna."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["Param", "choice_label"]

#: the value types Optuna's suggest_categorical accepts
_OPTUNA_SCALARS = (bool, int, float, str)


def choice_label(value: Any) -> Any:
    """What Optuna sees for one choice: scalars as they are, lists as compact JSON.

    ``suggest_categorical`` only takes None/bool/int/float/str, so ``[256, 128]`` becomes the
    label ``"[256,128]"``; :meth:`Param.decode` maps a label back through the choice table
    (never by parsing), so decoding is exact.
    """
    if value is None or isinstance(value, _OPTUNA_SCALARS):
        return value
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Param:
    """A searched TrainConfig key.

    ``args`` is ``[low, high]`` for ranges and the list of values for ``choice``;
    ``when`` maps another parameter (searched with ``choice``, or fixed) to the values
    for which this one exists — every entry must hold.
    """

    name: str
    kind: str  # a DISTRIBUTIONS name: uniform | loguniform | int | choice
    args: list[Any]
    step: int | float | None = None
    log: bool = False
    when: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def is_choice(self) -> bool:
        return self.kind == "choice"

    def labels(self) -> list[Any]:
        """The Optuna-side choices (see :func:`choice_label`)."""
        return [choice_label(v) for v in self.args]

    def decode(self, value: Any) -> Any:
        """Optuna label → config value; values that are not labels pass unchanged,
        so decoding an already decoded value is harmless."""
        if not self.is_choice or not isinstance(value, str):
            return value
        for label, original in zip(self.labels(), self.args, strict=True):
            if label == value:
                return original
        return value

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Ask ``trial`` for a value (decoded)."""
        from tuning.space._distributions import DISTRIBUTIONS

        return DISTRIBUTIONS.get(self.kind).suggest(trial, self)

    def tune_domain(self) -> Any:
        """The ``ray.tune`` domain of the same values (PBT samples through Tune)."""
        from tuning.space._distributions import DISTRIBUTIONS

        return DISTRIBUTIONS.get(self.kind).tune_domain(self)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: ``{kind: args, step?, log?, when?}``."""
        out: dict[str, Any] = {self.kind: _plain(self.args)}
        if self.step is not None:
            out["step"] = self.step
        if self.log and self.kind != "loguniform":
            out["log"] = True
        if self.when:
            out["when"] = {k: _plain(v) for k, v in self.when.items()}
        return out


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
