"""Templates: placeholders are found and filled, every other brace is literal."""

import pytest

from agent.templates import placeholders, render, unknown

ENVELOPE = '{"appid":"{appid}","data":"{payload}","id":"{uuid}","n":{count}}'


def test_a_json_envelope_keeps_its_braces_and_fills_its_placeholders():
    out = render(ENVELOPE, {"appid": "A1", "payload": "0FAB", "uuid": "u-1", "count": "3"})
    assert out == '{"appid":"A1","data":"0FAB","id":"u-1","n":3}'


def test_placeholders_are_listed_once_in_order():
    assert placeholders("{a}-{b}-{a}") == ["a", "b"]


def test_unknown_placeholders_are_named():
    assert unknown(ENVELOPE, ["appid", "payload", "uuid"]) == ["count"]


def test_a_placeholder_without_a_value_is_an_error():
    with pytest.raises(KeyError):
        render("{appid}", {})
