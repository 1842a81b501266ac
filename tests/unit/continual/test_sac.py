"""SAC (METHODS.md §5): the published test vectors, invariants, the exact LoRA path, model-level use."""

from __future__ import annotations

import pytest
import torch

from medvlm.continual import ConsolidationConfig, LowRankDelta, get_consolidator
from medvlm.continual.sac import (
    consolidate_delta,
    consolidate_delta_with_outcome,
    consolidate_lora_delta,
    consolidate_low_rank,
    low_rank_svd,
    sac_window,
    smooth_spectrum,
)

# (σ, r, K, σ̃) — METHODS.md §5, Δ = diag(σ); None: no K exists, Δ kept whole.
VECTORS = [
    ([10, 8, 6, 4, 2, 0], 0.5, 6, [5, 4, 3, 2, 1, 0]),
    ([10, 1, 1, 1, 1, 1, 1, 1], 0.3, 5, [2.8, 1, 1, 1, 1, 1, 1, 1]),
    ([1, 1, 1, 1], 0.5, None, [1, 1, 1, 1]),
    ([5], 0.3, None, [5]),
    ([9, 3, 1, 0.5], 1.0, 1, [9, 3, 1, 0.5]),
]


@pytest.mark.parametrize("sigma, ratio, window, expected", VECTORS)
def test_window_and_smoothed_spectrum_match_the_test_vectors(sigma, ratio, window, expected) -> None:
    s = torch.tensor(sigma, dtype=torch.float32)
    assert sac_window(s, ratio) == window
    smoothed = smooth_spectrum(s, window) if window else s
    assert smoothed.tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("sigma, ratio, window, expected", VECTORS)
def test_consolidating_diag_sigma_gives_diag_sigma_tilde(sigma, ratio, window, expected) -> None:
    delta = torch.diag(torch.tensor(sigma, dtype=torch.float32))
    result, outcome = consolidate_delta_with_outcome(delta, ratio)
    assert outcome.window == window
    assert torch.allclose(result, torch.diag(torch.tensor(expected, dtype=torch.float32)), atol=1e-5)


def test_edge_cases_zero_delta_one_dimensional_and_ratio_at_least_one() -> None:
    zero = torch.zeros(4, 3)
    assert torch.equal(consolidate_delta(zero, 0.2), zero)
    bias = torch.tensor([3.0, -1.0, 2.0])  # 1-D: p = 1, mean(σ₁) = σ₁ > r·σ₁ → kept whole
    assert torch.equal(consolidate_delta(bias, 0.2), bias)
    dense = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(consolidate_delta(dense, 1.0), dense)
    assert torch.allclose(consolidate_delta(dense, 3.0), dense)


def test_shape_and_dtype_are_kept_and_arithmetic_is_fp32() -> None:
    g = torch.Generator().manual_seed(2)
    delta = torch.randn(4, 6, 8, generator=g)  # reshaped to 24×8 (last dim n)
    result = consolidate_delta(delta, 0.2)
    assert result.shape == delta.shape
    reference = consolidate_delta(delta.reshape(24, 8), 0.2).reshape(4, 6, 8)
    assert torch.equal(result, reference)
    half = consolidate_delta(delta.to(torch.bfloat16), 0.2)
    assert half.dtype == torch.bfloat16
    expected = consolidate_delta(delta.to(torch.bfloat16).to(torch.float32), 0.2).to(torch.bfloat16)
    assert torch.equal(half, expected)


@pytest.mark.parametrize("seed, shape, ratio", [(0, (40, 30), 0.2), (1, (25, 60), 0.1), (2, (50, 50), 0.3),
                                                (3, (64, 16), 0.2)])
def test_invariants_on_random_deltas(seed: int, shape: tuple[int, int], ratio: float) -> None:
    g = torch.Generator().manual_seed(seed)
    # a decaying spectrum, as finetuning updates have: U diag(σ) Vᵀ with σ_i = 1/i²
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=g))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=g))
    sigma = 1.0 / torch.arange(1, min(shape) + 1, dtype=torch.float32) ** 2
    delta = (u * sigma) @ v.T
    result, outcome = consolidate_delta_with_outcome(delta, ratio)
    assert outcome.window is not None and outcome.window > 1  # this spectrum is smoothed
    expected = smooth_spectrum(sigma, outcome.window)
    # singular vectors unchanged: Uᵀ Δ̃ V is diagonal with σ̃ on it
    core = u.T @ result @ v
    assert torch.allclose(core, torch.diag(expected), atol=1e-5)
    assert bool((expected <= sigma + 1e-7).all())  # σ̃ ≤ σ
    assert bool((expected[1:] <= expected[:-1] + 1e-7).all())  # non-increasing
    assert torch.allclose(torch.linalg.svdvals(result), expected, atol=1e-5)


