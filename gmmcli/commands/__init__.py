"""The command layer: every gmm command as a function over typed options.

``cli`` maps the command line onto these functions and their errors onto exit statuses;
tests and programs can call them directly. Each function checks its options (against the one
table in ``engine.constraints``), opens its inputs through the input layer (``data``,
``scale``), runs the engine, and writes through ``files``/``modelfile``; people's messages go
through the ``Session``'s reporters, which hold them back until the work starts or succeeds.
"""

from __future__ import annotations

from ..tableoptions import PredictColumns, TableOptions
from .fitting import fit, select
from .models import describe, plot, sample
from .options import EMSettings, EngineOptions, FitOptions, SelectOptions
from .scoring import loglik, predict
from .session import Session

__all__ = [
    "EMSettings",
    "EngineOptions",
    "FitOptions",
    "PredictColumns",
    "SelectOptions",
    "Session",
    "TableOptions",
    "describe",
    "fit",
    "loglik",
    "plot",
    "predict",
    "sample",
    "select",
]
