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


def build(table: dict, name, kind: str, aliases: dict | None, instance_type, options, caller):
    """``name`` itself when it is already an ``instance_type``, else ``table``'s factory for it
    (see :func:`look_up`) called with ``options``: the one way ``get_method`` and ``get_scheme``
    make their objects, so both refuse options given with an instance (they would be lost, and
    ``caller`` is named) and both prefix a factory's TypeError with the canonical name.

    >>> build({"sgd": dict}, "sgd", "optimizer", None, list, {"lr": 1}, "get")
    {'lr': 1}
    >>> build({"sgd": dict}, [1], "solver", None, list, {"lr": 1}, "get")
    Traceback (most recent call last):
    ...
    TypeError: get: a list instance given with options; options go with a name from ['sgd']
    """
    if isinstance(name, instance_type):
        if options:
            raise TypeError(
                f"{caller}: a {instance_type.__name__} instance given with options; options "
                f"go with a name from {sorted(table)}"
            )
        return name
    factory = look_up(table, name, kind, aliases)
    try:
        return factory(**options)
    except TypeError as error:
        canonical = aliases.get(name, name) if aliases and isinstance(name, str) else name
        raise TypeError(f"{canonical}: {error}") from None