@pytest.mark.parametrize("seed, m, n, rank, ratio", [(0, 96, 64, 8, 0.2), (1, 48, 120, 4, 0.1),
                                                     (2, 80, 80, 16, 0.3), (3, 128, 40, 2, 0.2)])
def test_lora_path_equals_full_svd_path(seed: int, m: int, n: int, rank: int, ratio: float) -> None:
    g = torch.Generator().manual_seed(seed)
    b, a = torch.randn(m, rank, generator=g), torch.randn(rank, n, generator=g) * 0.1
    scale = 2.0
    full = consolidate_delta((b @ a) * scale, ratio)
    fast, outcome = consolidate_lora_delta(b, a, scale, ratio)
    assert outcome.rank == rank  # the fast path ran (r singular values, padded to p for K)
    assert float((fast - full).norm() / full.norm()) < 1e-5
    # the factors reproduce the same product
    new_b, new_a, _ = consolidate_low_rank(b, a, scale, ratio)
    assert float((new_b @ new_a - full).norm() / full.norm()) < 1e-5


def test_low_rank_svd_is_the_exact_thin_svd() -> None:
    g = torch.Generator().manual_seed(5)
    b, a = torch.randn(30, 3, generator=g), torch.randn(3, 20, generator=g)
    u, sigma, vh = low_rank_svd(b, a, 0.5)
    assert torch.allclose((u * sigma) @ vh, 0.5 * b @ a, atol=1e-5)
    assert torch.allclose(sigma, torch.linalg.svdvals(0.5 * b @ a)[:3], rtol=1e-5)
    assert torch.allclose(u.T @ u, torch.eye(3), atol=1e-5) and torch.allclose(vh @ vh.T, torch.eye(3), atol=1e-5)


def test_full_rank_lora_falls_back_to_the_full_svd() -> None:
    g = torch.Generator().manual_seed(6)
    b, a = torch.randn(6, 8, generator=g), torch.randn(8, 10, generator=g)  # r = 8 ≥ p = 6
    fast, outcome = consolidate_lora_delta(b, a, 1.0, 0.2)
    assert outcome.rank == 6
    assert torch.allclose(fast, consolidate_delta(b @ a, 0.2), atol=1e-5)


def test_model_level_sac_uses_lora_factors_and_keeps_untouched_tensors() -> None:
    g = torch.Generator().manual_seed(7)
    previous = {"w": torch.randn(20, 12, generator=g), "frozen": torch.randn(5, 5, generator=g),
                "norm": torch.ones(12), "steps": torch.tensor([3])}
    b, a = torch.randn(20, 2, generator=g), torch.randn(2, 12, generator=g)
    current = {"w": previous["w"] + b @ a, "frozen": previous["frozen"].clone(),
               "norm": previous["norm"] + 0.5, "steps": torch.tensor([4])}
    config = ConsolidationConfig(ratio=0.2, low_rank={"w": LowRankDelta(b, a, 1.0)})
    state = get_consolidator("sac")(previous, current, config)
    assert torch.allclose(state["w"], previous["w"] + consolidate_delta(b @ a, 0.2), atol=1e-5)
    assert torch.equal(state["frozen"], previous["frozen"])  # Δ = 0
    assert torch.allclose(state["norm"], current["norm"])  # 1-D: kept whole
    assert torch.equal(state["steps"], current["steps"])  # integer buffers come from θ̂_t
    assert config.stats["lora_path"] == 1 and config.stats["tensors_smoothed"] == 1


def test_model_mix_interpolates() -> None:
    previous, current = {"w": torch.zeros(2, 2)}, {"w": torch.full((2, 2), 4.0)}
    state = get_consolidator("mix")(previous, current, ConsolidationConfig(alpha=0.25))
    assert torch.equal(state["w"], torch.full((2, 2), 1.0))
