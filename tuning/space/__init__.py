"""Search spaces as data: YAML files → validated :class:`SearchSpace` → Optuna define-by-run.

The format is documented in ``search_spaces/README.md``.
"""

from tuning.space._distributions import DISTRIBUTIONS, Distribution
from tuning.space._errors import SpaceError
from tuning.space._load import METRIC_MODES, load_space, parse_space
from tuning.space._param import Param, choice_label
from tuning.space._points import evaluates, load_points
from tuning.space._search_space import SearchSpace

__all__ = [
    "DISTRIBUTIONS",
    "METRIC_MODES",
    "Distribution",
    "Param",
    "SearchSpace",
    "SpaceError",
    "choice_label",
    "evaluates",
    "load_points",
    "load_space",
    "parse_space",
]
