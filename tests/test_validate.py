"""The shared argument checks: each names the argument, the value and what is accepted."""

from __future__ import annotations

import pytest

from iha import InterleavedHeadAttention
from iha.models import ModelConfig
from iha.validate import (
    check_choice,
    check_int,
    check_number,
    check_positive_number,
    check_window,
)


@pytest.mark.parametrize("value", [0, -3, 1.0, True, "2", None])
def test_check_int_rejects_what_is_not_an_int_of_at_least_the_minimum(value):
    with pytest.raises(ValueError, match=r"^n_pseudo=.* must be an int >= 1$"):
        check_int("n_pseudo", value)


def test_check_int_accepts_ints_from_the_minimum_and_none_when_allowed():
    assert check_int("top_k", 0, 0) == 0
    assert check_int("window", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^window=0 must be None or an int >= 1$"):
        check_int("window", 0, allow_none=True)


def test_check_int_without_a_minimum_takes_any_int_and_only_ints():
    assert check_int("g", -5, None) == -5
    for value in (2.0, True, "3"):
        with pytest.raises(ValueError, match=r"^g=.* must be an int$"):
            check_int("g", value, None)


@pytest.mark.parametrize("value", [-1e-9, float("nan"), True, "0", None])
def test_check_number_rejects_what_is_not_a_number_of_at_least_the_minimum(value):
    with pytest.raises(ValueError, match=r"^min_delta=.* must be a number >= 0$"):
        check_number("min_delta", value)


def test_check_number_accepts_the_minimum_itself_ints_and_infinity():
    for value in (0, 0.0, 2, float("inf")):
        check_number("t", value)
    with pytest.raises(ValueError, match=r"^top_p=0.5 must be a number >= 1$"):
        check_number("top_p", 0.5, 1)


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


def test_the_same_mistake_reads_the_same_in_tasks_theory_reproductions_and_training():
    from iha.reproduce.early_stopping import EarlyStopping
    from iha.reproduce.plans import get_plan
    from iha.tasks import make_task
    from iha.theory import heads_needed
    from iha.train.config import ConfigError, config_from_dict

    cases = [
        (lambda: get_plan("huge"), "mode='huge' is not supported; expected one of"),
        (lambda: get_plan("tiny", seeds=0), "seeds=0 must be None or an int >= 1"),
        (lambda: heads_needed(4, "rnn"), "arch='rnn' is not supported; expected one of"),
        (lambda: make_task("sudoku"), "name='sudoku' is not supported; expected one of"),
        (lambda: EarlyStopping(patience=0), "patience=0 must be an int >= 1"),
        (lambda: EarlyStopping(patience=1, min_delta=-1.0), "min_delta=-1.0 must be a number >= 0"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(message), str(error.value)
    with pytest.raises(ConfigError, match=r"^config key 'train.batch_size'=0 must be an int >= 1$"):
        config_from_dict(
            {"data": {"source": "synthetic", "task": "mqar"}, "train": {"batch_size": 0}},
            resolve_model=False,
        )
