"""The metrics registry: the families, their per-item values and what they declare for reports."""

from __future__ import annotations

import pytest

from medvlm.errors import MedvlmError
from medvlm.eval.metrics import ItemValue, Metric, item_values, metrics, register_metric, with_verdict


def test_families_and_item_values_in_output_order() -> None:
    assert [metric.name for metric in metrics()][:2] == ["llava_med", "strict"]
    values = {value.name: value for value in item_values()}
    assert list(values)[:5] == ["llava_med.open_recall", "llava_med.closed_accuracy", "strict.closed_accuracy",
                                "strict.open_exact_match", "strict.open_f1"]
    assert {name for name, value in values.items() if value.mcnemar} >= {"llava_med.closed_accuracy",
                                                                         "strict.closed_accuracy"}
    assert values["strict.open_f1"].headline == "open F1\n(strict)"
    assert values["llava_med.open_recall"].value({"llava_med": {"recall": 0.25}}) == 25.0
    assert with_verdict("strict").name == "strict" and with_verdict("parity").name == "llava_med"


def test_a_value_must_be_named_after_its_family() -> None:
    misnamed = Metric(name="mine", description="", item=lambda answered: None, summary=lambda o, c: {},
                      values=(ItemValue("other.accuracy", "OPEN", "hit", "accuracy", "#000000"),))
    with pytest.raises(ValueError, match="value 'other.accuracy' must be named 'mine.<key>'"):
        register_metric(misnamed)
    assert "mine" not in [metric.name for metric in metrics()]


def test_a_value_over_an_item_its_family_left_unscored_is_a_clear_error() -> None:
    """A family whose item function returns None for some questions of a type (a yes/no-only metric on
    closed questions, say) cannot give those items a per-item figure: it was a bare KeyError."""
    value = ItemValue("yes_only.hit", "CLOSED", "hit", "hit", "#000000")
    assert value.value({"question_id": 1, "yes_only": {"hit": 1.0}}) == 100.0
    with pytest.raises(MedvlmError, match=r"family 'yes_only' declares the per-item value 'hit' for CLOSED "
                                          r"questions but did not score question 7"):
        value.value({"question_id": 7, "answer_type": "CLOSED"})
