"""Command-line flags built from settings dataclasses.

A setting is declared once, as a dataclass field made by `setting(...)` with its
default and help text; a CLI adds the flags of a whole dataclass with
`add_flags` and rebuilds the dataclass from what the user typed with
`from_args`. Validation stays in the dataclass (`__post_init__`), so a bad value
is refused with the same sentence from the CLI and from Python.

How a field becomes a flag (`name` is the field's, or the `flag` given):
  bool, default False      --name               (sets True)
  bool, default True       --no_name            (sets False)
  Optional[bool]           --name [BOOL]        (bare: True; with negatable=True also --no_name)
  int / float / str        --name VALUE         (Optional[...]: also "none")
Fields without help text, or with `cli=False`, get no flag."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Type, TypeVar

T = TypeVar("T")

_TRUE = ("1", "true", "t", "yes", "on")
_FALSE = ("0", "false", "f", "no", "off")
_NONE = ("none", "null")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    flag: Optional[str] = None,
    aliases: Sequence[str] = (),
    metavar: Optional[str] = None,
    choices: Optional[Sequence[Any]] = None,
    parse: Optional[Callable[[str], Any]] = None,
    cli: bool = True,
    negatable: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that knows its command-line flag.

    `flag`: the flag's name when it differs from the field's (for a bool that
    defaults to True, the name after `--no_`); `aliases`: older spellings that
    still work; `parse`: turns the text into the value (default: by the
    field's type); `negatable`: an Optional[bool] also gets `--no_<flag>`."""
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": tuple(aliases),
        "metavar": metavar,
        "choices": tuple(choices) if choices is not None else None,
        "parse": parse,
        "cli": cli,
        "negatable": negatable,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() in _NONE else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _unwrap_optional(annotation: Any) -> "tuple[Any, bool]":
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _flag_fields(cls: type, skip: Iterable[str]) -> Iterable["tuple[dataclasses.Field, Any, bool]"]:
    hints = typing.get_type_hints(cls)
    skipped = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skipped or not f.metadata.get("cli", False) or not f.metadata.get("help"):
            continue
        kind, optional = _unwrap_optional(hints[f.name])
        yield f, kind, optional


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def add_flags(parser: Any, cls: type, *, skip: Iterable[str] = ()) -> None:
    """Add a flag for every CLI field of dataclass `cls` to `parser` (a parser
    or an argument group). Unset flags leave no attribute (argparse.SUPPRESS),
    so `from_args` keeps the dataclass's own defaults."""
    for f, kind, optional in _flag_fields(cls, skip):
        meta = f.metadata
        name = meta["flag"] or f.name
        default = _default(f)
        help_text = meta["help"]
        common: Dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if kind is bool and not optional:
            if default:
                flags = [f"--no_{name}", *(f"--no_{a}" for a in meta["aliases"])]
                parser.add_argument(*flags, action="store_false", help=help_text, **common)
            else:
                flags = [f"--{name}", *(f"--{a}" for a in meta["aliases"])]
                parser.add_argument(*flags, action="store_true", help=help_text, **common)
            continue
        flags = [f"--{name}", *(f"--{a}" for a in meta["aliases"])]
        parse = meta["parse"] or (parse_bool if kind is bool else _number(kind) if kind in (int, float) else kind)
        if optional:
            parse = _optional(parse)
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
        extra: Dict[str, Any] = {}
        if kind is bool:
            extra.update(nargs="?", const=True, metavar=meta["metavar"] or "BOOL")
            if optional and meta.get("negatable"):
                parser.add_argument(f"--no_{name}", action="store_const", const=False, help=f"the opposite of --{name}", **common)
        else:
            extra["metavar"] = meta["metavar"] or ("N" if kind is int else "X" if kind is float else name.upper())
        if meta["choices"]:
            extra["choices"] = list(meta["choices"]) + ([None] if optional else [])
            extra["metavar"] = "{" + ",".join(str(c) for c in meta["choices"]) + "}"
        parser.add_argument(*flags, type=parse, help=f"{help_text} (default: {shown})", **common, **extra)


def from_args(cls: Type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """`cls` from the flags the user gave (the rest: the dataclass's defaults),
    with `overrides` on top."""
    return cls(**{**given(cls, args), **overrides})  # type: ignore[call-arg]


def given(cls: type, args: argparse.Namespace) -> Dict[str, Any]:
    """The fields of `cls` whose flags appear in `args`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
