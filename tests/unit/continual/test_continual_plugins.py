"""Loss plugins and data guards: UIR, LwF, EWC, O-LoRA, replay."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from medvlm.continual import draw_samples
from medvlm.continual.ewc import EWCPenalty, diagonal_fisher, penalty
from medvlm.continual.lwf import answer_kl
from medvlm.continual.olora import lora_key, orthogonality
from medvlm.continual.replay import reservoir
from medvlm.continual.uir import UIRLoss, hidden_mse, inquiry_rows, last_hidden_state
from medvlm.data.collate import IGNORE_INDEX

# -- UIR --------------------------------------------------------------------------------------------

# the losses are compared as Python numbers while they still carry their graph (for backward)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")


def test_hidden_mse_masked_and_unmasked_by_hand() -> None:
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [3.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third position is padding
    assert float(hidden_mse(student, teacher, mask)) == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert float(hidden_mse(student, teacher, None)) == pytest.approx((1 + 0 + 0 + 4 + 81 + 81) / 6)


def _text_batch(model, tokenizer) -> dict[str, torch.Tensor]:
    """Two unlabeled text rows (inquiries), right-padded, and one supervised row."""
    rows = [tokenizer("USER: What color is the shape?", add_special_tokens=False)["input_ids"],
            tokenizer("USER: How many shapes are there in the picture?", add_special_tokens=False)["input_ids"],
            tokenizer("USER: Is it red? ASSISTANT: yes", add_special_tokens=False)["input_ids"]]
    longest = max(map(len, rows))
    ids = torch.full((3, longest), tokenizer.pad_token_id)
    mask = torch.zeros((3, longest), dtype=torch.long)
    labels = torch.full((3, longest), IGNORE_INDEX)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels[2, len(rows[2]) - 1] = rows[2][-1]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_uir_is_zero_for_an_identical_teacher_and_positive_after_an_update(micro_model) -> None:
    model, processor = micro_model
    student = copy.deepcopy(model).train()
    plugin = UIRLoss(copy.deepcopy(model), weight=1.0)
    batch = _text_batch(model, processor.tokenizer)
    assert inquiry_rows(batch, model.config.image_token_id).tolist() == [True, True, False]
    assert plugin(student, batch, None).detach().item() == 0.0
    with torch.no_grad():  # an update of the language model
        student.model.language_model.layers[0].mlp.down_proj.weight.add_(0.05)
    term = plugin(student, batch, None)
    assert term.detach().item() > 0
    term.backward()  # the student gets gradients, the teacher none
    assert student.model.language_model.layers[0].mlp.down_proj.weight.grad is not None
    assert all(p.grad is None for p in plugin.teacher.parameters())
    # weight scales the term; unmasked averages padding positions too (a different value)
    assert float(UIRLoss(plugin.teacher, weight=2.0)(student, batch, None)) == pytest.approx(2 * float(term))
    assert float(UIRLoss(plugin.teacher, masked=False)(student, batch, None)) != pytest.approx(float(term))


def test_uir_uses_the_normed_last_hidden_state_and_skips_batches_without_inquiries(micro_model) -> None:
    model, processor = micro_model
    batch = _text_batch(model, processor.tokenizer)
    with torch.no_grad():
        ours = last_hidden_state(model, batch["input_ids"], batch["attention_mask"])
        llm = model.model.language_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.allclose(ours, llm.last_hidden_state, atol=1e-6)
    labelled = {**batch, "labels": batch["input_ids"].clone()}
    assert UIRLoss(copy.deepcopy(model))(model, labelled, None) is None


# -- LwF --------------------------------------------------------------------------------------------


def test_lwf_kl_on_answer_positions_by_hand() -> None:
    student = torch.zeros(1, 3, 2)
    teacher = torch.zeros(1, 3, 2)
    teacher[0, 1] = torch.tensor([0.0, 2.0])  # position 1 predicts token 2, the only answer token
    student[0, 0] = torch.tensor([5.0, -5.0])  # position 0 is a prompt position: ignored
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])
    p = torch.softmax(torch.tensor([0.0, 2.0]), 0)
    expected = float((p * (p.log() - torch.log(torch.tensor([0.5, 0.5])))).sum())
    assert float(answer_kl(student, teacher, labels, 1.0)) == pytest.approx(expected, rel=1e-5)
    assert float(answer_kl(teacher, teacher, labels)) == pytest.approx(0.0, abs=1e-7)
    t = 2.0
    pt = torch.softmax(torch.tensor([0.0, 2.0]) / t, 0)
    expected_t = t**2 * float((pt * (pt.log() - torch.log(torch.tensor([0.5, 0.5])))).sum())
    assert float(answer_kl(student, teacher, labels, t)) == pytest.approx(expected_t, rel=1e-5)
    assert answer_kl(student, teacher, torch.full((1, 3), IGNORE_INDEX)) is None


# -- EWC --------------------------------------------------------------------------------------------


def test_ewc_diagonal_fisher_of_a_logistic_toy_model_by_hand() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()  # σ(w·x) = 0.5 for every x
    items = [(torch.tensor([1.0, 2.0]), 1.0), (torch.tensor([3.0, -1.0]), 0.0)]

    def log_likelihood(m, item):
        x, y = item
        z = m(x).squeeze()
        return -F.binary_cross_entropy_with_logits(z, torch.tensor(y))

    fisher = diagonal_fisher(model, items, log_likelihood, {"weight": model.weight})
    # ∇ log p = (y − σ(w·x))·x: [0.5, 1.0] and [−1.5, 0.5]; F = mean of squares
    assert fisher["weight"].flatten().tolist() == pytest.approx([1.25, 0.625])


def test_ewc_penalty_by_hand_and_online_terms_add() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    term = ({"w": torch.tensor([1.25, 0.625])}, {"w": torch.tensor([0.0, 0.0])})
    assert float(penalty([term], {"w": weight})) == pytest.approx(1.25 * 1 + 0.625 * 4)
    plugin = EWCPenalty([term, term], weight=2.0)
    plugin.params = {"w": weight}
    assert float(plugin(None, {}, None)) == pytest.approx(2 * 3.75)  # λ/2 · 2 terms · 3.75


# -- O-LoRA -----------------------------------------------------------------------------------------


def test_olora_orthogonality_by_hand_and_key_normalisation() -> None:
    earlier = [{"q.lora_A.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]])}]
    current = {"q.lora_A.weight": torch.tensor([[1.0, 1.0]])}
    # A_1·A_tᵀ = [[1], [2]] → Σ|·| = 3
    assert float(orthogonality(earlier, current)) == pytest.approx(3.0)
    assert float(orthogonality(earlier, {"q.lora_A.weight": torch.tensor([[0.0, 0.0]])})) == 0.0
    assert lora_key("base_model.model.model.layers.0.q_proj.lora_A.default.weight") == \
        lora_key("base_model.model.model.layers.0.q_proj.lora_A.weight") == "model.layers.0.q_proj.lora_A.weight"


# -- replay -----------------------------------------------------------------------------------------


def test_reservoir_is_a_deterministic_uniform_sample_of_the_stream() -> None:
    assert reservoir(range(5), 10, random.Random(0)) == [0, 1, 2, 3, 4]
    buffer = reservoir(range(1000), 50, random.Random(1))
    assert len(buffer) == 50 and len(set(buffer)) == 50 and set(buffer) <= set(range(1000))
    assert buffer == reservoir(range(1000), 50, random.Random(1))
    assert max(buffer) > 500  # late items get in too (the first 50 would be a plain prefix)
    counts = [0] * 10  # each decile of the stream keeps ~1/10 of the buffer over many draws
    for seed in range(200):
        for item in reservoir(range(100), 10, random.Random(seed)):
            counts[item // 10] += 1
    assert all(150 <= c <= 250 for c in counts)


def test_draw_samples_uses_the_pool_evenly() -> None:
    drawn = draw_samples(list("abc"), 7, random.Random(0))
    assert len(drawn) == 7 and sorted(drawn[:3]) == ["a", "b", "c"] and sorted(drawn[3:6]) == ["a", "b", "c"]
    assert draw_samples([], 3, random.Random(0)) == []
