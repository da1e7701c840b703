"""Write a model card as TOML (the standard library reads TOML but does not write it).

Only what a card holds is supported: strings, booleans, numbers, lists of scalars, tables and
lists of tables, in the order given. The written text reads back with :func:`tomllib.loads` to
the same content (checked by the tests) and is then validated like any card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

__all__ = ["to_toml"]

Scalar = str | bool | int | float


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cards hold finite numbers only, got {value}")
        return repr(round(value, 6))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a card")


def _is_table_list(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _emit(table: Mapping[str, object], prefix: str, lines: list[str]) -> None:
    for key, value in table.items():
        if not isinstance(value, Mapping) and not _is_table_list(value):
            lines.append(f"{key} = {_scalar(value)}")
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            lines.extend(["", f"[{name}]"])
            _emit(value, f"{name}.", lines)
        elif _is_table_list(value):
            assert isinstance(value, Sequence)
            for item in value:
                lines.extend(["", f"[[{name}]]"])
                _emit(item, f"{name}.", lines)


def to_toml(content: Mapping[str, object], header: Sequence[str] = ()) -> str:
    """*content* as TOML text, preceded by *header* lines as comments."""
    lines = [f"# {h}" if h else "#" for h in header]
    _emit(content, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"
