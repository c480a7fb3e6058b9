"""Shared test helpers: paths to ../shared and a reader for the Matterport fixture cases.

A fixture JSON (``../shared/fixtures/matterport/<group>.json``) holds ``cases``;
each case has ``args`` and ``outputs`` whose arrays live in the group's npz and
whose scalars/tuples/None are inline. :func:`load_cases` decodes both so tests
can do ``fn(**case.args)`` and compare against ``case.outputs``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MRCNN_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
FIXTURES = os.path.join(SHARED, "fixtures", "matterport")
DATA = os.path.join(SHARED, "data")

_PY_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple,
             "list": list, "NoneType": lambda v: None}


@dataclass
class Case:
    name: str
    function: str
    args: Dict[str, Any]
    outputs: Dict[str, Any]
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)


def _decode(spec: Any, npz) -> Any:
    if isinstance(spec, dict) and "npz" in spec:
        arr = npz[spec["npz"]]
        return arr.astype(spec["dtype"]) if "dtype" in spec and arr.dtype != spec["dtype"] else arr
    if isinstance(spec, dict) and "value" in spec:
        v, t = spec["value"], spec.get("python_type")
        if isinstance(v, dict) and "npz_key" in v:  # an array stored once and referred to by key
            return npz[v["npz_key"]]
        if t in _PY_TYPES:
            return _PY_TYPES[t](v) if v is not None else None
        if t and hasattr(np, t):  # numpy scalar such as float32
            return getattr(np, t)(v)
        return v
    if isinstance(spec, dict):
        return {k: _decode(v, npz) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_decode(v, npz) for v in spec]
    return spec


def load_group(group: str) -> Dict[str, Any]:
    """The raw JSON of a fixture group (e.g. ``"utils_boxes"``)."""
    with open(os.path.join(FIXTURES, group + ".json")) as f:
        return json.load(f)


def load_cases(group: str, function: str | None = None) -> List[Case]:
    """Decoded cases of a fixture group, optionally only those calling `function`."""
    meta = load_group(group)
    npz = np.load(os.path.join(FIXTURES, meta["npz"]), allow_pickle=False)
    out = []
    for c in meta["cases"]:
        if function and c["function"] != function:
            continue
        out.append(Case(c["name"], c["function"], _decode(c["args"], npz),
                        _decode(c["outputs"], npz), c))
    return out


def case_ids(cases: List[Case]) -> List[str]:
    return [c.name for c in cases]
