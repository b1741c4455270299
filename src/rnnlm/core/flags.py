"""Command-line flags generated from config dataclasses, so that a flag, its default and its help text live
next to the field they set."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
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
    the help when they differ from cls(). A field's ``old_names`` become hidden flags of the same dest
    (``--impl`` for ``--engine``), so that scripts written before a rename keep working.
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
            for old in meta.get("old_names", ()):
                parser.add_argument("--" + old.replace("_", "-"), **{**kw, "help": argparse.SUPPRESS})


def add_load_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every command that loads a trained run: which checkpoint, on which device, with which engine."""
    p.add_argument(
        "--checkpoint",
        default="best",
        help="best, last, or a .safetensors path (default: best, "
        "which falls back to last when the run had no validation data).",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu).")
    add_engine_flag(
        p,
        "Engine for the recurrence (scratch, fused, auto; default: the run's own). Every engine reads every run's "
        "weights.",
    )


def add_engine_flag(p: argparse.ArgumentParser, help: str) -> None:
    """``--engine`` of a command that loads a run (dest ``engine``, None = the run's own), with ``--impl``, its
    name before rnnlm named one concept one way, kept as a hidden alias for existing scripts."""
    p.add_argument("--engine", default=None, help=help)
    p.add_argument("--impl", dest="engine", default=None, help=argparse.SUPPRESS)


# -- the command-line reference (docs/cli.md), generated from the parser -----------------------------------
# argparse offers no public way to walk a parser's arguments and subcommands; its ``_actions`` and
# ``_action_groups`` lists have been stable since Python 3.2, and a change would fail the test that compares
# docs/cli.md with this output rather than pass silently.

_DEFAULT_AT_END = re.compile(r"\s*\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)\.?$")


def render_markdown(parser: argparse.ArgumentParser, intro: str = "") -> str:
    """Every subcommand of ``parser`` and each of its flags (name, default, help) as a Markdown page.

    The text is what ``--help`` says, without line wrapping, so the page does not depend on the terminal;
    a default that the help text ends with (the generated flags') moves to the table's default column.
    Arguments hidden from ``--help`` stay hidden here.
    """
    out = [f"# `{parser.prog}` command-line reference", ""]
    if intro:
        out += [intro, ""]
    _render(parser, out, level=1)
    return "\n".join(out).rstrip() + "\n"


def _render(parser: argparse.ArgumentParser, out: list[str], level: int) -> None:
    """Append the description, the argument tables and then the subcommands of a parser whose heading (of
    this level) is written."""
    if parser.description:
        out += [_one_line(parser.description), ""]
    subcommands = None
    for group in parser._action_groups:
        rows = []
        for action in group._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                subcommands = action
            elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
                rows.append(_row(parser, action))
        if rows:
            out += [f"{'#' * (level + 1)} {group.title}", "", "| argument | default | description |"]
            out += ["| --- | --- | --- |", *rows, ""]
    if subcommands is not None:
        for name, sub in subcommands.choices.items():
            out += [f"{'#' * (level + 1)} `{parser.prog} {name}`", ""]
            _render(sub, out, level + 1)


def _row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One table row: the argument as typed, its default and its help."""
    text = _one_line(action.help % {**vars(action), "prog": parser.prog}) if action.help else ""
    default = ""
    if action.default is not None and action.default is not argparse.SUPPRESS and action.nargs != 0:
        default = str(action.default)
        text = _DEFAULT_AT_END.sub("", text) if _DEFAULT_AT_END.search(text) else text
    else:
        found = _DEFAULT_AT_END.search(text)
        if found:
            default, text = found.group(1), text[: found.start()]
    if text and not text.endswith((".", "?", "!", ")")):
        text += "."
    name = ", ".join(action.option_strings) if action.option_strings else _metavar(action)
    if action.option_strings and action.nargs != 0:
        name += " " + _args(action)
    return f"| `{name}` | {_cell(default)} | {_cell(text)} |"


def _metavar(action: argparse.Action) -> str:
    if action.metavar:
        return str(action.metavar)
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _args(action: argparse.Action) -> str:
    """The value part of a flag as argparse's usage writes it (N, X [X ...], [X])."""
    m = _metavar(action)
    return {"?": f"[{m}]", "*": f"[{m} ...]", "+": f"{m} [{m} ...]"}.get(action.nargs, m)  # type: ignore[arg-type]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


class MarkdownHelpAction(argparse.Action):
    """A hidden ``--help-markdown``: print the command-line reference (docs/cli.md) and exit, as --help does."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        sys.stdout.write(render_markdown(parser, MARKDOWN_INTRO))
        parser.exit(0)


MARKDOWN_INTRO = (
    "Every subcommand and flag, generated from the parser (and so from the config dataclasses, where each "
    "field keeps its default and help text) by `rnnlm --help-markdown > docs/cli.md`. Do not edit this file by "
    "hand: a test fails when it differs from the generator's output. `-h`/`--help` works on every subcommand."
)
