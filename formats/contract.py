"""The request contract of a model version (`contract.json` in its registry directory): the raw fields
clients send, and what changes between two versions break them.

Per field: its `type` as clients send it (int, float or string), `required` (false: the model has a
default for it, so a client may send null), `used` (the model's serving signature reads it; a field
with a default counts as used: a model that silently imputes a field it relies on is not independent
of it), its `shape` (a fixed number of values; [] for one value or a list of any length) and, for text
fields, the `categories` the training data's schema knows (its string domain, at most MAX_CATEGORIES,
`categories_capped` when there were more). Fields of the training data's schema that the signature
does not read are listed with `used: false`: the server refuses them (unknown keys).

The kfx server (kfx_serving.features) takes exactly the fields of the signature: a missing key or an
unknown key is a 400, null only for a field with a default. So against production's clients, what
`compare` calls BREAKING is:

    not-sent       a field the candidate reads that production's clients do not send a value for (a
                   key always null is not sent), with or without a default, when production did not
                   read it (a new dependency) or the candidate requires it
    type-changed   a field whose type or number of values differs
    removed-field  a field production reads (its clients send it) that the candidate does not take:
                   the candidate's server refuses it as unknown
    now-required   a field that had a default and has none: clients sending null are refused

and shown, not blocking: `now-optional`, `new-field` (read by the candidate, already sent by
clients), `imputed` (read by both, never sent a value: imputed as before), `ignored-field` (in
the candidate's data, not read by it), `new-categories` and
`dropped-categories` (values a text field's domain gained or lost: unseen values are mapped to the
out-of-vocabulary bucket, not refused).

Built from the serving feature spec (kfx_formats.features) and the TFDV schema; no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kfx_formats import features, protos, registry

FORMAT = 1
MAX_CATEGORIES = 1000
TYPES = {features.INT64: "int", features.FLOAT: "float", features.STRING: "string"}
SCHEMA_TYPES = {"INT": "int", "FLOAT": "float", "BYTES": "string"}   # tensorflow_metadata FeatureType
BREAKING = ("not-sent", "type-changed", "removed-field", "now-required")
SHOWN = ("now-optional", "new-field", "imputed", "ignored-field", "new-categories", "dropped-categories")
_EXAMPLES = 3   # categories named in a difference's line


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: str                   # int | float | string
    required: bool              # no default: null is refused
    used: bool = True           # the serving signature reads it
    shape: Tuple[int, ...] = ()
    categories: Tuple[str, ...] = ()
    categories_capped: bool = False

    def describe(self) -> str:
        return self.type + (f"[{','.join(map(str, self.shape))}]" if self.shape else "")


@dataclasses.dataclass(frozen=True)
class Contract:
    fields: Dict[str, Field]
    note: str = ""              # how it was made, when not by push (an older version's, derived)

    def accepted(self) -> Dict[str, Field]:
        """The fields a request must carry: the ones the signature reads."""
        return {n: f for n, f in self.fields.items() if f.used}

    def to_json(self) -> dict:
        return {"format": FORMAT, "note": self.note,
                "fields": [{**dataclasses.asdict(f), "shape": list(f.shape), "categories": list(f.categories)}
                           for f in self.fields.values()]}


@dataclasses.dataclass(frozen=True)
class Difference:
    kind: str                   # one of BREAKING or SHOWN
    field: str
    text: str                   # one line

    @property
    def breaking(self) -> bool:
        return self.kind in BREAKING


# ------------------------------------------------------------------ building, reading, writing
def build(spec: Mapping[str, features.Feature], domains: Optional[Mapping[str, Tuple[str, Sequence[str]]]] = None,
          label_key: str = "", note: str = "") -> Contract:
    """The contract of a serving feature spec ({name: Feature}) and, when given, the schema's
    {feature: (type, string domain)} (kfx_formats.protos.string_domains); the label is no request field."""
    domains = dict(domains or {})
    fields = {}
    for name, f in spec.items():
        values = list(domains.get(name, ("", []))[1]) if f.dtype == features.STRING else []
        fields[name] = Field(name, TYPES[f.dtype], f.required, True, tuple(f.shape),
                             tuple(values[:MAX_CATEGORIES]), len(values) > MAX_CATEGORIES)
    for name, (kind, _) in domains.items():
        if name not in fields and name != label_key:
            fields[name] = Field(name, SCHEMA_TYPES.get(kind, kind.lower()), False, False)
    return Contract(dict(sorted(fields.items())), note)


def from_saved_model(saved_model_dir: str, schema_path: str = "", label_key: str = "", note: str = "") -> Contract:
    """The contract of a SavedModel directory's serving signature (+ a schema.pbtxt when given)."""
    spec = features.spec_from_graph_def(protos.serving_graph(saved_model_dir))
    return build(spec, protos.string_domains(schema_path) if schema_path else None, label_key, note)


