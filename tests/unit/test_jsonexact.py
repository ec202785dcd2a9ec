"""engine.jsonexact: exact numbers and any nesting depth, same results as the json module."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from engine import jsonexact

DEEP = 5000


def test_numbers_keep_every_digit():
    text = ('{"amount": 12345678901234567890.12345, "rate": 0.1000000000000000000001, '
            '"big": 123456789012345678901234567890, "e": 1E+400, "huge": ' + "9" * 5000 + "}")
    value = jsonexact.loads(text)
    assert value["amount"] == Decimal("12345678901234567890.12345")
    assert value["rate"] == Decimal("0.1000000000000000000001")
    assert value["big"] == 123456789012345678901234567890
    assert jsonexact.dumps(value) == text


@pytest.mark.parametrize("text", [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + '"x"' + "}" * DEEP,
    "[" * DEEP + '{"k":[1.10,{},[]]}' + "]" * DEEP,
], ids=["arrays", "objects", "mixed"])
def test_any_depth_round_trips(text):
    value = jsonexact.loads(text)
    assert jsonexact.dumps(value, compact=True) == text
    assert jsonexact.dumps(value, indent=2).count("\n") > DEEP


def _random(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 4 or pick < 0.3:
        return rng.choice([1, -2.5, 'q"\u00e9\n\\', None, True, False, 0, 1e-7, "", {}, []])
    if pick < 0.65:
        return [_random(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}\u2603": _random(rng, depth + 1) for i in range(rng.randint(0, 4))}


def test_the_iterative_paths_agree_with_the_json_module():
    rng = random.Random(7)
    for _ in range(500):
        value = _random(rng)
        text = json.dumps(value)
        assert jsonexact._loads_iterative(text) == json.loads(text, parse_float=Decimal)
        for indent in (None, 2):
            for separators in ((",", ":"), (", ", ": ") if indent is None else (",", ": ")):
                assert "".join(jsonexact._iterencode(value, indent, separators, True, None)) == \
                    json.dumps(value, indent=indent, separators=separators)


@pytest.mark.parametrize("bad", ["[1,]", "{", "[1 2]", '{"a" 1}', "01", "", "[1]x", '{"a":1,}', "[" * DEEP],
                         ids=range(9))
def test_invalid_json_is_refused_at_any_depth(bad):
    with pytest.raises(json.JSONDecodeError):
        jsonexact._loads_iterative(bad)
    with pytest.raises(json.JSONDecodeError):
        jsonexact.loads(bad)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"x": NaN}', "[1, Infinity]"])
def test_non_json_constants_are_refused(text):
    # (Python's json takes them; PostgreSQL's json does not, and a signal payload 'NaN' was
    # accepted by the CLI and the TUI, then stored as the string "NaN")
    with pytest.raises(ValueError, match="is not valid JSON"):
        jsonexact.loads(text)
