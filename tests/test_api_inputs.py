"""The Python API refuses what it cannot compute with, as scikit-learn does (issue 11, item 11);
NaN is a missing cell, as with the command line's default --missing em (issue 13, item 1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gmmcli import GaussianMixture
from gmmcli.engine.params import NumericalRangeError


@pytest.fixture(scope="module")
def fitted() -> GaussianMixture:
    x = np.random.default_rng(0).normal(size=(200, 3))
    return GaussianMixture(2, covariance_type="diag").fit(x)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_fit_refuses_an_infinite_cell_naming_it(value):
    x = np.random.default_rng(1).normal(size=(100, 3))
    x[17, 2] = value
    with pytest.raises(ValueError, match=r"row 17, column 2: (inf|-inf)\); a missing cell is NaN$"):
        GaussianMixture(2).fit(x)


def test_fit_takes_nan_as_a_missing_cell():
    x = np.random.default_rng(1).normal(size=(100, 3))
    x[17, 2] = np.nan
    model = GaussianMixture(2).fit(x)
    assert np.isfinite(model.means_).all() and np.isfinite(model.log_likelihood_)


def test_fit_refuses_a_row_with_no_value_naming_it():
    x = np.random.default_rng(1).normal(size=(100, 3))
    x[[5, 9]] = np.nan
    with pytest.raises(ValueError, match=r"^row 5 of X has no value \(every cell is NaN; 2 such"):
        GaussianMixture(2).fit(x)


def test_fit_refuses_a_column_with_no_value():
    x = np.random.default_rng(1).normal(size=(100, 3))
    x[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"^column 2 has no value \(every cell is missing\)$"):
        GaussianMixture(2).fit(x)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic"])
def test_scoring_refuses_an_infinite_cell(fitted, method):
    x = np.random.default_rng(2).normal(size=(30, 3))
    x[4, 0] = -np.inf
    with pytest.raises(ValueError, match=r"X contains infinity \(1 cell\(s\); the first at row 4"):
        getattr(fitted, method)(x)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_scoring_refuses_a_row_with_no_value(fitted, method):
    x = np.random.default_rng(2).normal(size=(30, 3))
    x[4] = np.nan
    with pytest.raises(ValueError, match=r"^row 4 of X has no value"):
        getattr(fitted, method)(x)


def test_finite_values_whose_sum_overflows_are_not_called_nan(fitted):
    x = np.full((4, 3), 1e308)  # the sum overflows, yet every cell is finite
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning leaks out
        with pytest.raises(NumericalRangeError, match="too far from every component"):
            fitted.score_samples(x)
