"""The shared generation path: streamed pieces add up to the final answer; per-row limits and stops."""

from __future__ import annotations

import pytest

from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.eval.generation import GenerationItem, TextStream, trim_at_stop


@pytest.mark.parametrize(
    ("pieces", "stops", "final"),
    [
        (["  Hel", "lo wor", "ld  "], (), "Hello world"),
        (["The answer", " is yes.\n#", "## Human: more"], ("###",), "The answer is yes."),
        (["a #", "# b"], ("###",), "a ## b"),  # a partial stop that does not complete is released
        (["yes", " \n", "no"], ("\n",), "yes"),
        (["caf", "\ufffd"], (), "caf\ufffd"),  # a lone replacement character at the very end is kept
    ],
)
def test_streamed_pieces_add_up_to_the_trimmed_answer(pieces, stops, final) -> None:
    stream, text, sent = TextStream(stops), "", []
    for piece in pieces:
        text += piece
        sent.append(stream.update(text))
        if stream.done:
            break
    if not stream.done:
        sent.append(stream.finish(text))
    assert "".join(sent) == final == trim_at_stop(text, stops)


def test_stream_holds_back_what_may_still_change() -> None:
    stream = TextStream(("###",))
    assert stream.update("Yes #") == "Yes"  # the space and a possible stop start are held
    assert stream.update("Yes ##") == ""
    assert stream.update("Yes ##x") == " ##x"
    assert stream.update("Yes ##x caf\ufffd") == " caf"  # an incomplete multi-byte character waits
    assert stream.update("Yes ##x café") == "é"


def _prompt(generator, question: str) -> list[int]:
    sample = vqa_sample(id=question, question=question, answer=None, meta=SampleMeta(dataset="t", split="test"))
    return generator.prompt_ids(sample)


def test_rows_of_one_batch_keep_their_own_limits_and_stream(micro_generator) -> None:
    questions = ["Is there an effusion?", "Which organ is shown in this image today?", "Describe it."]
    limits = [12, 5, 9]
    items = [GenerationItem(_prompt(micro_generator, q), None, n) for q, n in zip(questions, limits, strict=True)]
    alone = [micro_generator.generate([item])[0] for item in items]
    streamed: list[list[str]] = [[], [], []]
    listeners = [lambda delta, done, row=row: streamed[row].append(delta) for row in range(3)]
    batch = micro_generator.generate(items, listeners=listeners)
    assert batch == alone  # each row as if it ran alone with its own budget
    assert [answer.completion_tokens for answer in batch] == limits  # a random model never stops early
    assert [answer.finish_reason for answer in batch] == ["length"] * 3
    assert ["".join(pieces) for pieces in streamed] == [answer.text for answer in batch]
    assert all(len(pieces) > 1 for pieces in streamed)  # streamed in several pieces, not at the end


def test_a_stop_string_ends_its_row(micro_generator) -> None:
    ids = _prompt(micro_generator, "Is there an effusion?")
    free = micro_generator.generate([GenerationItem(ids, None, 12)])[0]
    words = free.text.split()
    assert len(words) >= 3
    stop = words[2]
    stopped = micro_generator.generate([GenerationItem(ids, None, 12, stops=(stop,))])[0]
    assert stopped.text == trim_at_stop(free.text, (stop,))
    assert stopped.finish_reason == "stop" and stopped.completion_tokens < 12