def from_json(data: Mapping) -> Contract:
    """A contract from its JSON; a ValueError naming what is wrong."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT or not isinstance(data.get("fields"), list):
        raise ValueError(f'not a request contract (expected {{"format": {FORMAT}, "fields": [...]}})')
    try:
        fields = [Field(str(f["name"]), str(f["type"]), bool(f["required"]), bool(f.get("used", True)),
                        tuple(int(d) for d in f.get("shape") or ()), tuple(map(str, f.get("categories") or ())),
                        bool(f.get("categories_capped", False))) for f in data["fields"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a request contract field lacks name, type or required ({e})") from e
    return Contract({f.name: f for f in fields}, str(data.get("note") or ""))


def dumps(contract: Contract) -> bytes:
    """contract.json's bytes (push publishes them with the version)."""
    return json.dumps(contract.to_json(), indent=2, sort_keys=True).encode("utf-8")


def read(version: registry.Version) -> Optional[Contract]:
    """The contract.json of a registry version; None for a version pushed before contracts."""
    raw = registry.read_file(version, registry.CONTRACT)
    if raw is None:
        return None
    try:
        return from_json(json.loads(raw))
    except ValueError as e:
        raise ValueError(f"{version.uri}/{registry.CONTRACT}: {e}") from e


# ------------------------------------------------------------------ comparing
def _listed(values: Iterable[str]) -> str:
    values = sorted(values)
    return ", ".join(repr(v) for v in values[:_EXAMPLES]) + (f" and {len(values) - _EXAMPLES} more"
                                                             if len(values) > _EXAMPLES else "")


def _categories(name: str, cand: Field, prod: Field) -> List[Difference]:
    if not cand.categories or not prod.categories:
        return []
    capped = f" (of the first {MAX_CATEGORIES} known)" if cand.categories_capped or prod.categories_capped else ""
    out = []
    new, gone = set(cand.categories) - set(prod.categories), set(prod.categories) - set(cand.categories)
    if new:
        out.append(Difference("new-categories", name, f"field {name!r}: {len(new)} new categories{capped}: "
                                                      f"{_listed(new)}"))
    if gone:
        out.append(Difference("dropped-categories", name, f"field {name!r}: {len(gone)} categories the candidate "
                                                          f"has not seen{capped} (out of vocabulary): {_listed(gone)}"))
    return out


def compare(candidate: Contract, production: Contract, sent_fields: Optional[Iterable[str]] = None) -> List[Difference]:
    """What changes for production's clients when `candidate` replaces `production`, breaking first.
    `sent_fields`: the fields production's clients send a value for (from the payload log); default:
    the fields production reads."""
    cand, prod = candidate.accepted(), production.accepted()
    sent = set(prod if sent_fields is None else sent_fields)
    out: List[Difference] = []
    for name in sorted(set(cand) | set(prod)):
        c, p = cand.get(name), prod.get(name)
        if c is None:
            out.append(Difference("removed-field", name, f"field {name!r} ({p.describe()}): production's clients "
                                                         "send it and the candidate refuses it (unknown field)"))
            continue
        if p is not None and c.describe() != p.describe():
            out.append(Difference("type-changed", name, f"field {name!r}: {p.describe()} in production, "
                                                        f"{c.describe()} in the candidate"))
            continue
        if name not in sent:
            if p is None or c.required:
                how = "requires it" if c.required else "reads it (imputing a default when it is missing)"
                out.append(Difference("not-sent", name, f"field {name!r} ({c.describe()}): the candidate {how} "
                                                        "and production's clients do not send it"))
            else:
                out.append(Difference("imputed", name, f"field {name!r} ({c.describe()}): production's clients send "
                                                       "no value for it; the candidate imputes it, as production does"))
            continue
        if p is None:
            out.append(Difference("new-field", name, f"field {name!r} ({c.describe()}): new, and production's "
                                                     "clients already send it"))
            continue
        if c.required and not p.required:
            out.append(Difference("now-required", name, f"field {name!r}: optional in production, required by "
                                                        "the candidate (null is refused)"))
        elif p.required and not c.required:
            out.append(Difference("now-optional", name, f"field {name!r}: required in production, optional "
                                                        "in the candidate (null accepted)"))
        out += _categories(name, c, p)
    for name, f in candidate.fields.items():
        if not f.used and name not in production.fields:
            out.append(Difference("ignored-field", name, f"field {name!r} ({f.type}) is in the candidate's "
                                                         "training data and the candidate does not read it"))
    return sorted(out, key=lambda d: not d.breaking)
