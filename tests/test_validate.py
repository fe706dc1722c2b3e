"""The shared argument checks: each names the argument, the value and what is accepted."""

from __future__ import annotations

import pytest

from iha import InterleavedHeadAttention
from iha.models import ModelConfig
from iha.validate import check_choice, check_int, check_positive_number, check_window


@pytest.mark.parametrize("value", [0, -3, 1.0, True, "2", None])
def test_check_int_rejects_what_is_not_an_int_of_at_least_the_minimum(value):
    with pytest.raises(ValueError, match=r"^n_pseudo=.* must be an int >= 1$"):
        check_int("n_pseudo", value)


def test_check_int_accepts_ints_from_the_minimum_and_none_when_allowed():
    assert check_int("top_k", 0, 0) == 0
    assert check_int("window", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^window=0 must be None or an int >= 1$"):
        check_int("window", 0, allow_none=True)


def test_check_choice_lists_the_accepted_values():
    check_choice("mask", "flat", ("flat", "token"))
    with pytest.raises(ValueError, match=r"^mask='causal' is not supported; expected one of "
                                         r"\['flat', 'token'\]$"):  # fmt: skip
        check_choice("mask", "causal", ("flat", "token"))


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True, "1"])
def test_check_positive_number_rejects_non_positive_and_non_numbers(value):
    with pytest.raises(ValueError, match="rope_theta="):
        check_positive_number("rope_theta", value)


def test_check_window_needs_a_mask_with_an_order():
    check_window(3, "flat")
    with pytest.raises(ValueError, match="only defined"):
        check_window(3, "none")


def test_the_same_mistake_reads_the_same_in_module_and_config():
    with pytest.raises(ValueError) as module_error:
        InterleavedHeadAttention(16, 4, collapse="sum")
    with pytest.raises(ValueError) as config_error:
        ModelConfig(iha_collapse="sum")
    tail = "='sum' is not supported; expected one of ['global', 'per_head']"
    assert str(module_error.value) == "collapse" + tail
    assert str(config_error.value) == "iha_collapse" + tail
