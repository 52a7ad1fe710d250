"""The reproductions' one result cache: a JSON file ``{<field>: key, "result": result}``.

A result is reused only when the key it was computed under equals the key asked
for, compared as JSON (tuples and lists alike); anything else recomputes it.
``mtl`` keeps its robustness results in the results cells under ``settings``
(committed files), ``protocols`` keeps its own under ``key`` in the run
directories: one rule, two field names kept so that committed files stay valid.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Dict, Optional

from .. import runs

__all__ = ["as_json", "lookup", "store", "cached"]


def as_json(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj))


def lookup(path: pathlib.Path, key: Any, field: str = "key") -> Optional[Dict[str, Any]]:
    """The result cached in ``path`` under ``key``; None when absent or computed under another key."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    doc = runs.read_json(path)
    return doc["result"] if doc.get(field) == as_json(key) else None


def store(path: pathlib.Path, key: Any, result: Dict[str, Any], field: str = "key") -> None:
    """Write ``result`` computed under ``key`` into ``path`` (its folder created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, {field: key, "result": result})


def cached(path: pathlib.Path, key: Any, compute: Callable[[], Dict[str, Any]], field: str = "key") -> Dict[str, Any]:
    """The result in ``path`` under ``key``, or ``compute()``'s, stored there."""
    hit = lookup(path, key, field)
    if hit is not None:
        return hit
    result = compute()
    store(path, key, result, field)
    return result
