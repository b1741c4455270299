"""Command-line flags generated from config dataclasses, so that a flag, its default and its help text live
next to the field they set."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection
from typing import Any


def _none_or(kind: type) -> Any:
    """Argument type that also accepts 'none' (to lift a limit, e.g. --epochs none)."""

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__
    return convert


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: Collection[str] = (), defaults: Any = None
) -> None:
    """One flag per field of cls; values land in dest 'prefix.field' only when given (SUPPRESS).

    Fields named in ``skip`` get no flag; ``defaults`` (an instance of cls) gives the defaults shown in
    the help when they differ from cls().
    """
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        default = getattr(defaults, f.name)
        shown = "none" if default is None else ("" if default == [] else default)
        help_text = meta["help"] + (f" (default: {shown})" if shown != "" and "default" not in meta["help"] else "")
        help_text = help_text.replace("%", "%%")
        kw: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS, "dest": prefix + f.name}
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kw["nargs"] = "*" if meta.get("positional") else "+"
            kw["metavar"] = "PATH" if "path" in f.name else f.name.upper()
        else:
            kw["type"] = _none_or(base) if optional else base
            if "choices" not in kw:
                kw["metavar"] = "N" if base in (int, float) else f.name.upper()
        if meta.get("positional"):
            kw.pop("dest")
            kw.pop("default")
            parser.add_argument(prefix + f.name, **kw)
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def add_load_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every command that loads a trained run: which checkpoint, on which device, with which engine."""
    p.add_argument(
        "--checkpoint",
        default="best",
        help="best, last, or a .safetensors path (default: best, "
        "which falls back to last when the run had no validation data).",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu).")
    p.add_argument(
        "--impl",
        default=None,
        help="Engine for the recurrence (scratch, fused, auto; default: the run's own). Every engine reads "
        "every run's weights.",
    )
