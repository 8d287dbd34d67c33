"""The covariance registry: one strategy per model, checked against direct computations, and
no switch on a covariance model name outside ``engine/covariance.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from gmmcli.engine.covariance import CovarianceStrategy, covariance_names, get_strategy
from gmmcli.engine.params import MixtureParams, covariance_shape

PACKAGE = Path(__file__).resolve().parent.parent / "gmmcli"
NAMES = ("full", "tied", "diag", "spherical")

# Uses of a model name as a string literal outside engine/covariance.py that are not a switch,
# by (file, scope, name): the scope is the enclosing function, or the name assigned at module
# level.
# Defaults of parameters and of dataclass fields ("full") are allowed without a listing.
ALLOWED: dict[tuple[str, str, str], str] = {}


def _literal_uses(path: Path) -> list[tuple[str, int, str]]:
    """(scope, line, name) of every model-name string literal that is not a default value."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defaults: set[int] = set()
    scopes: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    defaults.add(id(default))
            for inner in ast.walk(node):  # outer functions come first: they win
                scopes.setdefault(id(inner), node.name)
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    defaults.add(id(stmt.value))
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            label = ",".join(t.id for t in targets if isinstance(t, ast.Name))
            for inner in ast.walk(stmt):
                scopes.setdefault(id(inner), label)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in defaults:
            found.append((scopes.get(id(node), "<module>"), node.lineno, node.value))
    return sorted(found, key=lambda use: use[1])


def test_no_covariance_name_switch_outside_the_registry():
    offending, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "engine/covariance.py":
            continue
        for scope, line, name in _literal_uses(path):
            if (relative, scope, name) in ALLOWED:
                used.add((relative, scope, name))
            else:
                offending.append(f"gmmcli/{relative}:{line} {name!r} in {scope}")
    assert offending == [], "switch on the covariance strategy instead:\n" + "\n".join(offending)
    assert set(ALLOWED) - used == set(), "remove these entries from ALLOWED"


def test_the_scan_finds_a_switch(tmp_path):
    path = tmp_path / "example.py"
    path.write_text(
        'def f(kind: str = "full"):\n    return kind == "tied"\n\nNAMES = ("diag",)\n',
        encoding="utf-8",
    )
    assert _literal_uses(path) == [("f", 2, "tied"), ("NAMES", 4, "diag")]


# -- the registry ---------------------------------------------------------------------------


def test_names_in_order_and_lookup():
    assert covariance_names()[:4] == NAMES  # then the other ten of mclust's models
    assert len(covariance_names()) == len(set(covariance_names())) == 14
    for name in NAMES:
        strategy = get_strategy(name)
        assert isinstance(strategy, CovarianceStrategy)
        assert strategy.name == name
        for alias in strategy.aliases:
            assert get_strategy(alias) is strategy


@pytest.mark.parametrize("name", ["VVV2", "", "diagonal", "EI"])
def test_unknown_name_lists_the_allowed_ones(name):
    with pytest.raises(ValueError, match=r"use one of full, tied, diag, spherical"):
        get_strategy(name)


def _random_covariances(strategy: CovarianceStrategy, k: int, d: int, seed: int) -> np.ndarray:
    """Valid covariances of the strategy's model with distinct random entries."""
    rng = np.random.default_rng(seed)
    shape = strategy.shape(k, d)
    if strategy.is_diagonal:
        return rng.uniform(0.5, 2.0, size=shape)
    a = rng.normal(size=(*shape[:-1], d + 2))
    return a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("k", "d"), [(1, 1), (3, 1), (1, 4), (3, 4)])
def test_shape_parameters_and_full_matrices(name, k, d):
    strategy = get_strategy(name)
    expected_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    assert strategy.shape(k, d) == expected_shape[name]
    assert covariance_shape(name, k, d) == expected_shape[name]
    cov = _random_covariances(strategy, k, d, seed=k * 10 + d)
    full = strategy.to_full(cov, k, d)
    assert full.shape == (k, d, d)
    for i in range(k):
        for j in range(d):
            assert full[i, j, j] == cov[strategy.variance_index(i, j)]
        off = full[i][~np.eye(d, dtype=bool)]
        assert np.all(off == 0) == (strategy.is_diagonal or d == 1)
        np.testing.assert_array_equal(full[i], full[i].T)
    assert all(np.array_equal(full[0], m) for m in full) == (strategy.shared or k == 1)
    # free parameters: the distinct values in the upper triangles (the random entries differ)
    a, b = np.triu_indices(d)
    upper = full[:, a, b]
    distinct = {float(v) for v in upper.ravel() if v != 0}
    assert strategy.n_parameters(k, d) == len(distinct)


@pytest.mark.parametrize("name", NAMES)
def test_rescaled_is_d_sigma_d(name):
    strategy = get_strategy(name)
    k, d = 3, 4
    cov = _random_covariances(strategy, k, d, seed=7)
    s = np.array([0.5, 2.0, 3.0, 10.0])
    new_name, rescaled = strategy.rescaled(cov, s)
    new = get_strategy(new_name)
    expected = np.diag(s)[None] @ strategy.to_full(cov, k, d) @ np.diag(s)[None]
    np.testing.assert_allclose(new.to_full(rescaled, k, d), expected, rtol=1e-14)
    assert new_name == ("diag" if name == "spherical" else name)
    params = MixtureParams(name, np.full(k, 1 / k), np.zeros((k, d)), cov, np.ones(d), s)
    shown = params.in_data_units()
    assert shown.covariance_type == new_name
    np.testing.assert_allclose(shown.full_covariances(), expected, rtol=1e-14)
    np.testing.assert_allclose(shown.means, np.ones((k, d)))


@pytest.mark.parametrize("name", ["full", "tied"])
def test_matrices_and_their_names(name):
    strategy = get_strategy(name)
    k, d = 3, 2
    cov = _random_covariances(strategy, k, d, seed=3)
    matrices = strategy.matrices(cov)
    full = strategy.to_full(cov, k, d)
    if strategy.shared:
        assert matrices.shape == (1, d, d)
        np.testing.assert_array_equal(matrices[0], full[0])
        assert strategy.matrix_name(0) == "'covariances'"
    else:
        np.testing.assert_array_equal(matrices, full)
        assert [strategy.matrix_name(j) for j in range(k)] == [
            "covariances[0]",
            "covariances[1]",
            "covariances[2]",
        ]


def test_flags_and_minimum_rows():
    d = 5
    table = {
        name: (s.shared, s.is_diagonal, s.min_rows(d))
        for name, s in ((n, get_strategy(n)) for n in NAMES)
    }
    assert table == {
        "full": (False, False, d + 1),
        "tied": (True, False, 1),
        "diag": (False, True, 2),
        "spherical": (False, True, 2),
    }


def test_pinned_variance():
    floor = np.array([1e-3, 1e-1, 1e-3])
    assert get_strategy("diag").pinned_variance(np.array([1.0, 0.05, 1e-4]), floor) == (2, 1e-4)
    assert get_strategy("diag").pinned_variance(np.array([1.0, 0.5, 1.0]), floor) is None
    spherical = get_strategy("spherical")
    assert spherical.pinned_variance(np.full(3, 0.05), floor) is None
    assert spherical.pinned_variance(np.full(3, 1e-4), floor) == (None, 1e-4)


def test_the_registry_imports_without_scipy():
    import subprocess
    import sys

    code = (
        "import sys; import gmmcli.engine.covariance, gmmcli.engine.params; "
        "sys.exit('scipy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
