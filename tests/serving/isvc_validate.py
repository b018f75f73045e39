"""Strictly validate InferenceService documents against the KServe SDK's generated models
(kserve 0.15.2 `kserve.models`, generated from the same Go types as the CRD; pod fields against
`kubernetes.client.models`): unknown fields and wrong types fail. Runs in .venv-serving.

    python isvc_validate.py < docs.json   -> prints OK per document, exits 1 on the first error
"""
import json
import re
import sys

import kserve.models as km
import kubernetes.client.models as k8s


def check(value, type_name, where):
    if value is None:
        return
    type_name = type_name.strip()
    m = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if m:
        assert isinstance(value, list), f"{where}: expected a list"
        for i, v in enumerate(value):
            check(v, m.group(1), f"{where}[{i}]")
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name) or re.fullmatch(r"Dict\[str, (.+)\]", type_name)
    if m:
        assert isinstance(value, dict), f"{where}: expected an object"
        for k, v in value.items():
            check(v, m.group(1), f"{where}.{k}")
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str,
              "Any": object}
    if type_name in simple:
        ok = isinstance(value, simple[type_name]) and not (type_name == "int" and isinstance(value, bool))
        assert ok, f"{where}: expected {type_name}, got {value!r}"
        return
    cls = getattr(km, type_name, None) or getattr(k8s, type_name, None)
    assert cls is not None, f"{where}: unknown model {type_name}"
    assert isinstance(value, dict), f"{where}: expected a {type_name} object"
    json_to_attr = {j: a for a, j in cls.attribute_map.items()}
    for k, v in value.items():
        assert k in json_to_attr, f"{where}: unknown field {k!r} in {type_name}"
        check(v, cls.openapi_types[json_to_attr[k]], f"{where}.{k}")


def main():
    bad = 0
    for d in json.load(sys.stdin):
        name = d.get("metadata", {}).get("name")
        try:
            assert (d["apiVersion"], d["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
            check(d, "V1beta1InferenceService", "InferenceService")
            print(f"OK InferenceService/{name}")
        except AssertionError as e:
            print(f"FAIL InferenceService/{name}: {e}")
            bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
