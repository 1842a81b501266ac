"""The restricted unpickler on hostile pickles: bounded work, clear refusals (issue 11)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from medvlm.data import safe_pickle
from medvlm.errors import DataError


def _timed_refusal(data: bytes, match: str) -> float:
    started = time.perf_counter()
    with pytest.raises(DataError, match=match) as info:
        safe_pickle.loads(data, file="qa.pkl")
    assert str(info.value).startswith("qa.pkl: ") and len(str(info.value)) < 300
    return time.perf_counter() - started


def test_a_self_referencing_list_is_refused_at_once() -> None:
    looped: list = []
    looped.append(looped)
    data = pickle.dumps(looped, protocol=2)
    assert len(data) < 80
    assert _timed_refusal(data, r"\[0\]: contains itself \(a reference cycle\)") < 0.5


def test_a_memo_bomb_is_refused_at_once() -> None:
    bomb: list = ["x"]
    for _ in range(64):  # 2**64 leaves once expanded, from a few hundred bytes
        bomb = [bomb, bomb]
    data = pickle.dumps(bomb, protocol=2)
    assert len(data) < 500
    assert _timed_refusal(data, r"expands to more than 20,000,000 values") < 0.5


def test_deep_nesting_and_huge_allocations_are_refused() -> None:
    deep = b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."  # 5000 nested lists
    assert _timed_refusal(deep, r"nested more than 100 levels deep") < 0.5
    terabyte = b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x7f\x85R."  # bytearray(2**31 - 2**24)
    assert _timed_refusal(terabyte, r"refused bytearray\(<size>\)") < 0.5


def test_plain_data_with_shared_references_still_loads() -> None:
    shared = {"answer": "yes"}
    value = safe_pickle.loads(pickle.dumps([shared, shared, {"q": [1, 2.5, b"x", None]}]))
    assert value == [{"answer": "yes"}, {"answer": "yes"}, {"q": [1, 2.5, b"x", None]}]


def test_the_pathvqa_source_names_the_file(cli, tmp_path: Path) -> None:
    qas = tmp_path / "pvqa" / "qas" / "test"
    qas.mkdir(parents=True)
    looped: list = []
    looped.append(looped)
    (qas / "test_qa.pkl").write_bytes(pickle.dumps(looped, protocol=2))
    result = cli("data", "inspect", "--dataset", "pathvqa", "--path", tmp_path / "pvqa", "--split", "test")
    result.refused(f"{qas / 'test_qa.pkl'}: refused pickle", "reference cycle", within=3)
