"""Typer commands whose shared options are declared once, in groups (csvkit's base-class
idea without the class): a command names the groups it takes, the command line shows each
group's options, and the command receives every group packed into one typed value."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer


@dataclasses.dataclass(frozen=True)
class Group:
    """Options several commands share: each parameter's (type with its typer.Option, default),
    and how they are packed into the one argument ``name`` that the command receives."""

    name: str
    options: dict[str, tuple[Any, Any]]
    pack: Callable[..., Any]


def declared(default: Any, flags: str, help: str, kind: Any = None) -> tuple[Any, Any]:
    """One option of a group: its type (``kind``, or the default's) with its typer.Option
    (``flags`` separated by spaces, e.g. "-d --delimiter"), and its default."""
    kind = type(default) if kind is None else kind
    return Annotated[kind, typer.Option(*flags.split(), help=help)], default


def option(kind: Any, *names: str, help: str) -> Any:
    """One command's own option for typer: ``kind`` with its flags and help."""
    return Annotated[kind, typer.Option(*names, help=help)]


def with_groups(
    function: Callable[..., Any], groups: tuple[Group, ...]
) -> Callable[..., dict[str, Any]]:
    """A callable with ``function``'s own parameters plus every group's options (what typer
    reads) that returns ``function``'s arguments, each group packed under its name."""
    own = inspect.signature(function, eval_str=True).parameters.values()
    parameters = [p for p in own if p.name not in {g.name for g in groups}]
    for group in groups:
        for name, (annotation, default) in group.options.items():
            kind = inspect.Parameter.KEYWORD_ONLY
            parameters.append(inspect.Parameter(name, kind, default=default, annotation=annotation))

    @functools.wraps(function)
    def arguments(**values: Any) -> dict[str, Any]:
        for group in groups:
            values[group.name] = group.pack(**{n: values.pop(n) for n in group.options})
        return values

    arguments.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    arguments.__annotations__ = {p.name: p.annotation for p in parameters}
    return arguments


def packed(options: type, values: dict[str, Any]) -> Any:
    """The dataclass ``options`` from a command's parameters of the same names."""
    return options(**{f.name: values[f.name] for f in dataclasses.fields(options)})
