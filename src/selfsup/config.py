"""Typed run configs: a dataclass schema, merged from a YAML file and ``key=value`` overrides.

Every config is a dataclass (nested dataclasses for sections). Loading merges, in order,
the dataclass defaults, a YAML file and command-line overrides, then freezes the result.
An unknown key or a value of the wrong type is a :class:`~selfsup.errors.ConfigError` that
names the key and lists the valid ones. YAML is parsed with a safe loader; nothing is executed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from .errors import ConfigError

T = TypeVar("T")


def valid_keys(schema: type, prefix: str = "") -> list[str]:
    """All dotted keys of a dataclass schema, nested sections included."""
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        ftype = f.type if not isinstance(f.type, str) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            keys.extend(valid_keys(type(default), prefix=name + "."))
        elif ftype is not None and dataclasses.is_dataclass(ftype):
            keys.extend(valid_keys(ftype, prefix=name + "."))
        else:
            keys.append(name)
    return keys


def _unknown_key_error(schema: type, key: str, source: str) -> ConfigError:
    keys = valid_keys(schema)
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"Unknown config key '{key}' in {source}.{hint} Valid keys: {', '.join(keys)}"
    )


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix=f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"Override '{item}' is not of the form key=value (for example optim.lr=0.05)."
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override '{item}' has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot parse the value of override '{item}': {exc}") from exc
    return key, value


def _merge(schema: type, layers: list[tuple[str, dict]]) -> DictConfig:
    base = OmegaConf.structured(schema)
    known = set(valid_keys(schema))
    for source, layer in layers:
        for key in _flatten(layer):
            if key not in known:
                raise _unknown_key_error(schema, key, source)
        try:
            base = OmegaConf.merge(base, OmegaConf.create(layer))
        except (ConfigKeyError, ConfigAttributeError) as exc:
            raise _unknown_key_error(schema, str(exc.full_key), source) from exc
        except ValidationError as exc:
            raise ConfigError(
                f"Wrong type for config key '{exc.full_key}' in {source}: "
                f"{str(exc.msg).splitlines()[0]}"
            ) from exc
        except OmegaConfBaseException as exc:
            raise ConfigError(f"Invalid config in {source}: {exc}") from exc
    return base


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping safely; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist; the recipes are in configs/.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file '{path}' is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}); save it as UTF-8 YAML.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of keys to values.")
    return data


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def load_config(
    schema: type[T],
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> T:
    """Build a frozen config object of type ``schema``.

    Layers, later wins: dataclass defaults, ``base`` (e.g. a resumed run's config), the YAML
    file at ``path``, then ``overrides`` (``"optim.lr=0.05"``; values parsed as YAML scalars).
    """
    layers: list[tuple[str, dict]] = []
    if base:
        layers.append(("the saved run config", base))
    if path is not None:
        layers.append((f"config file '{path}'", read_yaml(path)))
    for item in overrides:
        key, value = _parse_override(item)
        layers.append((f"override '{item}'", _nest(key, value)))
    merged = _merge(schema, layers)
    obj = OmegaConf.to_object(merged)
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
