"""The controls mapping is data, validated on load."""

from __future__ import annotations

import re

import pytest

from floorguard.console.reports.mapping import (
    MAPPING_FILE,
    MappingError,
    load_mapping,
    parse_mapping,
)
from floorguard.events import CONTROLS

GOOD = """
[rules.r]
en = "rule"
ja = "規則"
[areas.a]
en = "area"
ja = "領域"
[[control]]
name = "usb"
rules = ["r"]
areas = ["a"]
"""


def test_shipped_mapping_loads_and_covers_every_control() -> None:
    m = load_mapping()
    assert {c.control for c in m.controls} == set(CONTROLS)
    assert all(c.rules and c.areas for c in m.controls)
    # areas are named, never numbered: no clause numbers are claimed
    text = MAPPING_FILE.read_text(encoding="utf-8")
    assert not re.search(r"\b[A-Z]?\.?\d+\.\d+(\.\d+)*\b", text.replace("15001", ""))
    ja = m.for_lang("ja")
    assert ja[0]["areas"][0]["text"].startswith("個人情報")


@pytest.mark.parametrize("text,message", [
    (GOOD.replace('name = "usb"', 'name = "fax"'), "unknown control 'fax'"),
    (GOOD.replace('areas = ["a"]', 'areas = ["b"]'), "['b'] not defined under [areas.*]"),
    (GOOD.replace('ja = "領域"\n', ""), "areas.a: give exactly the keys en and ja"),
    (GOOD + "\n[extra]\nx = 1\n", "unknown top-level keys ['extra']"),
    (GOOD + '\n[[control]]\nname = "usb"\nrules = ["r"]\nareas = ["a"]\n',
     "control 'usb' is mapped twice"),
    (GOOD.replace('rules = ["r"]', "rules = []"), "control[0].rules: give a non-empty list"),
    ("[rules", "t.toml:"),
])
def test_bad_mapping_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(MappingError) as err:
        parse_mapping(text, "t.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("t.toml")


def test_good_mapping_parses() -> None:
    m = parse_mapping(GOOD)
    assert m.for_lang("en") == [{"control": "usb", "rules": [{"id": "r", "text": "rule"}],
                                 "areas": [{"id": "a", "text": "area"}]}]
