"""Method policies: hand-computed losses, PS-KD's epoch-to-epoch memory, CutMix mixing."""
import math

import pytest
import torch
import torch.nn.functional as F

from pskd.core import AlphaSchedule, DenseStore, Mix, build_policy, cutmix, mix_targets


def batch(seed=0, b=4, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g), torch.randint(c, (b,), generator=g), torch.arange(b)


def test_ce_equals_torch_cross_entropy():
    logits, y, ids = batch()
    assert build_policy("ce", 5).loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_ls_equals_torch_label_smoothing():
    logits, y, ids = batch()
    ref = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert build_policy("ls", 5, eps=0.1).loss(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)


def test_pskd_first_epoch_is_plain_ce_then_uses_last_epoch_predictions():
    logits, y, ids = batch()
    store = DenseStore(4, 5)
    policy = build_policy("pskd", 5, store=store, schedule=AlphaSchedule(0.8, num_epochs=4))
    assert policy.loss(logits, y, ids, epoch=0).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    policy.observe(ids, logits)
    policy.end_epoch()
    new_logits = torch.zeros(4, 5)
    a = 0.4  # 0.8 * (1 + 1) / 4
    p_prev = torch.softmax(logits, -1)
    target = (1 - a) * F.one_hot(y, 5).float() + a * p_prev
    expected = -(target * torch.log_softmax(new_logits, -1)).sum(-1).mean()
    assert policy.loss(new_logits, y, ids, epoch=1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pskd_skips_store_writes_on_mixed_batches():
    logits, y, ids = batch()
    store = DenseStore(4, 5)
    policy = build_policy("pskd", 5, store=store, schedule=AlphaSchedule(0.8, num_epochs=2))
    policy.observe(ids, logits, mix=Mix(perm=torch.tensor([1, 0, 3, 2]), lam=0.7))
    assert not store.gather(ids)[1].any()


def test_cutmix_targets_mix_like_the_images():
    t = torch.eye(3)
    m = Mix(perm=torch.tensor([2, 0, 1]), lam=0.25)
    assert mix_targets(t, m)[0].tolist() == pytest.approx([0.25, 0.0, 0.75])
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.float).view(2, 1, 8, 8)
    mixed, mix = cutmix(images, 1.0, torch.Generator().manual_seed(3))
    changed = (mixed != images).float().mean().item()
    if mix.perm.tolist() != [0, 1]:
        assert changed == pytest.approx(1 - mix.lam)  # lam is the area fraction really kept
    assert 0.0 <= mix.lam <= 1.0


def test_cutmix_is_reproducible_with_a_seeded_generator():
    images = torch.randn(4, 3, 16, 16)
    a = cutmix(images, 1.0, torch.Generator().manual_seed(7))
    b = cutmix(images, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and a[1].lam == b[1].lam


def test_cs_kd_hand_computed():
    logits, y, _ = batch(1)
    partner = torch.randn(4, 5)
    t = 4.0
    p = torch.softmax(partner / t, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(logits / t, -1))).sum(-1).mean()
    expected = F.cross_entropy(logits, y) + 1.0 * t * t * kl
    got = build_policy("cs_kd", 5).loss(logits, y, partner_logits=partner)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="partner_logits"):
        build_policy("cs_kd", 5).loss(logits, y)


def test_tf_kd_reg_hand_computed():
    logits, y, _ = batch(2)
    k, a, t, mult = 5, 0.1, 20.0, 100.0
    virtual = torch.full((4, k), 0.01 / (k - 1))
    virtual[torch.arange(4), y] = 0.99
    teacher = torch.softmax(virtual / t, -1)
    kl = torch.nn.KLDivLoss(reduction="mean")(torch.log_softmax(logits, -1), teacher)  # the reference's reduction
    expected = (1 - a) * F.cross_entropy(logits, y) + a * kl * mult
    assert build_policy("tf_kd_reg", 5).loss(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_tf_kd_self_hand_computed():
    logits, y, _ = batch(3)
    teacher_logits = torch.randn(4, 5)
    a, t, mult = 0.95, 6.0, 50.0
    kl = torch.nn.KLDivLoss(reduction="mean")(torch.log_softmax(logits / t, -1), torch.softmax(teacher_logits / t, -1))
    expected = (1 - a) * F.cross_entropy(logits, y) + a * kl * t * t * mult
    got = build_policy("tf_kd_self", 5).loss(logits, y, teacher_logits=teacher_logits)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_method_and_bad_labels():
    with pytest.raises(ValueError, match="unknown method 'pskdd'"):
        build_policy("pskdd", 5)
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 5\)"):
        build_policy("ce", 5).loss(torch.zeros(1, 5), torch.tensor([7]))


def test_pskd_state_round_trip():
    logits, y, ids = batch()
    mk = lambda: build_policy("pskd", 5, store=DenseStore(4, 5, dtype="fp16"),  # noqa: E731
                              schedule=AlphaSchedule(0.8, num_epochs=3))
    a = mk()
    a.observe(ids, logits)
    a.end_epoch()
    b = mk()
    b.load_state_dict(a.state_dict())
    assert a.loss(logits, y, ids, 1).item() == b.loss(logits, y, ids, 1).item()
    assert not math.isnan(b.loss(logits, y, ids, 1).item())
