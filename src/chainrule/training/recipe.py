"""A training run described by one JSON-ready dict: what ``chainrule train`` writes to
``config.json`` and rebuilds on ``--resume`` (:func:`read_run_config`, :func:`resume_config`).

>>> config = make_config(data="moons", hidden=[8], epochs=2, lr=0.5)
>>> splits = build_data(config)
>>> model = build_model(config, splits)
>>> model.sizes
[2, 8, 2]
"""

from __future__ import annotations

from pathlib import Path

from ..backend.precision import MODES as PRECISION_MODES
from ..data.datasets import SCALINGS, DataError, check_batch_size, num_batches
from ..data.sources import is_file_source, load
from ..engine.arraylib import parse_device
from ..estimators import ALIASES, METHODS, get_method
from ..nn.layers import ACTIVATIONS, MLP
from ..optim.optimizers import OPTIMIZERS, SGD, Adam, AdamW, RMSProp
from ..optim.schedules import Constant, Cosine, LinearWarmup, SPSAGain, StepDecay
from .checkpoint import memory_bytes
from .schemes import SCHEME_ALIASES, SCHEMES, get_scheme

FORMAT = "chainrule-run/1"

DEFAULTS = {
    "data": "digits",
    "label_column": None,
    "classes": None,
    "task": None,
    "size": None,
    "val_fraction": 0.1,
    "test_fraction": 0.25,
    "scale": "auto",
    "hidden": [128, 64],
    "activation": "relu",
    "batchnorm": False,
    "dropout": 0.0,
    "init": None,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0,
    "step_epochs": 10,
    "gamma": 0.1,
    "epochs": 30,
    "batch_size": 32,
    "method": "backprop",
    "scheme": "simultaneous",
    "directions": 1,
    "perturbation": None,
    "population": None,
    "local_steps": 10,
    "target_step": 1.0,
    "seed": 0,
    "checkpoint_every": 0,
    "keep_checkpoints": 3,
    "device": "cpu",
    "dtype": None,
    "matmul_precision": "highest",
}

#: Options that may differ when a run is resumed (they do not change its arithmetic: a run keeps
#: its ``dtype``, recorded when it starts, on whichever device it continues).
RESUMABLE = ("epochs", "device")

#: Options newer than the first run configurations, with the value an older run had in effect.
ADDED_LATER = {"device": "cpu", "dtype": None, "matmul_precision": "highest"}

#: The floating dtypes a run may compute in (``None``: the device's default, float32 on a GPU).
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A run configuration that cannot work (one line naming the option)."""


def make_config(**options) -> dict:
    """Defaults overridden by ``options``, validated (``ConfigError`` names the bad option)."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}")
    config = {"format": FORMAT, **DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    validate_config(config)
    return config


def _positive_number(config, key):
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value != value
        or value == float("inf")
    ):
        raise ConfigError(f"--{key.replace('_', '-')} must be a positive number, got {value}")


def _non_negative(config, key, upper=None):
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or (upper is not None and value >= upper)
    ):
        bound = f" and below {upper}" if upper is not None else ""
        raise ConfigError(f"--{key.replace('_', '-')} must be >= 0{bound}, got {value}")


def _positive_int(config, key):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")


#: The data sets whose number of examples ``--size`` sets; it is an error for the others.
SIZED_DATA = ("mnist1d", "spirals", "moons", "teacher")
#: Largest ``--size`` (examples of a generated data set).
SIZE_LIMIT = 10**7
#: Bytes held per parameter during training: the float64 parameters, their gradient, up to two
#: optimizer moments and one temporary copy.
BYTES_PER_PARAMETER = 5 * 8


