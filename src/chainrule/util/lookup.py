"""Looking a name up in a by-name table, with one error message for every such table."""

from __future__ import annotations


def look_up(table: dict, name, kind: str, aliases: dict | None = None):
    """``table[name]`` (``name`` may be one of ``aliases``' other spellings), or a ValueError that
    says which ``kind`` of thing was asked for and lists the names there are: the one message of
    every by-name table (activations, initialisers, losses, gradient methods, update schemes).

    >>> look_up({"relu": 1}, "rleu", "activation")
    Traceback (most recent call last):
    ...
    ValueError: unknown activation 'rleu'; choose from ['relu']
    >>> look_up({"backprop": 1}, "reverse", "gradient method", {"reverse": "backprop"})
    1
    """
    key = aliases.get(name, name) if aliases and isinstance(name, str) else name
    try:
        return table[key]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        also = f" (or {', '.join(sorted(aliases))})" if aliases else ""
        raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(table)}{also}") from None
