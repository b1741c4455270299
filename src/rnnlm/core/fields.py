"""The config field toolkit: dataclass fields that carry their help text, the checks every config runs, and
the sorting of flat settings into config sections. Every use builds its configs from these."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from rnnlm.core.errors import ConfigError


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and its help text (lists get a factory)."""
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
        parts[name] = cls(**values)
    return parts


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

    An unknown name raises TypeError with the closest known names.
    """
    owner = field_owners(sections)
    out: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for name, value in flat.items():
        if name not in owner:
            import difflib

            close = difflib.get_close_matches(name, owner, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown setting {name!r}{hint}")
        out[owner[name]][name] = value
    return out
