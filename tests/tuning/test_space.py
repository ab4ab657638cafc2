"""Search spaces: loading, validation errors, Optuna define-by-run, configs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.samplers import TPESampler
from optuna.trial import FixedTrial

from training.config import ConfigError, TrainConfig, flat_keys, named_keys
from training.data import LAYOUTS
from training.data import _preprocessing as preprocessing
from training.losses import IMBALANCE, Imbalance
from training.models import MODELS, cnn
from training.optim import OPTIMIZERS, SCHEDULERS
from training.tasks import TASKS, preset_config
from tuning.space import SearchSpace, SpaceError, load_space, parse_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str, *, header: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(header.lstrip("\n") + textwrap.dedent(text).lstrip("\n"))
    return path


def run_trials(
    space: SearchSpace, n: int, seed: int = 0
) -> list[tuple[optuna.trial.FrozenTrial, dict[str, Any]]]:
    """Ask/tell ``n`` TPE trials; returns each finished trial with its define_by_run result."""
    study = optuna.create_study(sampler=TPESampler(seed=seed), direction="maximize")
    out = []
    for i in range(n):
        trial = study.ask()
        config = space.define_by_run(trial)
        study.tell(trial, float(i % 5))  # any objective: TPE just needs values
        out.append((study.trials[-1], config))
    return out


HEADER = """
task: task2
asha: {max_epochs: 4, grace_period: 1, reduction_factor: 2}
"""

# ---------------------------------------------------------------------- shipped spaces


def test_the_expected_spaces_ship() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"task1_mlp", "task2_cnn", "task3_transfer", "cifar10_cnn", "cifar10_transfer"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_space_samples_valid_configs(path: Path) -> None:
    space = load_space(path)
    assert space.task in TASKS
    for frozen, config in run_trials(space, 20):
        # what Ray hands the trainable is a complete config equal to trial_config
        cfg = TrainConfig.from_flat(config)
        assert cfg == space.trial_config(frozen.params)
        flat = cfg.to_flat()
        assert cfg.optim.epochs == space.max_epochs
        assert cfg.task == space.task
        for key, value in space.fixed.items():
            assert flat[key] == TrainConfig.from_flat({key: value}).to_flat()[key]
        for name, label in frozen.params.items():
            param = space.params[name]
            value = param.decode(label)
            if param.is_choice:
                assert value in param.args
            else:
                low, high = param.args
                assert low <= value <= high
            assert config[name] == value


def test_task3_searches_backbones_and_freeze_depth() -> None:
    space = load_space(SPACES / "task3_transfer_resnet.yaml")
    assert set(space.params["model.name"].args) == {
        "resnet18",
        "resnet50",
        "vgg16",
        "efficientnet_b0",
    }
    assert space.params["model.freeze_depth"].kind == "int"
    assert space.params["loss.focal_gamma"].when == {"loss.imbalance": ["focal"]}


# ---------------------------------------------------------------------- sampling


def test_conditional_param_reaches_optuna_only_when_its_condition_holds() -> None:
    space = load_space(SPACES / "task1_mlp.yaml")
    seen_focal = seen_other = False
    for frozen, config in run_trials(space, 30):
        focal = frozen.params["loss.imbalance"] == "focal"
        assert ("loss.focal_gamma" in frozen.params) is focal
        assert ("optim.step_size" in frozen.params) is (frozen.params["optim.scheduler"] == "step")
        assert ("optim.momentum" in frozen.params) is (frozen.params["optim.optimizer"] == "sgd")
        if focal:
            assert 0.5 <= config["loss.focal_gamma"] <= 3.0
        seen_focal |= focal
        seen_other |= not focal
    assert seen_focal and seen_other


def test_conditions_chain_and_are_suggested_parents_first(tmp_path: Path) -> None:
    # the child is written before its parent: the space reorders them
    space = load_space(
        write(
            tmp_path,
            """
            params:
              optim.step_size:
                int: [2, 6]
                when: {optim.scheduler: [step]}
              optim.scheduler:
                choice: [none, step]
                when: {optim.optimizer: [sgd]}
              optim.optimizer: {choice: [adam, sgd]}
            """,
            header=HEADER,
        )
    )
    assert list(space.params) == ["optim.optimizer", "optim.scheduler", "optim.step_size"]
    # FixedTrial raises for any parameter it was not given: nothing inactive is asked for
    assert space.suggest(FixedTrial({"optim.optimizer": "adam"})) == {"optim.optimizer": "adam"}
    assert space.suggest(FixedTrial({"optim.optimizer": "sgd", "optim.scheduler": "none"})) == {
        "optim.optimizer": "sgd",
        "optim.scheduler": "none",
    }
    full = {"optim.optimizer": "sgd", "optim.scheduler": "step", "optim.step_size": 4}
    assert space.suggest(FixedTrial(full)) == full


def test_when_can_test_a_fixed_value(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            """
            fixed: {loss.imbalance: focal}
            params:
              loss.focal_gamma: {uniform: [1.0, 2.0], when: {loss.imbalance: [focal]}}
            """,
            header=HEADER,
        )
    )
    assert space.suggest(FixedTrial({"loss.focal_gamma": 1.5})) == {"loss.focal_gamma": 1.5}


def test_list_choices_round_trip_through_optuna(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            """
            task: task1
            asha: {max_epochs: 3}
            params:
              model.hidden_sizes: {choice: [[256, 128], [512, 256], [128]]}
            """,
        )
    )
    param = space.params["model.hidden_sizes"]
    assert param.labels() == ["[256,128]", "[512,256]", "[128]"]
    seen = set()
    for frozen, config in run_trials(space, 12):
        label = frozen.params["model.hidden_sizes"]
        assert isinstance(label, str)  # what Optuna stores
        value = space.decode(frozen.params)["model.hidden_sizes"]
        assert value in param.args
        assert config["model.hidden_sizes"] == value  # what Ray's config holds
        assert space.trial_config(frozen.params).model.hidden_sizes == value
        assert space.trial_config(config).model.hidden_sizes == value  # decoding is idempotent
        seen.add(label)
    assert len(seen) > 1


def test_fixed_values_and_max_epochs_reach_the_config(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            """
            task: task2
            asha: {max_epochs: 7, grace_period: 2}
            fixed:
              data.image_size: 32
              model.channels: 8
            params:
              optim.optimizer: sgd
              optim.lr: {loguniform: [1e-4, 1e-2]}
            """,
        )
    )
    assert space.fixed == {"data.image_size": 32, "model.channels": 8, "optim.optimizer": "sgd"}
    assert list(space.params) == ["optim.lr"]
    assert space.params["optim.lr"].args == [1e-4, 1e-2]  # 1e-4 is a number, not a string
    cfg = space.trial_config({"optim.lr": 0.005})
    assert (cfg.data.image_size, cfg.model.channels, cfg.optim.optimizer) == (32, 8, "sgd")
    assert cfg.optim.epochs == 7
    assert cfg.optim.lr == 0.005
    assert cfg.data.rgba == "keep"  # the rest is the task2 preset
    base = space.base_config({"seed": 3})
    assert base["optim.epochs"] == 7 and base["data.image_size"] == 32 and base["seed"] == 3
    assert TrainConfig.from_flat(base) == preset_config(
        "task2",
        {
            "data.image_size": 32,
            "model.channels": 8,
            "optim.optimizer": "sgd",
            "optim.epochs": 7,
            "seed": 3,
        },
    )


def test_base_config_does_not_share_lists_with_the_presets(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            "task: task1\nasha: {max_epochs: 2}\nparams:\n  model.dropout: {uniform: [0.0, 0.5]}\n",
        )
    )
    space.base_config()["model.hidden_sizes"].append(1)
    assert TASKS.get("task1")["model.hidden_sizes"] == [256, 128]


def test_to_dict_round_trips(tmp_path: Path) -> None:
    space = load_space(SPACES / "task1_mlp.yaml")
    again = parse_space(space.to_dict(), source="stored")
    assert again.to_dict() == space.to_dict()
    assert again.params == space.params and again.fixed == space.fixed
    import yaml

    assert yaml.safe_load(space.to_yaml()) == space.to_dict()


def test_defaults_for_metric_mode_and_asha(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            "task: task2\nmetric: val_loss\nasha: {max_epochs: 5}\nparams:\n  optim.lr: {uniform: [0.001, 0.01]}\n",
        )
    )
    assert (space.metric, space.mode, space.grace_period, space.reduction_factor) == (
        "val_loss",
        "min",
        1,
        3,
    )


def test_ray_optuna_search_gets_decoded_complete_configs() -> None:
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(SPACES / "task1_mlp.yaml")
    searcher = OptunaSearch(
        space=space.define_by_run, metric=space.metric, mode=space.mode, sampler=TPESampler(seed=1)
    )
    for i in range(3):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        assert isinstance(config["model.hidden_sizes"], list)
        assert TrainConfig.from_flat(config) == space.trial_config(config)
        searcher.on_trial_complete(f"t{i}", {space.metric: 0.1 * i, "training_iteration": 1})


# ---------------------------------------------------------------------- validation errors

LR = "  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"

ERRORS: dict[str, tuple[str, str]] = {
    # case: (document, expected message fragment after "space.yaml:LINE: ")
    "unknown top-level key": (
        HEADER + "tunables: 3\nparams:\n" + LR,
        "tunables: unknown top-level key; allowed: task, metric, mode, objectives, asha, search, scheduler, cv, fixed, params",
    ),
    "one fold": (
        HEADER + "cv: 1\nparams:\n" + LR,
        "cv: the number of cross-validation folds: an integer >= 2, got 1",
    ),
    "unknown task": (
        "task: task9\nasha: {max_epochs: 3}\nparams:\n" + LR,
        "task: unknown task preset 'task9'; valid: ",
    ),
    "unknown metric": (
        HEADER + "metric: f1\nparams:\n" + LR,
        "metric: unknown metric 'f1'; valid: val_f1, val_acc, val_loss",
    ),
    "bad mode": (
        HEADER + "mode: maximize\nparams:\n" + LR,
        "mode: mode must be max or min, got 'maximize'",
    ),
    "mode against metric": (
        HEADER + "metric: val_loss\nmode: max\nparams:\n" + LR,
        "mode: val_loss is minimized",
    ),
    "grace over budget": (
        "task: task2\nasha: {max_epochs: 4, grace_period: 5}\nparams:\n" + LR,
        "asha.grace_period: must be an integer in [1, max_epochs=4], got 5",
    ),
    "reduction factor": (
        "task: task2\nasha: {max_epochs: 4, reduction_factor: 1}\nparams:\n" + LR,
        "asha.reduction_factor: must be a number >= 2, got 1",
    ),
    "unknown asha key": (
        "task: task2\nasha: {max_epochs: 4, max_t: 3}\nparams:\n" + LR,
        "asha.max_t: unknown ASHA key",
    ),
    "unknown config key": (
        HEADER + "params:\n  optim.lrr: {uniform: [0.1, 0.2]}\n",
        "params.optim.lrr: unknown TrainConfig key 'optim.lrr'; did you mean optim.lr",
    ),
    "reserved key": (
        HEADER + "params:\n  optim.epochs: {int: [2, 9]}\n",
        "params.optim.epochs: optim.epochs cannot be set in a search space: the epoch budget is asha.max_epochs",
    ),
    "key set twice": (
        HEADER + "fixed: {optim.lr: 0.1}\nparams:\n" + LR,
        "params.optim.lr: optim.lr is already set at fixed.optim.lr",
    ),
    "duplicate yaml key": (
        HEADER + "params:\n" + LR + LR,
        "params.optim.lr: duplicate key (first on line 4)",
    ),
    "unknown distribution": (
        HEADER + "params:\n  optim.lr: {normal: [0.0, 1.0]}\n",
        "params.optim.lr.normal: unknown distribution 'normal'; valid: choice, int, loguniform, uniform",
    ),
    "two distributions": (
        HEADER + "params:\n  optim.lr: {uniform: [0.1, 0.2], loguniform: [0.1, 0.2]}\n",
        "params.optim.lr: one distribution per parameter",
    ),
    "unknown option": (
        HEADER + "params:\n  model.stages: {int: [1, 4], stpe: 1}\n",
        "params.model.stages.stpe: unknown option 'stpe'; int allows log, step, when",
    ),
    "arity": (
        HEADER + "params:\n  optim.lr: {uniform: [0.1]}\n",
        "params.optim.lr.uniform: expects [low, high] (floats; optional step), got [0.1]",
    ),
    "inverted range": (
        HEADER + "params:\n  optim.lr: {uniform: [0.1, 0.01]}\n",
        "params.optim.lr.uniform: empty or inverted range: low (0.1) must be < high (0.01)",
    ),
    "empty range": (
        HEADER + "params:\n  model.stages: {int: [3, 3]}\n",
        "params.model.stages.int: empty or inverted range: low (3) must be < high (3)",
    ),
    "loguniform low <= 0": (
        HEADER + "params:\n  optim.lr: {loguniform: [0.0, 0.1]}\n",
        "params.optim.lr.loguniform[0]: loguniform needs low > 0, got 0.0",
    ),
    "int bounds not integers": (
        HEADER + "params:\n  model.stages: {int: [1.5, 4]}\n",
        "params.model.stages.int[0]: bounds must be integers, got 1.5",
    ),
    "step does not divide": (
        HEADER + "params:\n  model.channels: {int: [8, 30], step: 8}\n",
        "params.model.channels.step: high - low (22) must be a multiple of step (8)",
    ),
    "step with log": (
        HEADER + "params:\n  model.channels: {int: [8, 32], step: 8, log: true}\n",
        "params.model.channels.log: use either step or log: true, not both",
    ),
    "empty choice": (
        HEADER + "params:\n  optim.optimizer: {choice: []}\n",
        "params.optim.optimizer.choice: expects a non-empty list of values",
    ),
    "repeated choice": (
        HEADER + "params:\n  optim.batch_size: {choice: [16, 32, 16]}\n",
        "params.optim.batch_size.choice[2]: 16 repeats choice [0]; choices must differ",
    ),
    "float range on int key": (
        HEADER + "params:\n  optim.batch_size: {uniform: [8, 64]}\n",
        "params.optim.batch_size.uniform: optim.batch_size holds integers; uniform draws floats (use int)",
    ),
    "string fixed value": (
        HEADER + "fixed:\n  optim.lr: fast\nparams:\n  optim.batch_size: {choice: [16, 32]}\n",
        "fixed.optim.lr: not a valid value: optim.lr: expected float, got 'fast'",
    ),
    "string choice value": (
        HEADER + "params:\n  optim.batch_size: {choice: [16, big]}\n",
        "params.optim.batch_size.choice[1]: not a valid value: optim.batch_size: expected int, got 'big'",
    ),
    "range bound fails validate": (
        HEADER + "params:\n  model.dropout: {uniform: [0.0, 1.0]}\n",
        "params.model.dropout.uniform[1]: not a valid value: model.dropout: must be in [0, 1)",
    ),
    "non-boolean amp": (
        HEADER + "fixed: {optim.amp: maybe}\nparams:\n" + LR,
        "fixed.optim.amp: not a valid value: optim.amp: expected bool, got 'maybe'",
    ),
    "fixed value fails validate": (
        HEADER + "fixed: {data.image_size: 4}\nparams:\n" + LR,
        "fixed.data.image_size: not a valid value: data.image_size: must be >= 8",
    ),
    "unregistered scheduler": (
        HEADER + "params:\n  optim.scheduler: {choice: [none, onecycle]}\n",
        "params.optim.scheduler.choice[1]: unknown scheduler 'onecycle'; valid: ",
    ),
    "when on unknown param": (
        HEADER
        + "params:\n  loss.focal_gamma: {uniform: [1.0, 2.0], when: {loss.imbalance: [focal]}}\n",
        "params.loss.focal_gamma.when.loss.imbalance: 'loss.imbalance' is not a parameter of this space",
    ),
    "when on a range": (
        HEADER
        + "params:\n"
        + LR
        + "  optim.momentum: {uniform: [0.8, 0.9], when: {optim.lr: [0.001]}}\n",
        "params.optim.momentum.when.optim.lr: `when` can test a choice or fixed parameter; optim.lr is loguniform",
    ),
    "when with impossible value": (
        HEADER
        + "params:\n  loss.imbalance: {choice: [none, focal]}\n  loss.focal_gamma: {uniform: [1.0, 2.0], when: {loss.imbalance: [focla]}}\n",
        "params.loss.focal_gamma.when.loss.imbalance[0]: loss.imbalance can never be 'focla'; it takes ['none', 'focal']",
    ),
    "when on itself": (
        HEADER
        + "params:\n  loss.imbalance: {choice: [none, focal], when: {loss.imbalance: [none]}}\n",
        "params.loss.imbalance.when.loss.imbalance: a parameter cannot depend on itself",
    ),
    "conditional cycle": (
        HEADER
        + "params:\n  optim.optimizer: {choice: [adam, sgd], when: {optim.scheduler: [step]}}\n"
        + "  optim.scheduler: {choice: [none, step], when: {optim.optimizer: [sgd]}}\n",
        "params.optim.optimizer.when: conditional cycle: optim.optimizer -> optim.scheduler -> optim.optimizer",
    ),
    "no params": (HEADER + "params: {}\n", "params: is empty: nothing to search"),
    "missing asha": ("task: task2\nparams:\n" + LR, "missing `asha:`"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_invalid_space_names_file_and_key(tmp_path: Path, case: str) -> None:
    text, expected = ERRORS[case]
    path = tmp_path / "space.yaml"
    path.write_text(text.lstrip("\n"))
    with pytest.raises(SpaceError, match=rf"^{re.escape(str(path))}(:\d+)?: {re.escape(expected)}"):
        load_space(path)


def test_error_points_at_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        task: task2
        asha: {max_epochs: 4}
        params:
          optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
          loss.focal_gamma:
            uniform: [3.0, 1.0]
        """,
    )
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}:6: params.loss.focal_gamma.uniform: ")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "task: task2\nparams: {optim.lr: [\n")
    with pytest.raises(SpaceError, match=rf"^{re.escape(str(path))}:\d+: invalid YAML"):
        load_space(path)
    with pytest.raises(SpaceError, match="cannot read search space"):
        load_space(tmp_path / "nope.yaml")


def test_space_error_is_a_value_error() -> None:
    assert issubclass(SpaceError, ValueError)
    assert issubclass(SpaceError, ConfigError)  # the sweep's callers refuse both alike


# ---------------------------------------------------------------------- shared data and seed

#: every data.* key (read from the config, so a new one is covered) and the seed
UNSEARCHABLE = [*sorted(k for k in flat_keys() if k.startswith("data.")), "seed"]


@pytest.mark.parametrize("key", UNSEARCHABLE)
def test_data_keys_and_seed_cannot_be_searched(tmp_path: Path, key: str) -> None:
    # the sweep's driver decodes, filters, splits and normalises the data once and seeds every
    # trial itself: a searched value would be ignored while the checkpoint records it
    path = write(tmp_path, f"params:\n{LR}  {key}: {{choice: [a, b]}}\n", header=HEADER)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5: params.{key}: {key} cannot be searched: ")
    if key == "seed":
        assert "poketune tune --seed N" in message
    else:
        assert "shares the data" in message  # tests/tuning/test_sweep.py matches "shares"
        assert f"put it under `fixed:` (or pass `poketune tune --set {key}=VALUE`)" in message


def test_data_keys_and_seed_stay_settable_as_fixed_values(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            """
            fixed:
              data.val_fraction: 0.3
              data.normalize: imagenet
              data.classes: [a, b]
              seed: 4
            params:
              data.skip_bad: true          # a bare value under params is a fixed value
              optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
            """,
            header=HEADER,
        )
    )
    cfg = space.trial_config({"optim.lr": 0.001})
    assert (cfg.data.val_fraction, cfg.data.normalize, cfg.data.classes) == (
        0.3,
        "imagenet",
        ["a", "b"],
    )
    assert cfg.data.skip_bad is True and cfg.seed == 4
    assert list(space.params) == ["optim.lr"]


def test_no_shipped_space_searches_data_or_seed() -> None:
    for path in SHIPPED:
        searched = load_space(path).params
        assert not [k for k in searched if k in UNSEARCHABLE], path.name


# ---------------------------------------------------------------------- names

#: key → (what the error calls its values, the valid names, read from their owners here)
NAMED: dict[str, tuple[str, list[str]]] = {
    "model.name": ("model", MODELS.names()),
    "model.pooling": ("model.pooling", sorted(cnn.POOLS)),
    "data.layout": ("data layout", LAYOUTS.names()),
    "data.crop": ("data.crop", sorted(preprocessing.CROPS)),
    "data.rgba": ("data.rgba", sorted(preprocessing.RGBA_MODES)),
    "data.normalize": ("data.normalize", sorted(preprocessing.NORMALIZATIONS)),
    "optim.optimizer": ("optimizer", OPTIMIZERS.names()),
    "optim.scheduler": ("scheduler", SCHEDULERS.names()),
    "loss.imbalance": ("loss.imbalance", IMBALANCE.names()),
}
#: string keys whose values are free text (paths, column names) or checked by validate()
FREE_TEXT = {
    "task",
    "data.manifest",
    "data.id_col",
    "data.label_col",
    "data.path_col",
    "data.classes",
    "model.weights_path",
    "early_stop.monitor",
}


def test_every_enumerated_string_key_is_checked_by_name() -> None:
    # a new enumerated key must name its source in the config schema (and get a row above)
    str_keys = {k for k, hint in flat_keys().items() if "str" in str(hint)}
    assert str_keys - FREE_TEXT == set(NAMED) == set(named_keys())


def _typo(key: str) -> str:
    return NAMED[key][1][0] + "x"


@pytest.mark.parametrize("key", list(NAMED))
def test_a_misspelt_name_in_a_fixed_value_is_refused(tmp_path: Path, key: str) -> None:
    kind, names = NAMED[key]
    typo = _typo(key)
    expected = f"fixed.{key}: unknown {kind} {typo!r}; valid: {', '.join(names)}"
    path = write(tmp_path, f"fixed:\n  {key}: {typo}\nparams:\n{LR}", header=HEADER)
    with pytest.raises(SpaceError, match=rf"^{re.escape(f'{path}:4: {expected}')}$"):
        load_space(path)
    # the bare form under params is a fixed value too
    path.write_text(HEADER.lstrip() + f"params:\n{LR}  {key}: {typo}\n")
    expected = expected.replace("fixed.", "params.", 1)
    with pytest.raises(SpaceError, match=rf"^{re.escape(f'{path}:5: {expected}')}$"):
        load_space(path)


@pytest.mark.parametrize("key", [k for k in NAMED if k not in UNSEARCHABLE])
def test_a_misspelt_name_in_a_choice_is_refused(tmp_path: Path, key: str) -> None:
    kind, names = NAMED[key]
    typo = _typo(key)
    path = write(
        tmp_path, f"params:\n{LR}  {key}: {{choice: [{names[0]}, {typo}]}}\n", header=HEADER
    )
    expected = f"params.{key}.choice[1]: unknown {kind} {typo!r}; valid: {', '.join(names)}"
    with pytest.raises(SpaceError, match=rf"^{re.escape(f'{path}:5: {expected}')}$"):
        load_space(path)


def test_a_misspelt_name_in_a_condition_says_so(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        fixed: {optim.scheduler: step}
        params:
          loss.imbalance: {choice: [none, focal]}
          loss.focal_gamma: {uniform: [1.0, 2.0], when: {loss.imbalance: [focla]}}
          optim.step_size: {int: [2, 4], when: {optim.scheduler: [stpe]}}
        """,
        header=HEADER,
    )
    valid = ", ".join(NAMED["loss.imbalance"][1])
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == (
        f"{path}:6: params.loss.focal_gamma.when.loss.imbalance[0]: loss.imbalance can never be "
        f"'focla'; it takes ['none', 'focal'] (unknown loss.imbalance 'focla'; valid: {valid})"
    )
    path.write_text(path.read_text().replace("[focla]", "[focal]"))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == (
        f"{path}:7: params.optim.step_size.when.optim.scheduler[0]: optim.scheduler can never "
        f"be 'stpe'; it takes ['step'] (unknown scheduler 'stpe'; valid: "
        f"{', '.join(NAMED['optim.scheduler'][1])})"
    )


def test_names_are_read_from_their_registries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f"fixed: {{data.layout: parquet}}\nparams:\n{LR}", header=HEADER)
    with pytest.raises(SpaceError, match="unknown data layout 'parquet'"):
        load_space(path)
    monkeypatch.setitem(LAYOUTS._items, "parquet", LAYOUTS.get("kaggle"))
    assert load_space(path).fixed["data.layout"] == "parquet"
    # one entry of the one imbalance registry: its criterion and its sampler together
    path.write_text(HEADER.lstrip() + f"fixed: {{loss.imbalance: ohem}}\nparams:\n{LR}")
    with pytest.raises(SpaceError, match=r"unknown loss.imbalance 'ohem'; valid: (?!.*ohem)"):
        load_space(path)
    none = IMBALANCE.get("none")
    monkeypatch.setitem(IMBALANCE._items, "ohem", Imbalance(none.criterion, none.sampler))
    assert load_space(path).fixed["loss.imbalance"] == "ohem"


def test_preset_point_is_the_preset_clamped_into_the_space() -> None:
    space = parse_space(
        {
            "task": "task2",
            "asha": {"max_epochs": 4, "grace_period": 1, "reduction_factor": 2},
            "params": {
                "optim.lr": {"loguniform": [1e-4, 1e-2]},  # preset 1e-3: inside
                "model.stages": {"int": [2, 3]},  # preset 4: outside, clamped
                "model.channels": {"int": [8, 56], "step": 16},  # preset 16: on to the 8+16k grid
                "model.pooling": {"choice": ["avg"]},  # preset max: not offered
                "optim.momentum": {"uniform": [0.8, 0.9], "when": {"optim.optimizer": ["sgd"]}},
                "optim.optimizer": {"choice": ["adam", "sgd"]},
            },
        }
    )
    preset = preset_config("task2")
    point, notes = space.preset_point()
    assert point["optim.lr"] == preset.optim.lr and point["optim.optimizer"] == "adam"
    assert point["model.stages"] == 3 and point["model.channels"] in (8, 24)
    assert "model.pooling" not in point and "optim.momentum" not in point  # inactive for adam
    assert "model.pooling" in notes and any(n.startswith("model.stages (preset 4") for n in notes)
    # an Optuna trial fixed to the point reproduces it through the define-by-run function
    trial = FixedTrial({**point, "model.pooling": "avg"})
    assert space.suggest(trial)["model.stages"] == 3
