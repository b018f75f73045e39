"""Column names as they come -> names TensorFlow, Keras and file systems take.

A column may be named anything a CSV or Parquet file can hold (``class``,
``lambda``, ``self``, ``a-b``, ``2nd col``, ``größe``, 200 characters, ``Age``
beside ``age``). The data (tf.Example keys), the serving contract, the card and
the reports keep those names; only where a stage makes a TF/Keras object or a
file *named after* a column (signature arguments, ``tf.TensorSpec`` and Keras
``Input`` names) does it use ``safe_name(column)``.

``safe_name`` depends on the column's name alone (so every stage, given any
subset of the columns, gets the same identifier) and is:

* a valid ASCII Python identifier, never a keyword, ``self`` or a name the
  model's signatures or layers use themselves (``RESERVED``, ``RESERVED_PREFIXES``),
  at most ``MAX_LENGTH`` long;
* the name itself when it is already such an identifier in lower case without
  a double underscore (``age_years`` stays ``age_years``);
* otherwise a readable stem, ``__`` and a hash of the exact name
  (``a-b`` -> ``a_b__34fafddda8``).

Distinct names get distinct identifiers, even ignoring case: a kept name has no
``__`` and a hashed one has exactly one, before its (lower-case hex) hash of the
name as written; two hashed names alike ignoring case share that hash.
"""
from __future__ import annotations

import hashlib
import keyword
import re
import unicodedata
from typing import Dict, Iterable

MAX_LENGTH = 64
HASH_LENGTH = 10          # hex digits: 40 bits, a collision among a table's columns is ~n^2 / 2^41
# Names Python calls, the signatures (arguments, outputs) and the model's own Keras layers use
# themselves (components/common/model.py; tfmot's wrappers in quantize): a Keras Input named
# like a layer breaks the model ("The name 'logits' is used 2 times in the model").
RESERVED = frozenset({"self", "examples", "logits", "probabilities", "predictions", "inputs", "outputs",
                      "features", "standardized"})
RESERVED_PREFIXES = ("dense", "emb", "input", "quant", "quantize", "prune_low_magnitude")
_KEPT = re.compile(r"[a-z][a-z0-9_]*\Z")


def is_kept(column: str) -> bool:
    """Whether ``column`` is used as it is (see the module doc)."""
    return (len(column) <= MAX_LENGTH and bool(_KEPT.match(column)) and "__" not in column
            and not keyword.iskeyword(column) and column not in RESERVED
            and not any(column == p or column.startswith(p + "_") for p in RESERVED_PREFIXES))


def safe_name(column: str) -> str:
    """The identifier TF/Keras objects and files named after ``column`` use; see the module doc."""
    column = str(column)
    if is_kept(column):
        return column
    ascii_text = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if not stem or not stem[0].isalpha():
        stem = "c_" + stem if stem else "c"
    digest = hashlib.sha1(column.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]
    stem = stem[:MAX_LENGTH - HASH_LENGTH - 2].rstrip("_")
    return f"{stem}__{digest}"


def safe_names(columns: Iterable[str]) -> Dict[str, str]:
    """{safe name: column} for distinct columns; raises ValueError in the (2^-40) case of a hash clash."""
    by_safe: Dict[str, str] = {}
    folded: Dict[str, str] = {}
    for column in columns:
        name = safe_name(column)
        other = folded.get(name.lower())
        if other is not None and other != column:
            raise ValueError(f"columns {other!r} and {column!r} both map to the identifier {name!r}; "
                             f"rename one of them")
        folded[name.lower()] = column
        by_safe[name] = column
    return by_safe