def check_model_size(sizes) -> int:
    """The parameter count of an MLP with layer sizes ``sizes``; a :class:`ConfigError` before
    anything is allocated when training it (:data:`BYTES_PER_PARAMETER` bytes per parameter)
    would need more than the machine's physical memory.

    >>> check_model_size([64, 128, 10])
    9610
    """
    count = sum(
        (fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
    )
    limit = memory_bytes()
    if limit is not None and count * BYTES_PER_PARAMETER > limit:
        raise ConfigError(
            f"a model with {count:,} parameters needs about "
            f"{count * BYTES_PER_PARAMETER / 2**30:,.1f} GiB to train, more than this machine's "
            f"{limit / 2**30:,.1f} GiB; choose smaller --hidden widths"
        )
    return count


def _count(config, key, low, what):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63:
        raise ConfigError(f"--{key.replace('_', '-')} must be {what}, got {value!r}")


def validate_config(config: dict) -> None:
    _count(config, "seed", 0, "an integer >= 0")
    if config["size"] is not None:
        _count(config, "size", 1, "an integer >= 1")
        if config["size"] > SIZE_LIMIT:
            raise ConfigError(f"--size must be at most {SIZE_LIMIT:,}, got {config['size']}")
        known = config["data"] == "digits" or is_file_source(config["data"])
        if known and config["data"] not in SIZED_DATA:  # (an unknown name: a DataError later)
            raise ConfigError(
                f"--size applies to the generated data sets ({', '.join(SIZED_DATA)}), "
                f"not to {config['data']!r}"
            )
    if config["classes"] is not None:
        _count(config, "classes", 1, "an integer >= 1")
    _positive_number(config, "lr")
    _positive_int(config, "batch_size")
    _positive_int(config, "epochs")
    _positive_int(config, "keep_checkpoints")
    _positive_int(config, "step_epochs")
    _positive_number(config, "gamma")
    for key in ("checkpoint_every", "warmup_epochs"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 0:
            raise ConfigError(
                f"--{key.replace('_', '-')} must be a non-negative integer, got {config[key]}"
            )
    _non_negative(config, "momentum", 1.0)
    _non_negative(config, "weight_decay")
    _non_negative(config, "dropout", 1.0)
    if config["nesterov"] and not config["momentum"]:
        raise ConfigError("--nesterov needs --momentum > 0")
    if config["optimizer"] not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {config['optimizer']!r}; choose from {sorted(OPTIMIZERS)}"
        )
    if config["optimizer"] != "sgd" and config["nesterov"]:
        raise ConfigError("--nesterov applies to --optimizer sgd only")
    if config["activation"] not in ACTIVATIONS or config["activation"] == "softmax":
        choices = sorted(a for a in ACTIVATIONS if a != "softmax")
        raise ConfigError(
            f"unknown hidden activation {config['activation']!r}; choose from {choices}"
        )
    if config["schedule"] not in ("constant", "step", "cosine", "spsa"):
        raise ConfigError(
            f"unknown schedule {config['schedule']!r}; choose constant, step, cosine or spsa"
        )
    if ALIASES.get(config["method"], config["method"]) not in METHODS:
        raise ConfigError(f"unknown --method {config['method']!r}; choose from {sorted(METHODS)}")
    if SCHEME_ALIASES.get(config["scheme"], config["scheme"]) not in SCHEMES:
        raise ConfigError(f"unknown --scheme {config['scheme']!r}; choose from {sorted(SCHEMES)}")
    _positive_int(config, "directions")
    _positive_int(config, "local_steps")
    _positive_number(config, "target_step")
    for key in ("perturbation", "population"):
        if config[key] is not None:
            (_positive_number if key == "perturbation" else _positive_int)(config, key)
    try:
        method = build_method(config)
        scheme = get_scheme(config["scheme"], **_scheme_options(config))
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    try:
        scheme.check_method(method)
    except ValueError as error:
        raise ConfigError(
            f"--scheme {config['scheme']} cannot use --method {config['method']}: {error}"
        ) from None
    hidden = config["hidden"]
    if not isinstance(hidden, list) or any(
        isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden
    ):
        raise ConfigError(f"--hidden must be positive layer widths, got {hidden}")
    check_model_size([1, *hidden, 1])
    for key in ("val_fraction", "test_fraction"):
        _non_negative(config, key, 1.0)
    if config["val_fraction"] + config["test_fraction"] >= 1.0:
        raise ConfigError(
            "--val-fraction plus --test-fraction must leave training data (sum below 1)"
        )
    if config["scale"] not in ("auto", *SCALINGS):
        raise ConfigError(
            f"unknown --scale {config['scale']!r}; choose auto, standard, global or none"
        )
    if config["task"] not in (None, "classification", "regression"):
        raise ConfigError(f"--task must be classification or regression, got {config['task']!r}")
    try:
        parse_device(config["device"])
    except (TypeError, ValueError):
        raise ConfigError(
            f"--device {config['device']!r} is unknown; use cpu, cuda or cuda:N"
        ) from None
    if config["dtype"] not in (None, *DTYPES):
        raise ConfigError(f"--dtype must be float32 or float64, got {config['dtype']!r}")
    if config["matmul_precision"] not in PRECISION_MODES:
        modes = ", ".join(PRECISION_MODES)
        raise ConfigError(
            f"--matmul-precision must be one of {modes}, got {config['matmul_precision']!r}"
        )
    try:
        check_batch_size(config["batch_size"])
    except DataError as error:
        raise ConfigError(str(error)) from None


def build_data(config: dict):
    """The run's train/validation/test splits (``DataError`` on bad data)."""
    return load(
        config["data"],
        seed=config["seed"],
        val_fraction=config["val_fraction"],
        test_fraction=config["test_fraction"],
        scale=config["scale"],
        label_column=config["label_column"],
        num_classes=config["classes"],
        task=config["task"],
        size=config["size"],
    )


def build_model(config: dict, splits) -> MLP:
    sizes = [splits.train.num_features, *config["hidden"], splits.train.num_outputs]
    check_model_size(sizes)  # before anything is allocated
    return MLP(
        sizes,
        activation=config["activation"],
        batchnorm=config["batchnorm"],
        dropout=config["dropout"],
        init=config["init"],
        seed=config["seed"],
    )


def build_optimizer(config: dict, train_size: int):
    steps_per_epoch = num_batches(train_size, config["batch_size"])
    lr = config["lr"]
    if config["schedule"] == "constant":
        schedule = Constant(lr)
    elif config["schedule"] == "step":
        schedule = StepDecay(
            lr, step_size=config["step_epochs"] * steps_per_epoch, gamma=config["gamma"]
        )
    elif config["schedule"] == "spsa":
        schedule = SPSAGain(lr, offset=0.1 * config["epochs"] * steps_per_epoch)
    else:
        schedule = Cosine(lr, total_steps=config["epochs"] * steps_per_epoch)
    if config["warmup_epochs"]:
        schedule = LinearWarmup(schedule, config["warmup_epochs"] * steps_per_epoch)
    name = config["optimizer"]
    if name == "sgd":
        return SGD(
            schedule,
            momentum=config["momentum"],
            nesterov=config["nesterov"],
            weight_decay=config["weight_decay"],
        )
    if name == "adam":
        return Adam(schedule, weight_decay=config["weight_decay"])
    if name == "adamw":
        return AdamW(schedule, weight_decay=config["weight_decay"] or 0.01)
    return RMSProp(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"])


def build_method(config: dict):
    """The gradient method of ``--method`` with its options (``--directions``, ``--perturbation``
    (SPSA's c, MeZO's eps, ES's sigma), ``--population``)."""
    name = ALIASES.get(config["method"], config["method"])
    options: dict = {}
    if name == "forward_gradient":
        options["directions"] = config["directions"]
    perturbation = config.get("perturbation")
    if perturbation is not None and config.get("scheme") != "cmaes":
        key = {
            "spsa": "c",
            "mezo": "eps",
            "evolution_strategies": "sigma",
            "finite_differences": "eps",
        }.get(name)
        if key is None:
            raise ConfigError(f"--perturbation does not apply to --method {name}")
        options[key] = perturbation
    if config.get("population") is not None and name == "evolution_strategies":
        options["population"] = config["population"]
    return get_method(name, **options)


def _scheme_options(config: dict) -> dict:
    if config["scheme"].startswith("locoprop"):
        return {"gamma": config["target_step"], "local_steps": config["local_steps"]}
    if config["scheme"] == "cmaes":
        options = {"population": config.get("population"), "seed": config["seed"]}
        if config.get("perturbation") is not None:
            options["sigma"] = config["perturbation"]
        return options
    return {}


def build_scheme(config: dict):
    """The update scheme of ``--scheme`` (``--local-steps`` and ``--target-step`` for LocoProp)."""
    return get_scheme(config["scheme"], **_scheme_options(config))


def task_of(splits) -> str:
    return splits.train.task


def read_run_config(run_dir) -> dict:
    """The configuration a run saved in ``RUN_DIR/config.json``, completed with the defaults of
    the options added after it was written (a run from before an option existed had its
    default). A missing or unreadable file is a :class:`~.checkpoint.CheckpointError`; a file
    that is not a run configuration, or lacks an option, a :class:`ConfigError`."""
    from .checkpoint import read_json

    path = Path(run_dir) / "config.json"
    config = read_json(path, "run config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a chainrule run configuration")
    missing = sorted(set(DEFAULTS) - set(config) - set(ADDED_LATER))
    if missing:
        raise ConfigError(f"{str(path)!r} is incomplete (no {', '.join(missing)})")
    return {**ADDED_LATER, **config}


def resume_config(run_dir, given: dict) -> tuple[dict, dict]:
    """``(config, saved)``: the configuration a resumed run continues with, and the one it saved.

    A resumed run keeps its configuration, so that it replays the same arithmetic: ``given``
    (the options named on the command line, by config key) may only repeat the saved values,
    except the :data:`RESUMABLE` ones (more ``epochs``, another ``device``), which override
    them. ``epochs`` cannot change under a cosine schedule, whose shape depends on it. Every
    conflict is a one-line :class:`ConfigError` naming the first offending option, raised before
    anything is written; ``config != saved`` tells the caller to rewrite ``config.json``.

    >>> import tempfile
    >>> from chainrule.util.files import write_json
    >>> run_dir = tempfile.mkdtemp()
    >>> write_json(f"{run_dir}/config.json", make_config(data="moons", epochs=2))
    >>> config, saved = resume_config(run_dir, {"data": "moons", "epochs": 5})
    >>> config["epochs"], saved["epochs"]
    (5, 2)
    >>> resume_config(run_dir, {"lr": 0.5})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chainrule.training.recipe.ConfigError: --lr 0.5 differs from the run's 0.1; a resumed run ...
    """
    saved = {**DEFAULTS, **read_run_config(run_dir)}  # runs from before an option existed
    conflicts = [
        key for key, value in given.items() if key not in RESUMABLE and saved.get(key) != value
    ]
    if conflicts:
        key = conflicts[0]
        raise ConfigError(
            f"{_flag(key)} {given[key]!r} differs from the run's {saved.get(key)!r}; "
            "a resumed run keeps its configuration (only --epochs may change)"
        )
    config = {**saved, **{key: given[key] for key in RESUMABLE if key in given}}
    if config["epochs"] != saved["epochs"] and config["schedule"] == "cosine":
        raise ConfigError(
            "--epochs cannot change on --resume with a cosine schedule (it would change the "
            "schedule)"
        )
    validate_config(config)
    return config, saved


def _flag(key: str) -> str:
    """The command-line option of config key ``key``: ``batch_size`` is ``--batch-size``."""
    return "--" + key.replace("_", "-")
