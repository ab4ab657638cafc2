"""``tune --enqueue CONFIGS.yaml`` and a space's own ``enqueue:`` list: configs evaluated first
(a Kaggle notebook's recipe, last week's best, a space's known-good point), as points of the
space in Optuna's terms.

The file (or the space's ``enqueue:`` key) is one mapping or a list of mappings of searched parameters (dotted keys, or nested
mappings that flatten to them) to values. A parameter a config leaves out takes the task
preset's value (as in :meth:`SearchSpace.preset_point`); a key the space does not search, an
inactive conditional, or a value the parameter cannot take is an error naming the file, line
and key — the point is evaluated exactly as written or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuning.space._errors import KeyPath, Locator
from tuning.space._param import choice_label
from tuning.space._search_space import SearchSpace
from tuning.space._yaml import read_yaml

__all__ = ["evaluates", "load_points", "points_of"]


def _flatten(doc: dict[str, Any], prefix: KeyPath = ()) -> dict[KeyPath, Any]:
    out: dict[KeyPath, Any] = {}
    for key, value in doc.items():
        path = (*prefix, str(key))
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def evaluates(config: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether a trial's ``config`` is ``point`` (Optuna's terms): every key of the point has
    its value in the config, choices compared by label and floats to rounding.

    Tune's trial config may hold a choice decoded (``[256, 128]``) or as Optuna's label
    (``"[256,128]"``), and a float that went through the journal may differ in its last bits.
    """
    for key, value in point.items():
        if key not in config:
            return False
        have = choice_label(config[key])
        if isinstance(have, float) or isinstance(value, float):
            if isinstance(have, bool) or isinstance(value, bool):
                return False
            try:
                if abs(float(have) - float(value)) > 1e-9 * max(1.0, abs(float(value))):
                    return False
            except (TypeError, ValueError):
                return False
        elif have != value:
            return False
    return True


def load_points(path: str | Path, space: SearchSpace) -> list[dict[str, Any]]:
    """The configs in ``path`` as points of ``space`` (``OptunaSearch(points_to_evaluate=…)``)."""
    data, loc = read_yaml(Path(path))
    return points_of(data, space, loc)


def points_of(data: Any, space: SearchSpace, loc: Locator, at: KeyPath = ()) -> list[dict[str, Any]]:
    """``data`` (one mapping or a list of them, found at ``at`` in ``loc``'s file) as points."""
    docs = data if isinstance(data, list) else [data]
    if not docs:
        raise loc.error(at, "a config to enqueue is a mapping of searched parameters to values (the list is empty)")
    points = []
    for i, doc in enumerate(docs):
        base: KeyPath = (*at, i) if isinstance(data, list) else at
        if not isinstance(doc, dict) or not doc:
            raise loc.error(base, "a config to enqueue is a mapping of searched parameters to values")
        points.append(_point(space, {(*base, *k): v for k, v in _flatten(doc).items()}, len(base), loc))
    return points


def _point(space: SearchSpace, given: dict[KeyPath, Any], skip: int, loc: Locator) -> dict[str, Any]:
    by_name = {".".join(map(str, key[skip:])): key for key in given}
    unknown = [n for n in by_name if n not in space.params]
    if unknown:
        raise loc.error(by_name[unknown[0]], f"not a searched parameter of this space; it searches {', '.join(space.params)}")
    preset, _ = space.preset_point()
    point: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, param in space.params.items():
        if not space.is_active(param, values):
            if name in by_name:
                raise loc.error(by_name[name], f"inactive here (only when {param.when})")
            continue
        if name not in by_name:
            if name in preset:
                point[name] = preset[name]
                values[name] = param.decode(preset[name]) if param.is_choice else preset[name]
            continue  # the preset has no value the space offers: the sampler picks it
        value = given[by_name[name]]
        if param.is_choice:
            if value not in param.args:
                raise loc.error(by_name[name], f"{value!r} is not one of the choices {param.args}")
            point[name], values[name] = choice_label(value), value
            continue
        low, high = param.args
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise loc.error(by_name[name], f"{value!r} is outside the searched range [{low}, {high}]")
        if param.kind == "int" and (value != int(value) or (int(value) - low) % int(param.step or 1)):
            raise loc.error(by_name[name], f"{value!r} is not an integer on the grid {low}, {low + int(param.step or 1)}, …")
        point[name] = values[name] = int(value) if param.kind == "int" else float(value)
    return point
