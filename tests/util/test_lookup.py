"""util.lookup.build: instances pass through, names are looked up, and its errors."""

from __future__ import annotations

import pytest

from chainrule.util.lookup import build


class Thing:
    def __init__(self, size=1):
        self.size = size


TABLE = {"thing": Thing}
ALIASES = {"t": "thing"}


def make(name, **options):
    return build(TABLE, name, "widget", ALIASES, Thing, options, "make")


def test_an_instance_passes_through_and_a_name_is_built_with_its_options():
    thing = Thing()
    assert make(thing) is thing
    assert make("t", size=3).size == 3


def test_options_with_an_instance_are_refused_naming_the_caller():
    with pytest.raises(TypeError, match="^make: a Thing instance given with options; options go"):
        make(Thing(), size=2)


def test_an_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown widget 'gizmo'; choose from \['thing'\]"):
        make("gizmo")


def test_a_factory_type_error_is_prefixed_with_the_canonical_name():
    with pytest.raises(TypeError, match="^thing: .*colour"):
        make("t", colour="red")
