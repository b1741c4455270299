"""The config field toolkit: dataclass fields that carry their help text, the checks every config runs, and
the sorting of flat settings into config sections. Every use builds its configs from these."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
import warnings
from dataclasses import field
from typing import Any

from rnnlm.core.errors import ConfigError


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and its help text (lists get a factory).

    ``old_names=("impl",)`` names what the field was called before: a hidden flag (``--impl``), a deprecated
    keyword setting and an older config.json's key (``renamed_keys``) still reach it, so that scripts, notebooks
    and runs made before the rename keep working.
    """
    meta = {"help": help, **kw}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def require(ok: bool, name: str, rule: str, value: Any) -> None:
    """Raise a ConfigError naming the flag, the rule and the value when ok is false."""
    if not ok:
        raise ConfigError(f"{flag_name(name)} {rule}, got {value!r}")


def check_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{flag_name(f.name)} must be one of {', '.join(choices)}, got {value!r}")


def sections_from_dict(d: dict[str, Any], sections: dict[str, type]) -> dict[str, Any]:
    """Each section of a run config's JSON as its dataclass, a missing key at the class's default; an unknown
    key is an error, so that typos never pass silently. The caller has checked that ``d`` holds no other
    sections (its message names the kind of run)."""
    parts = {}
    for name, cls in sections.items():
        values = d.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a JSON object")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"config section {name!r} has unknown keys {unknown}")
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not _is_a(value, hints[key]):
                raise ConfigError(
                    f"config section {name!r}: {key} must be {_type_name(hints[key])}, not {_shown(value)}"
                )
        parts[name] = cls(**values)
    return parts


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type: a file's ``"hidden": "512"`` or ``[1]`` is refused here, with
    the field's name, rather than failing later inside a model (or not at all). An int field takes a whole float
    (``2.0``, as a keyword setting may have saved it); a float field any finite or infinite number, never NaN."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_is_a(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is an int to Python, never a count or a rate to a config
    if hint is int:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if hint is float:
        return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return "a list of " + "/".join(_type_name(h) for h in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def old_names(sections: dict[str, type]) -> dict[str, str]:
    """Each former name of a setting (a field's ``old_names``) -> its name now."""
    return {
        old: f.name
        for cls in sections.values()
        for f in dataclasses.fields(cls)
        for old in f.metadata.get("old_names", ())
    }


def renamed_keys(d: dict[str, Any], sections: dict[str, type]) -> dict[str, Any]:
    """A run config's JSON written before some settings were renamed, with each old key under its new name
    (``model.impl`` -> ``model.engine``); the caller calls it only for the format versions that had the old
    names, so that a newer file with an old key is still an error."""
    out = dict(d)
    for name, cls in sections.items():
        values = d.get(name)
        if not isinstance(values, dict):
            continue  # sections_from_dict names the section that is not an object
        renames = old_names({name: cls})
        if renames.keys() & values.keys():
            out[name] = {renames.get(k, k): v for k, v in values.items()}
    return out


def renamed_keyword(value: Any, old_value: Any, old: str, new: str, where: str) -> Any:
    """The value of a keyword argument that was renamed from ``old`` to ``new``: ``old_value`` (with a
    DeprecationWarning, so that old notebooks keep working and say what to change) when it is given, else
    ``value``. Both given and different is a TypeError."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise TypeError(f"{where}() got {new}={value!r} and {old}={old_value!r} (its old name); give {new}= only")
    warnings.warn(f"{where}({old}=...) is deprecated; use {new}=", DeprecationWarning, stacklevel=3)
    return old_value


def field_owners(sections: dict[str, type]) -> dict[str, str]:
    """Each setting's name -> the section that owns it. A name in two sections is a bug in the
    configs, not a user error: a flat setting (hidden=512) must belong to exactly one section."""
    owner: dict[str, str] = {}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            if f.name in owner:
                raise TypeError(f"setting {f.name!r} is defined in both the {owner[f.name]} and {section} configs")
            owner[f.name] = section
    return owner


def split_overrides(flat: dict[str, Any], sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """Sort flat keyword settings (hidden=512, lr=0.01) into the config sections of one kind of run.

    An unknown name raises TypeError with the closest known names; a setting's old name (``impl``) still works,
    with a DeprecationWarning. A path given as a ``pathlib.Path`` (``out=Path("runs") / "x"``, ``paths=[Path(...)]``)
    becomes the string a config holds.
    """
    owner = field_owners(sections)
    renamed = old_names(sections)
    out: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for name, value in flat.items():
        if name in renamed and name not in owner:
            # stacklevel 4: the user's call of train(), through split_settings and its use's train()
            warnings.warn(f"the setting {name}= is deprecated; use {renamed[name]}=", DeprecationWarning, stacklevel=4)
            name = renamed[name]
        if name not in owner:
            import difflib

            close = difflib.get_close_matches(name, owner, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown setting {name!r}{hint}")
        out[owner[name]][name] = _path_strings(value)
    return out


def _path_strings(value: Any) -> Any:
    """``value`` with any os.PathLike (at the top, or in a list or tuple) as its string."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return type(value)(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
    return value
