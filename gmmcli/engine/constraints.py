"""The values each fitting parameter may take, declared once.

``EMOptions.validate`` and the command layer check their values against the same table
(scikit-learn's ``_parameter_constraints`` idea); a failure is a ``ParameterError`` naming the
parameter, which the command line words with its flag instead. Covariance model names are
checked by the strategy registry, initialisers by ``init.INITIALISERS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..limits import MAX_VARIANCE


class ParameterError(ValueError):
    """A parameter value outside its constraint: ``parameter``, ``value`` and ``reason``
    (e.g. "must be >= 1"); str() is "parameter value: reason"."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(f"{parameter} {shown(value)}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


def shown(value: object) -> str:
    """A value as a message shows it: text quoted, numbers as they are."""
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class AtLeast:
    """A whole number ≥ ``low`` (None allowed when ``optional``)."""

    low: int
    optional: bool = False

    def reason(self, value: object) -> str | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < self.low:
            return f"must be >= {self.low}"
        return None


@dataclass(frozen=True)
class FiniteAtLeast:
    """A finite number ≥ ``low``, and ≤ ``high`` if given (with ``high_reason``); None
    allowed when ``optional``."""

    low: float
    high: float | None = None
    high_reason: str = ""
    optional: bool = False

    def reason(self, value: object) -> str | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a finite number >= {self.low:g}"
        if not (self.low <= value < math.inf):
            return f"must be a finite number >= {self.low:g}"
        if self.high is not None and value > self.high:
            return f"must be at most {self.high:.0e}{self.high_reason}"
        return None


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``."""

    choices: tuple[str, ...]

    def reason(self, value: object) -> str | None:
        if value not in self.choices:
            return f"use one of {', '.join(self.choices)}"
        return None


@dataclass(frozen=True)
class Positive:
    """A finite number > 0 (None allowed when ``optional``)."""

    optional: bool = False

    def reason(self, value: object) -> str | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a finite number > 0"
        if not (0 < value < math.inf):
            return "must be a finite number > 0"
        return None


@dataclass(frozen=True)
class NotBelow:
    """A number ≥ ``low``, infinity included."""

    low: float

    def reason(self, value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number >= {self.low:g} (or inf)"
        if not value >= self.low:  # NaN too
            return f"must be a number >= {self.low:g} (or inf)"
        return None


Constraint = AtLeast | FiniteAtLeast | OneOf | Positive | NotBelow

REFINE_MARGIN = 0.4
"""Model selection's default margin, per row (per unit of weight): a cell whose criterion
from its first start is within 0.4 n of the best cell's gets the rest of its restarts and EM
to the stopping rule (``select.run_grid``). On seven public sets (bench/MCLUST.md), against
every cell refined, with Ward's tree among the restarts: every cell they brought within 10
of the best started within 0.4 n of it (0.39 n at most), and the choice was the same on all
seven (the far cells' BIC they lowered by up to 6.9 n)."""

CONSTRAINTS: dict[str, Constraint] = {
    "dtype": OneOf(("float64", "float32")),
    "threads": AtLeast(1, optional=True),
    "jobs": AtLeast(1, optional=True),
    "reg_scale": OneOf(("data", "absolute")),
    "n_components": AtLeast(1),
    "n_init": AtLeast(1),
    "max_iter": AtLeast(0),
    "tol": FiniteAtLeast(0, optional=True),  # None: the default rule (``convergence``)
    "reg_covar": FiniteAtLeast(
        0, MAX_VARIANCE, " (a larger one swamps any variance of the data gmm reads)"
    ),
    "seed": AtLeast(0),
    "chunk_size": AtLeast(1, optional=True),
    "noise_volume": Positive(optional=True),  # None: the data's box (``engine.noise``)
    "refine_margin": NotBelow(0),  # inf: every cell of a select grid refined
}


def check(parameter: str, value: object) -> None:
    """Raise ParameterError if ``value`` breaks ``parameter``'s constraint."""
    reason = CONSTRAINTS[parameter].reason(value)
    if reason is not None:
        raise ParameterError(parameter, value, reason)


def check_all(values: dict[str, object]) -> None:
    """Check every parameter of ``values`` that has a constraint, in the table's order."""
    for parameter in CONSTRAINTS:
        if parameter in values:
            check(parameter, values[parameter])
