"""ARRSpec / DPASpec from True, dicts and specs; the loss weights' names."""

from __future__ import annotations

import pytest

from dnrt_core.tuning.specs import ARRSpec, DPASpec, as_spec, check_pool


def test_as_spec_forms():
    assert as_spec(None, ARRSpec) is None and as_spec(False, ARRSpec) is None
    assert as_spec(True, ARRSpec) == ARRSpec()
    spec = ARRSpec(sites="layer4")
    assert as_spec(spec, ARRSpec) is spec
    assert as_spec({"arr_lambda": 3.0, "pool": None}, ARRSpec) == ARRSpec(arr_lambda=3.0)
    assert as_spec({"dpa_lambda": 5.0}, DPASpec).dpa_lambda == 5.0


def test_lambda_keeps_its_config_name_and_the_old_key_warns():
    assert ARRSpec().arr_lambda is None and DPASpec().dpa_lambda == 1.0  # None: the family's
    with pytest.warns(DeprecationWarning, match="'arr_lambda'"):
        assert as_spec({"lam": 2.0}, ARRSpec).arr_lambda == 2.0
    with pytest.warns(DeprecationWarning, match="'dpa_lambda'"):
        assert as_spec({"lam": 4.0}, DPASpec).dpa_lambda == 4.0


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown ARRSpec keys"):
        as_spec({"lamda": 3}, ARRSpec)
    with pytest.raises(TypeError, match="expected True, a dict or DPASpec"):
        as_spec(3, DPASpec)
    check_pool("token")
    with pytest.raises(ValueError, match="unknown pool 'cls'"):
        check_pool("cls")
