"""Parsing and checking ``--input-shape`` values."""

from __future__ import annotations

import re

from .errors import InputShapeError

UNNAMED = ""


# Positive sizes joined by x (or commas), spaces allowed around them: 1x3x32x32, "1, 10".
_DIMS = re.compile(r"\s*[0-9]+\s*(?:[xX,]\s*[0-9]+\s*)*")


def parse_input_shapes(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1x3x32x32", "1x10"]`` → ``{"x": (1, 3, 32, 32), "": (1, 10)}`` (unnamed: the only input)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, equals, dims = spec.rpartition("=")
        shape: tuple[int, ...] = ()
        if _DIMS.fullmatch(dims) and (name.strip() or not equals):
            shape = tuple(int(d) for d in re.split(r"[xX,]", dims))
        if not shape or any(d <= 0 for d in shape):
            raise InputShapeError(
                f"cannot read input shape '{spec}'",
                hint="write it as NAME=1x3x32x32, or 1x3x32x32 when the model has one input",
            )
        shapes[name.strip()] = shape
    return shapes


def resolve_input_shapes(
    declared: dict[str, list[int | str | None]], given: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Fill every declared input's shape from ``given`` and check that they agree.

    ``declared`` maps input names to their dims: an int, or a symbol/None for a dynamic dim.
    """
    if UNNAMED in given:
        if len(declared) != 1:
            raise InputShapeError(
                f"an unnamed --input-shape needs a model with one input; this one has "
                f"{len(declared)} ({', '.join(declared)})",
                hint="name each input: --input-shape NAME=1x3x32x32",
            )
        given = {next(iter(declared)): given[UNNAMED]}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputShapeError(
            f"the model has no input named {', '.join(repr(n) for n in unknown)}",
            hint=f"its inputs are: {', '.join(declared)}",
        )
    resolved: dict[str, tuple[int, ...]] = {}
    for name, dims in declared.items():
        if name in given:
            shape = given[name]
            if len(shape) != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, shape)):
                raise InputShapeError(
                    f"--input-shape {name}={'x'.join(map(str, shape))} does not match the model's input "
                    f"'{name}' of shape [{', '.join(_dim_text(d) for d in dims)}]",
                    hint="give a shape of the same rank whose fixed dimensions agree with the model",
                )
            resolved[name] = shape
            continue
        dynamic = [_dim_text(d) for d in dims if not (isinstance(d, int) and d > 0)]
        if dynamic:
            raise InputShapeError(
                f"input '{name}' has dynamic dimensions ({', '.join(dynamic)}) in shape "
                f"[{', '.join(_dim_text(d) for d in dims)}]",
                hint=f"pass --input-shape {name}="
                + "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims),
            )
        resolved[name] = tuple(d for d in dims if isinstance(d, int))  # every one a fixed size, checked above
    return resolved


def _dim_text(dim: int | str | None) -> str:
    if isinstance(dim, int) and dim > 0:
        return str(dim)
    return str(dim) if dim else "?"
