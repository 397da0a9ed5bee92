"""Schedules, hard/soft targets and losses against hand-computed values."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pskd.core import (AlphaSchedule, check_alpha, kd_kl_div, linear_alpha, linear_alpha_per_update, mix_with_kd,
                       one_hot, quality_focal_loss, refine_targets, smooth_one_hot, soft_cross_entropy)


def test_linear_alpha_official_values():
    # a_T = 0.8 over E = 4 epochs: 0.2, 0.4, 0.6, 0.8 (0-based epochs, last epoch reaches a_T)
    assert [linear_alpha(0.8, e, 4) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert linear_alpha(0.8, 10, 4) == pytest.approx(0.8)  # clamped past the end


def test_per_update_matches_epoch_schedule_at_epoch_ends():
    steps = 7
    for e in range(5):
        assert linear_alpha_per_update(0.5, (e + 1) * steps - 1, 5 * steps) == pytest.approx(linear_alpha(0.5, e, 5))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x", None])
def test_alpha_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="alpha_T"):
        check_alpha(bad)


def test_alpha_schedule_modes():
    assert AlphaSchedule(0.8, num_epochs=4)(epoch=1) == pytest.approx(0.4)
    assert AlphaSchedule(0.8, total_updates=10)(update=4) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        AlphaSchedule(0.8)


def test_one_hot_and_smoothing():
    y = torch.tensor([2, 0])
    assert one_hot(y, 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    s = smooth_one_hot(y, 4, 0.1)
    assert s[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    with pytest.raises(ValueError, match=r"label 3 is outside \[0, 3\)"):
        one_hot(torch.tensor([3]), 3)


def test_refine_targets_hand_computed():
    hard = torch.tensor([[0.0, 1.0]])
    past = torch.tensor([[0.6, 0.4]])
    assert refine_targets(hard, past, 0.5)[0].tolist() == pytest.approx([0.3, 0.7])


def test_soft_cross_entropy_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    target = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected)


def test_soft_cross_entropy_equals_ce_for_one_hot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g)
    y = torch.randint(5, (8,), generator=g)
    assert soft_cross_entropy(logits, one_hot(y, 5)).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)


def test_no_gradient_through_target():
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.full((4, 3), 1 / 3, requires_grad=True)  # a leaf: backward would fill .grad if it flowed
    soft_cross_entropy(logits, target).backward()
    assert target.grad is None
    assert logits.grad is not None


def test_kd_kl_div_is_zero_for_identical_and_scales_with_t2():
    z = torch.randn(3, 4)
    assert kd_kl_div(z, z, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(3, 4)
    p = torch.softmax(t, -1)
    kl = (p * (torch.log_softmax(t, -1) - torch.log_softmax(z, -1))).sum(-1).mean()
    assert kd_kl_div(z, t, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)


def test_quality_focal_loss_minimum_at_target():
    target = torch.tensor([0.3])
    xs = torch.linspace(-4, 4, 801)
    losses = torch.stack([quality_focal_loss(x.view(1), target) for x in xs])
    best = torch.sigmoid(xs[losses.argmin()])
    assert best.item() == pytest.approx(0.3, abs=0.01)


def test_mix_with_kd_exact_at_zero():
    stock = torch.tensor(1.2345678)
    assert mix_with_kd(stock, torch.tensor(float("nan")), 0.0) is stock
    assert mix_with_kd(stock, torch.tensor(2.0), 0.25).item() == pytest.approx(0.75 * 1.2345678 + 0.5)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 20), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_refined_targets_are_distributions(num_classes, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (6,), generator=g)
    past = torch.softmax(torch.randn(6, num_classes, generator=g), -1)
    q = refine_targets(one_hot(y, num_classes), past, alpha)
    assert torch.all(q >= 0)
    assert torch.allclose(q.sum(-1), torch.ones(6), atol=1e-5)
    # the true class never loses more than alpha of its mass
    assert torch.all(q[torch.arange(6), y] >= 1 - alpha - 1e-6)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1), st.integers(1, 50), st.integers(1, 500))
def test_schedule_monotone_and_bounded(alpha_T, epochs, updates):
    values = [linear_alpha(alpha_T, e, epochs) for e in range(epochs)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(alpha_T)
    assert 0 <= linear_alpha_per_update(alpha_T, updates - 1, updates) <= alpha_T + 1e-12
