"""gmm: Gaussian mixture models fitted by EM, as a command-line tool and a Python library.

from gmmcli import GaussianMixture, load_model, save_model
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["GaussianMixture", "GmmError", "__version__", "load_model", "save_model"]

from .errors import GmmError

if TYPE_CHECKING:
    from .engine.mixture import GaussianMixture


def __getattr__(name: str):  # numpy and the engine load on first use, not on `gmm --help`
    if name == "GaussianMixture":
        from .engine.mixture import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module 'gmmcli' has no attribute {name!r}")


def save_model(model: GaussianMixture, path: str, feature_names: list[str] | None = None) -> None:
    """Write a fitted GaussianMixture to a model file (JSON, atomically; "-" is stdout)."""
    from . import modelfile

    params = model.params_
    if params is None:
        raise ValueError("the model is not fitted")
    names = feature_names or [f"x{j + 1}" for j in range(params.n_features)]
    info = None
    if hasattr(model, "result_"):
        from .commands.fitting import fit_record

        info = fit_record(model, names)
    modelfile.save_model(path, params, names, info)


def load_model(path: str) -> GaussianMixture:
    """Read and validate a model file; returns a fitted GaussianMixture (feature names are in
    its ``feature_names_in_``)."""
    from . import modelfile
    from .engine.mixture import GaussianMixture

    params, names, _ = modelfile.load_model(path)
    model = GaussianMixture.from_params(params)
    model.feature_names_in_ = list(names)
    return model
