"""Typed configuration: dataclass schemas, YAML files, overlays and ``--set`` overrides.

Every algorithm owns one dataclass (nested dataclasses for its sections) whose defaults are
the reference hyperparameters. A config is resolved as::

    dataclass defaults  <-  --config FILE  <-  --config OVERLAY ...  <-  --set a.b=value ...

and validated completely (unknown keys, wrong types, out-of-range values, the schema's own
``validate`` hooks) before any work starts. Every problem is a :class:`ConfigError` naming the
key, which the CLI prints as one line with exit code 2.

Field options go through :func:`option`: ``min``/``max`` bounds, ``choices``, a help text, and
``resume_ok`` for keys that may change when a run is resumed (budgets, logging intervals).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from tf_rlnas.errors import ConfigError

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, default_factory: Any = _MISSING, help: str = "",
           min: float | None = None, max: float | None = None, gt: float | None = None,
           min_len: int | None = None, choices: tuple | None = None, resume_ok: bool = False) -> Any:
    """A dataclass field with validation metadata.

    ``min``/``max``: inclusive bounds; ``gt``: a strict lower bound (a probability that must not be 0,
    a temperature); for lists they apply to every element, and ``min_len`` bounds the length (e.g.
    ``min_len=1`` where an empty layer list is not a valid model)."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "min_len": min_len, "choices": choices,
            "resume_ok": resume_ok}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, **overrides: Any) -> Any:
    """A field holding section ``cls`` with some of its defaults changed for this algorithm
    (``run: RunConfig = section(RunConfig, checkpoint_every=1)``)."""
    return dataclasses.field(default_factory=lambda: cls(**overrides))


def schema(cls: type) -> type:
    """``@dataclass`` for an algorithm's top-level config: a field typed with a section dataclass and
    given no default holds that section with its own defaults (``data: EnasData`` alone)."""
    hints = get_type_hints(cls)
    for name in cls.__dict__.get("__annotations__", {}):
        if name not in cls.__dict__ and dataclasses.is_dataclass(hints[name]):
            setattr(cls, name, dataclasses.field(default_factory=hints[name]))
    return dataclasses.dataclass(cls)


@dataclasses.dataclass
class DistributeConfig:
    """The ``distribute:`` section of the algorithms with a distributed learner (ENAS, PlaNet)."""

    strategy: Literal["none", "mirrored", "multi_worker"] = option(
        "none", help="tf.distribute strategy of the learner (MirroredStrategy on one host, "
                     "MultiWorkerMirroredStrategy across hosts via TF_CONFIG)")
    cpu_devices: int = option(0, min=0, help="split the CPU into N logical devices (testing mirrored on CPU)")


@dataclasses.dataclass
class RunConfig:
    """Run bookkeeping shared by every algorithm (the ``run:`` section)."""

    name: str = option("", help="run name; default: the algorithm name. Run dir = root/name")
    root: str = option("runs", help="parent folder of run directories")
    seed: int = option(0, min=0, help="seeds numpy, TF and every environment once")
    checkpoint_every: int = option(50, min=1, resume_ok=True,
                                   help="checkpoint every N iterations (updates/epochs)")
    keep_checkpoints: int = option(3, min=1, resume_ok=True, help="latest checkpoints kept")
    log_every: int = option(1, min=1, resume_ok=True, help="TensorBoard scalars every N iterations")
    intra_op_threads: int = option(0, min=0, resume_ok=True,
                                   help="TF intra-op threads (0 = TF default)")
    inter_op_threads: int = option(0, min=0, resume_ok=True,
                                   help="TF inter-op threads (0 = TF default)")


# --------------------------------------------------------------------------------------------
# YAML reading
# --------------------------------------------------------------------------------------------

