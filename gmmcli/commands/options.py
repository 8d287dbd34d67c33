"""The typed options of the commands, grouped as the command line shares them, and their
checks: the values come from ``engine.constraints``, the words (flags) from ``FLAGS``."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.constraints import REFINE_MARGIN
from ..engine.convergence import MAX_ITER
from ..errors import GmmError

# How the command line names each parameter in a message.
FLAGS = {
    "n_components": "-k/--components",
    "covariance_type": "--covariance",
    "n_init": "--n-init",
    "init": "--init",
    "max_iter": "--max-iter",
    "tol": "--tol",
    "reg_covar": "--reg-covar",
    "reg_scale": "--reg-scale",
    "seed": "--seed",
    "dtype": "--dtype",
    "threads": "--threads",
    "jobs": "--jobs",
    "missing": "--missing",
    "engine": "--engine",
    "criterion": "--criterion",
    "n_samples": "-n/--n-samples",
    "noise_volume": "--noise-volume",
    "refine_margin": "--refine-margin",
}
ENGINES = ("memory", "dask", "stream")
INIT_CHOICES = ("kmeans++", "hc", "hc-ward", "random", "random-from-data")


@dataclass(frozen=True)
class EngineOptions:
    """Where the rows are worked on: memory, a stream of blocks, or a Dask cluster."""

    engine: str = "memory"
    scheduler: str | None = None


@dataclass(frozen=True)
class EMSettings:
    """The EM settings that ``gmm fit`` and ``gmm select`` share."""

    max_iter: int = MAX_ITER
    tol: float | None = None  # None: the default stopping rule (``engine.convergence``)
    reg_covar: float = 1e-6
    reg_scale: str = "data"
    seed: int = 0
    standardize: bool = False
    noise: bool = False  # a noise component (``engine.noise``)
    noise_volume: float | None = None  # its box's volume; None: the data's box
    accelerate: bool = True  # SQUAREM (``engine.squarem``); False: plain EM

    def values(self) -> dict[str, object]:
        """parameter → value, for ``check_values``; --noise-volume needs --noise."""
        if self.noise_volume is not None and not self.noise:
            raise GmmError("--noise-volume needs --noise")
        return {
            "reg_scale": self.reg_scale,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "reg_covar": self.reg_covar,
            "seed": self.seed,
            "noise_volume": self.noise_volume,
        }


@dataclass(frozen=True)
class FitOptions:
    """The options of ``gmm fit`` (``init`` may be the path of a model file)."""

    components: int | None = None
    covariance: str = "full"
    n_init: int = 1
    init: str = "kmeans++"
    dtype: str = "float64"
    threads: int | None = None
    em: EMSettings = EMSettings()


@dataclass(frozen=True)
class SelectOptions:
    """The grid and options of ``gmm select``."""

    components: list[int]
    covariances: list[str]
    criterion: str = "bic"
    n_init: int = 6
    jobs: int | None = None
    em: EMSettings = EMSettings()
    init: str = "hc"
    # every cell with and without the noise component (the grid's third axis)
    compare_noise: bool = False
    # cells within this × n of the best get every restart (``engine.select.run_grid``)
    refine_margin: float = REFINE_MARGIN


def option_error(parameter: str, value: object, reason: str) -> GmmError:
    """``--flag value: reason``, the value quoted when it is text."""
    from ..engine.constraints import shown

    return GmmError(f"{FLAGS.get(parameter, parameter)} {shown(value)}: {reason}")


def check_values(values: dict[str, object]) -> None:
    """Check ``values`` (parameter → value) against ``engine.constraints``, in the table's
    order; the first failure is a GmmError naming the flag."""
    from ..engine.constraints import CONSTRAINTS

    for parameter, constraint in CONSTRAINTS.items():
        if parameter in values:
            reason = constraint.reason(values[parameter])
            if reason is not None:
                raise option_error(parameter, values[parameter], reason)


def choice(parameter: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a GmmError listing them."""
    if value not in choices:
        raise option_error(parameter, value, f"use one of {', '.join(choices)}")
    return value


def covariance_names(values: list[str]) -> list[str]:
    """The canonical names of a list of covariance models, in order, each once; ``all``
    stands for the fourteen (``engine.covariance.covariance_names``)."""
    from ..engine.covariance import covariance_names as every

    names: list[str] = []
    for value in values:
        for name in every() if value.casefold() == "all" else [covariance_name(value)]:
            if name not in names:
                names.append(name)
    return names


def covariance_name(value: str) -> str:
    """A covariance model's canonical name (any case; mclust's name or gmm's); else a
    GmmError listing them."""
    from ..engine.covariance import covariance_names, get_strategy

    try:
        return get_strategy(value).name
    except ValueError:
        raise option_error(
            "covariance_type", value, f"use one of {', '.join(covariance_names())}"
        ) from None


def check_engine(options: EngineOptions) -> str:
    """The engine, after checking that its options fit together and Dask is installed."""
    engine = choice("engine", options.engine, ENGINES)
    if options.scheduler is not None and engine != "dask":
        raise GmmError("--scheduler needs --engine dask")
    if engine == "dask":
        try:
            import dask.dataframe  # noqa: F401
            import distributed  # noqa: F401
        except ImportError:
            raise GmmError("--engine dask needs Dask: pip install 'gmmcli[dask]'") from None
    return engine


def parse_ks(text: str) -> list[int]:
    """-k as typed for select ('1-9', '2,4,8', '3'): the sorted component counts."""
    from ..engine.select import parse_ks as parse

    try:
        return parse(text)
    except ValueError as error:
        raise GmmError(f"-k/--components {text!r}: {error} (use e.g. 1-9 or 2,4,8)") from None
