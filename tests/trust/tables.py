"""Tables of several shapes for the trust tests, made offline from scikit-learn's bundled sets
and generators: (name, problem_type, label column, DataFrame)."""
from __future__ import annotations

import numpy as np
import pandas as pd

LABEL = "target"


def _frame(x, y, columns=None) -> pd.DataFrame:
    df = pd.DataFrame(x, columns=columns if columns is not None else [f"x{i}" for i in range(x.shape[1])])
    df[LABEL] = y
    return df


def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    return "breast_cancer", "binary", _frame(d.data, d.target, list(d.feature_names))


def wine():
    from sklearn.datasets import load_wine
    d = load_wine()
    return "wine", "multiclass", _frame(d.data, d.target, list(d.feature_names))


def diabetes():
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    return "diabetes", "regression", _frame(d.data, d.target, list(d.feature_names))


def digits():
    """Ten classes, 64 pixel columns."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return "digits", "multiclass", _frame(d.data, d.target)


def large_scale_regression(rows: int = 2000):
    """A label in the hundreds of thousands with a spread in the tens of thousands."""
    from sklearn.datasets import make_regression
    x, y = make_regression(n_samples=rows, n_features=8, n_informative=6, noise=15.0, random_state=3)
    return "large_scale_regression", "regression", _frame(x, 250_000 + 400 * y)


def imbalanced_binary(rows: int = 3000):
    """7% positives, with a text column and missing cells, as real tables have."""
    from sklearn.datasets import make_classification
    x, y = make_classification(n_samples=rows, n_features=10, n_informative=5, weights=[0.93],
                               flip_y=0.01, random_state=5)
    df = _frame(x, y)
    rng = np.random.default_rng(5)
    df["region"] = np.where(x[:, 0] > 0.5, "north", np.where(x[:, 1] > 0, "south", "east"))
    df.loc[rng.random(rows) < 0.05, "x3"] = np.nan
    return "imbalanced_binary", "binary", df


def random_labels():
    """Real features, labels drawn at random: there is nothing to learn and nothing may be pushed."""
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    y = np.random.default_rng(11).integers(0, 2, size=len(d.target))
    return "random_labels", "binary", _frame(d.data, y, list(d.feature_names))


ALL = (breast_cancer, wine, diabetes, digits, large_scale_regression, imbalanced_binary, random_labels)