def read_yaml(path: str) -> dict:
    """Read one YAML mapping; missing, unreadable or malformed files are ConfigErrors."""
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise ConfigError(f"config path is a directory, not a file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------
# dict <-> dataclass
# --------------------------------------------------------------------------------------------

def to_dict(cfg: Any) -> dict:
    """A plain nested dict (lists for tuples) suitable for YAML."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_YAML11_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints widened to float)."""
    origin = get_origin(tp)
    bad = ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool) != any(isinstance(a, bool) for a in get_args(tp)):
            raise ConfigError(f"config key '{key}' must be one of "
                              f"{', '.join(repr(a) for a in get_args(tp))}; got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise bad
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if origin is tuple and Ellipsis not in get_args(tp) and len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {len(value)}")
        elem = args[0] if args else Any
        out = [_coerce(v, args[i] if origin is tuple and Ellipsis not in get_args(tp) else elem,
                       f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping (section), got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()) and math.isfinite(float(value)):
            return float(value)  # YAML 1.1 reads 3e-3 (no dot) as a string; it means the number
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise bad
    if isinstance(value, tp):
        return value
    raise bad


def _check_bounds(value: Any, meta: typing.Mapping, key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(repr, choices))}; got {value!r}")
    lo, hi, gt, min_len = meta.get("min"), meta.get("max"), meta.get("gt"), meta.get("min_len")
    if isinstance(value, (list, tuple)) and min_len is not None and len(value) < min_len:
        raise ConfigError(f"config key '{key}' must have at least {min_len} entr{'y' if min_len == 1 else 'ies'}, "
                          f"got {list(value)!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if lo is not None and v < lo:
            raise ConfigError(f"config key '{key}' must be >= {lo}, got {v!r}")
        if gt is not None and v <= gt:
            raise ConfigError(f"config key '{key}' must be > {gt}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(f"config key '{key}' must be <= {hi}, got {v!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; every key must exist in the schema."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            near = [n for n in fields if n.startswith(str(k)[:3])]
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{prefix}{k}'{hint}; "
                              f"valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            value = _coerce(data[name], hints[name], key)
            _check_bounds(value, f.metadata, key)
            kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def deep_merge(base: dict, over: dict, schema: type, source: str, prefix: str = "") -> dict:
    """Merge ``over`` onto ``base`` (both plain dicts shaped like ``schema``)."""
    hints = get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    out = dict(base)
    for k, v in over.items():
        key = prefix + str(k)
        if k not in names:
            near = [n for n in names if n.startswith(str(k)[:3])]
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{key}' in {source}{hint}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{key}' in {source} must be a mapping (section), got {v!r}")
            out[k] = deep_merge(out.get(k, {}), v, tp, source, key + ".")
        elif (tp is dict or get_origin(tp) is dict) and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}  # free-form mappings (env kwargs) merge key by key
        else:
            out[k] = v
    return out


def parse_set(expr: str, schema: type) -> dict:
    """``a.b=value`` -> nested dict, the value parsed as YAML and typed by the schema."""
    if "=" not in expr:
        raise ConfigError(f"--set expects key=value, got {expr!r}")
    path, raw = expr.split("=", 1)
    parts = [p.strip() for p in path.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set has an empty key in {expr!r}")
    cls = schema
    for i, p in enumerate(parts):
        if cls is dict or get_origin(cls) is dict:  # free-form mapping: the rest are its keys
            tp = Any
            break
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"unknown config key '{'.'.join(parts)}' in --set "
                              f"('{'.'.join(parts[:i])}' is not a section)")
        hints = get_type_hints(cls)
        if p not in hints or p not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"unknown config key '{'.'.join(parts[:i + 1])}' in --set")
        tp = hints[p]
        cls = tp
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp)
                     and not isinstance(value, (list, dict)) and value is not None):
        value = raw  # keep text exactly as given: --set run.name=007 stays '007'
    nested: dict = value
    for p in reversed(parts):
        nested = {p: nested}
    return nested


def _removed_keys(schema: type, data: dict, drop: bool, source: str = "") -> dict:
    """The schema's ``REMOVED`` keys (dotted path -> why): ``drop`` them from a saved config (runs of
    an earlier version still resume), else refuse them in new input with the reason."""
    removed = getattr(schema, "REMOVED", None) or {}
    for key, why in removed.items():
        *sections, leaf = key.split(".")
        node = data
        for s in sections:
            node = node.get(s) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            if not drop:
                raise ConfigError(f"config key '{key}' in {source} was removed: {why}")
            node.pop(leaf)
    return data


def drop_removed(schema: type, data: dict) -> dict:
    """A saved config without the keys the schema has removed since (see :func:`_removed_keys`)."""
    return _removed_keys(schema, copy.deepcopy(data), drop=True)


def resolve(schema: type, files: list[str], sets: list[str], base: dict | None = None) -> Any:
    """Resolve and validate a config of class ``schema`` from files and --set expressions.

    Files may carry a top-level ``algo`` key; it is checked by the caller and dropped here.
    """
    data = to_dict(schema())
    if base:
        data = deep_merge(data, drop_removed(schema, base), schema, "the saved config")
    for path in files:
        over = dict(read_yaml(path))
        over.pop("algo", None)
        data = deep_merge(data, _removed_keys(schema, over, False, path), schema, path)
    removed = getattr(schema, "REMOVED", None) or {}
    for expr in sets:
        key = expr.split("=", 1)[0].strip()
        if key in removed:
            raise ConfigError(f"config key '{key}' in --set was removed: {removed[key]}")
        data = deep_merge(data, parse_set(expr, schema), schema, "--set")
    return from_dict(schema, data)


def flat_scalars(cfg: Any) -> dict[str, bool | int | float | str]:
    """The config as ``{"section.key": value}`` with scalar values only (lists as their YAML-ish
    text, empty dicts dropped): what TensorBoard's HParams dashboard can show and sort."""
    out: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, (bool, int, float, str)):
                out[key] = v
            elif v is None:
                out[key] = "none"
            else:
                out[key] = str(v)
    walk(to_dict(cfg), "")
    return out


def diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any, bool]]:
    """Differences between two configs of one schema: (key, old, new, resume_ok)."""
    out = []
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(va):
            out += diff(va, vb, key + ".")
        elif va != vb:
            out.append((key, va, vb, bool(f.metadata.get("resume_ok"))))
    return out


def dump_yaml(cfg: Any, algo: str) -> str:
    return yaml.safe_dump({"algo": algo, **to_dict(cfg)}, sort_keys=False)


def describe(schema: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every leaf key: used by ``tf_rlnas list --keys``."""
    hints = get_type_hints(schema)
    inst = schema()
    rows = []
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, _type_name(tp), getattr(inst, f.name), f.metadata.get("help", "")))
    return rows
