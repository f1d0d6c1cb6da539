"""Mechanism names: compound names resolve, display and sort the same everywhere."""

from __future__ import annotations

import pytest

from dnrt_core.mechanisms.names import (
    act_overrides,
    check_mechanism,
    is_dpa,
    mechanism_name,
    mechanism_names,
    mechanism_sort_key,
    resolve_mechanism,
)


def test_resolve():
    assert resolve_mechanism("dnrt") == ("raa", True, False)
    assert resolve_mechanism("DPA") == ("tau", False, True)
    assert resolve_mechanism("gelu+arr") == ("gelu", True, False)
    assert resolve_mechanism("dpa+arr") == ("tau", True, True)
    assert resolve_mechanism("relu") == ("relu", False, False)
    with pytest.raises(ValueError, match="did you mean 'gelu'"):
        resolve_mechanism("gleu")


def test_check_and_list():
    names = mechanism_names()
    assert {"dnrt", "dpa", "dpa+arr", "gelu+arr", "raa", "relu"} <= set(names)
    assert "dpa+arr+arr" not in names
    assert check_mechanism("raa-relu") == ("raa_relu", False, False)
    with pytest.raises(ValueError, match="unknown mechanism 'dnrtt'"):
        check_mechanism("dnrtt")


def test_display_names():
    assert mechanism_name({"act": "raa", "arr": True}) == "dnrt"
    assert mechanism_name({"act": "gelu", "arr": True}) == "gelu+arr"
    assert mechanism_name({"act": "dpa"}) == "dpa"
    assert mechanism_name({"act": "tau", "dpa": True, "arr": True}) == "dpa+arr"
    assert mechanism_name({"act": "raa", "dpa": True}) == "raa+dpa"
    assert mechanism_name({"act": None}) == "default"


def test_cli_overrides_and_dpa_flag():
    assert act_overrides("dnrt") == {"mech.act": "raa", "mech.arr": True}
    assert act_overrides("dpa") == {"mech.act": "dpa"}
    assert act_overrides("gelu") == {"mech.act": "gelu"}
    assert is_dpa("DPA") and not is_dpa("tau") and not is_dpa(None)


def test_paper_order():
    shuffled = ["dpa", "dnrt", "gelu+arr", "raa", "gelu", "relu", "custom"]
    ordered = sorted(shuffled, key=mechanism_sort_key)
    assert ordered == ["relu", "gelu", "raa", "gelu+arr", "dnrt", "dpa", "custom"]
