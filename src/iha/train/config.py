"""Run configuration: typed sections, TOML/YAML files, ``--set`` overrides, strict validation.

A run is described by one file (TOML, or YAML when PyYAML is installed) with the tables below;
every key is optional and falls back to the dataclass default. ``--set key.sub=value`` overrides
any key; the value is parsed as a TOML value (``3``, ``1e-3``, ``true``, ``[0.9, 0.95]``,
``"text"``), a bare word is a string, and ``none``/``null`` clears an optional key.

Unknown keys and values of the wrong type raise :class:`ConfigError` (a ``ValueError``) naming
the full dotted key, before anything is written to disk.

The ``[model]`` table is handed to :class:`iha.models.ModelConfig` (optionally starting from
``preset = "name"``); its keys and types are checked against that dataclass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iha.validate import check_int, check_number, check_positive_number

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration key is unknown or has a value of the wrong type or range."""


@dataclass
class DataConfig:
    """Where tokens come from and how they are cut into training sequences.

    ``source``: ``"text"`` (``.txt`` files, one document per blank-line separated paragraph),
    ``"jsonl"`` (one JSON object per line, text under ``text_field``, or ``prompt_field`` +
    ``response_field`` with the loss on the response only), ``"hf"`` (a Hugging Face dataset by
    name, streamed), ``"synthetic"`` (a generator from :mod:`iha.tasks`, see ``task``), or
    ``"package.module:function"`` (a plugin returning a document source, see
    :func:`iha.train.data.build_data`).
    """

    source: str = "text"
    path: str | None = None  # file, directory or glob for text/jsonl
    val_path: str | None = None  # separate validation files; else val_fraction of documents
    val_fraction: float = 0.05
    text_field: str = "text"
    prompt_field: str | None = None
    response_field: str | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_val_split: str | None = None
    hf_streaming: bool = True
    task: str | None = None  # synthetic task name
    task_args: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "byte"  # "byte" or a Hugging Face tokenizer directory / name
    seq_len: int = 256  # tokens per training sequence
    shuffle: bool = True  # shuffle documents (per epoch, seeded)
    append_eos: bool = True  # end-of-sequence token after every document


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr`` (the paper's recipe)."""

    lr: float = 8e-4
    min_lr_ratio: float = 0.01
    warmup_steps: int = 1000
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    mixing_lr: float | None = None  # learning rate of IHA mixing parameters (None: lr)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class TrainSection:
    """Steps, batch geometry, precision, logging and validation cadence.

    ``batch_size`` is the global batch in sequences per optimiser step, whatever the number of
    processes; each process runs ``micro_batch_size`` sequences per forward pass and accumulates
    ``batch_size / (micro_batch_size * world_size)`` of them.
    """

    max_steps: int = 1000
    batch_size: int = 8
    micro_batch_size: int | None = None  # None: batch_size / world_size (no accumulation)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPUs that support it
    compile: bool | Literal["full", "regional"] = False  # regional: each block (fast compile)
    activation_checkpointing: bool = False  # recompute layer activations in backward
    log_every: int = 10
    val_every: int = 0  # 0: validate only at the end
    val_batches: int = 4
    init_from: str | None = None  # run dir or checkpoint dir whose model weights start this run


@dataclass
class CheckpointSection:
    """How often to save and how many checkpoints to keep."""

    every: int = 0  # steps between checkpoints; 0: only at the end
    keep: int = 3


@dataclass
class LoggingSection:
    """Terminal output, TensorBoard and plots."""

    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    tensorboard: Literal["auto", "on", "off"] = "auto"
    plots: bool = True  # write PNG plots into RUN_DIR/plots at the end


@dataclass
class DistributedSection:
    """Multi-process training (used when launched by ``torchrun``)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    timeout_s: int = 1800


@dataclass
class RunConfig:
    """A whole training run. ``model`` holds :class:`iha.models.ModelConfig` keys (+ ``preset``)."""

    run_dir: str = "runs/default"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML serialisable)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# type checking of plain values against dataclass annotations


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        args = typing.get_args(hint) or (Any,)
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "table"
    if hint is type(None):
        return "none"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` checked against the annotation ``hint`` (ints are accepted for floats).

    Raises :class:`ConfigError` naming ``key`` and the expected type when it does not fit.
    """
    origin = typing.get_origin(hint)
    bad = ConfigError(f"config key '{key}' must be {_type_name(hint)}, got {value!r}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value is None and "none" in typing.get_args(hint):
            return "none"  # --set key=none parses as "no value"; here it is the choice 'none'
        if value in typing.get_args(hint) and isinstance(value, str):
            return value
        raise ConfigError(
            f"config key '{key}' must be one of {', '.join(map(repr, typing.get_args(hint)))}, "
            f"got {value!r}"
        )
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise bad
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
            return float(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad  # pragma: no cover - an annotation this module does not know


def _build_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a plain dict, checking keys and types recursively."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key '{full}'; accepted keys in this table: "
                f"{', '.join(sorted(names))}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build_dataclass(hint, value, f"{full}.")
        else:
            kwargs[key] = coerce(value, hint, full)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# range checks that types alone do not express


def _check(check: Callable[..., Any], key: str, value: Any, *bounds: Any) -> None:
    """Run the :mod:`iha.validate` ``check`` on a config value (the same rule and message as
    everywhere in the library); its ValueError becomes a :class:`ConfigError` on the key."""
    try:
        check(f"'{key}'", value, *bounds)
    except ValueError as e:
        raise ConfigError(f"config key {e}") from e


def validate(cfg: RunConfig) -> None:
    """Check value ranges and cross-field consistency (types are checked on construction)."""
    d, o, t = cfg.data, cfg.optim, cfg.train
    _check(check_int, "data.seq_len", d.seq_len, 1)
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"config key 'data.val_fraction' must be in [0, 1), got {d.val_fraction}")
    if (d.prompt_field is None) != (d.response_field is None):
        raise ConfigError("config keys 'data.prompt_field' and 'data.response_field' go together")
    builtin = ("text", "jsonl", "hf", "synthetic")
    if d.source not in builtin and ":" not in d.source:
        raise ConfigError(
            f"config key 'data.source' must be one of {', '.join(builtin)} or "
            f"'package.module:function', got {d.source!r}"
        )
    if d.source in ("text", "jsonl") and not d.path:
        raise ConfigError(f"config key 'data.path' is required when data.source = {d.source!r}")
    if d.source == "hf" and not d.hf_name:
        raise ConfigError("config key 'data.hf_name' is required when data.source = 'hf'")
    if d.source == "synthetic" and not d.task:
        raise ConfigError("config key 'data.task' is required when data.source = 'synthetic'")
    _check(check_positive_number, "optim.lr", o.lr)
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ConfigError(
            f"config key 'optim.min_lr_ratio' must be in [0, 1], got {o.min_lr_ratio}"
        )
    _check(check_int, "optim.warmup_steps", o.warmup_steps, 0)
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ConfigError(f"config key 'optim.betas' must be two numbers in [0, 1), got {o.betas}")
    _check(check_positive_number, "optim.eps", o.eps)
    _check(check_number, "optim.weight_decay", o.weight_decay, 0)
    if o.mixing_lr is not None:
        _check(check_positive_number, "optim.mixing_lr", o.mixing_lr)
    _check(check_number, "optim.grad_clip", o.grad_clip, 0)
    _check(check_int, "train.max_steps", t.max_steps, 1)
    _check(check_int, "train.batch_size", t.batch_size, 1)
    if t.micro_batch_size is not None:
        _check(check_int, "train.micro_batch_size", t.micro_batch_size, 1)
    _check(check_int, "train.log_every", t.log_every, 1)
    _check(check_int, "train.val_every", t.val_every, 0)
    _check(check_int, "train.val_batches", t.val_batches, 0)
    if t.device != "auto" and t.device != "cpu" and not t.device.startswith("cuda"):
        raise ConfigError(
            f"config key 'train.device' must be auto, cpu, cuda or cuda:N, got {t.device!r}"
        )
    _check(check_int, "checkpoint.every", cfg.checkpoint.every, 0)
    _check(check_int, "checkpoint.keep", cfg.checkpoint.keep, 1)
    _check(check_int, "distributed.timeout_s", cfg.distributed.timeout_s, 1)
    if not cfg.run_dir:
        raise ConfigError("config key 'run_dir' must be a non-empty path")


def batch_geometry(cfg: RunConfig, world_size: int) -> tuple[int, int]:
    """``(micro_batch_size, grad_accum_steps)`` for ``world_size`` processes; errors if uneven."""
    t = cfg.train
    if t.batch_size % world_size:
        raise ConfigError(
            f"config key 'train.batch_size'={t.batch_size} must be divisible by the number of "
            f"processes ({world_size})"
        )
    per_rank = t.batch_size // world_size
    micro = t.micro_batch_size or per_rank
    if per_rank % micro:
        raise ConfigError(
            f"config key 'train.micro_batch_size'={micro} must divide batch_size / world_size "
            f"= {per_rank}"
        )
    return micro, per_rank // micro


# ---------------------------------------------------------------------------------------------
# the [model] table, checked against iha.models.ModelConfig


def resolve_model_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Expand ``preset`` and check every key and type against ``iha.models.ModelConfig``.

    A table with ``factory = "package.module:function"`` builds another model instead (for
    example ``iha.hf.convert:sft_model_factory`` for a converted Hugging Face checkpoint): the
    function receives the other keys of the table and checks them itself.

    Returns the full ``ModelConfig.to_dict()`` (every field), so a saved run does not depend on
    preset definitions that may change later.
    """
    from iha.models import ModelConfig, get_preset

    raw = dict(raw)
    if "factory" in raw:  # a user model: its factory checks the rest of the table
        factory = raw["factory"]
        if not isinstance(factory, str) or ":" not in factory:
            raise ConfigError(
                f"config key 'model.factory' must be 'package.module:function', got {factory!r}"
            )
        return raw
    preset = raw.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(f"config key 'model.preset' must be str, got {preset!r}")
        try:
            get_preset(preset)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"config key 'model.preset': {e}") from e
    hints = typing.get_type_hints(ModelConfig)
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    table: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key 'model.{key}'; accepted keys: preset, {', '.join(names)}"
            )
        table[key] = coerce(value, hints[key], f"model.{key}")
    try:
        # the table's keys go in before the config is made, so values derived from them (the
        # IHA window from max_position_embeddings) use the table's context, not the preset's
        made = ModelConfig.from_dict(table) if preset is None else get_preset(preset, **table)
        return made.to_dict()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid [model] table: {e}") from e


# ---------------------------------------------------------------------------------------------
# files and overrides


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({e})") from e
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ConfigError("YAML configs need PyYAML: pip install pyyaml") from e
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from e
    else:
        raise ConfigError(f"config file {str(path)!r} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table at the top level")
    return data


def parse_override_value(text: str) -> Any:
    """A ``--set`` value: a TOML value if it parses as one, ``none``/``null`` -> None, else str."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """One ``--set`` string ``key.sub=value`` -> (["key", "sub"], parsed value).

    Raises :class:`ConfigError` when there is no ``=`` or a part of the key is empty.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {item!r}: empty key")
    return parts, parse_override_value(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (a new dict; ``raw`` is not modified)."""
    out = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is not a table")
            node = nxt
        node[parts[-1]] = value
    return out


def config_from_dict(raw: dict[str, Any], resolve_model: bool = True) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain nested dict."""
    cfg = _build_dataclass(RunConfig, raw, "")
    validate(cfg)
    if resolve_model:
        cfg.model = resolve_model_dict(_model_from_init(cfg))
    return cfg


def _model_from_init(cfg: RunConfig) -> dict[str, Any]:
    """With ``train.init_from`` and a ``[model]`` table that names no preset or factory, the
    model is the init run's, with the table's keys (e.g. ``--set model.*``) applied on top, so a
    fine-tuning config need not repeat the pre-trained architecture."""
    if not cfg.train.init_from or "preset" in cfg.model or "factory" in cfg.model:
        return cfg.model
    from iha.models import ModelConfig
    from iha.train import checkpoint as ckpt

    try:
        found = ckpt.resolve_checkpoint(cfg.train.init_from)
        base = dict(ckpt.read_meta(found)["config"]["model"])
        if "factory" not in base:  # a run saved without a stored IHA window gets it now, once,
            base = ModelConfig.from_dict(base).to_dict()  # from its own context
    except ckpt.CheckpointError as e:
        raise ConfigError(f"config key 'train.init_from': {e}") from e
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise ConfigError(
            f"config key 'train.init_from': no checkpoint with a model config at "
            f"{cfg.train.init_from!r} ({e})"
        ) from e
    return {**base, **cfg.model}


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, resolve_model: bool = True
) -> RunConfig:
    """Read a config file (or start from defaults), apply ``--set`` overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []), resolve_model=resolve_model)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of plain values as TOML. Keys holding None are left out."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def find_config(name_or_path: str) -> Path:
    """A config path, or a preset name looked up in ``./configs``, the repository's configs/ and
    the configs shipped inside the installed package (``iha/configs``)."""
    p = Path(name_or_path)
    if p.suffix in (".toml", ".yaml", ".yml") or p.exists():
        return p
    repo_configs = Path(__file__).resolve().parents[3] / "configs"
    package_configs = Path(__file__).resolve().parents[1] / "configs"
    for folder in (Path("configs"), repo_configs, package_configs):
        for suffix in (".toml", ".yaml", ".yml"):
            candidate = folder / f"{name_or_path}{suffix}"
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"config {name_or_path!r} is neither a file nor a preset in ./configs or {repo_configs}"
    )
