"""AdaDFKD (METHODS.md §12): the R2M window and loss, the window schedule, the in-batch InfoNCE, the
negative queue, the self-paced granularity, the feature projection and the unmasked adversarial term."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import datafree_kd
from datafree.synthesis import criterions, curriculum
from datafree.run.distributed import DistributedContext
from datafree.run.numerics import Numerics
from datafree.synthesis.pool import NegativeQueue
from datafree.synthesis import cudfkd
from datafree.synthesis.adadfkd import AdaDFKDSynthesizer
from tiny_models import TinyCNN, tiny_synthesis_setup


class NarrowCNN(TinyCNN):
    """TinyCNN with 16-wide penultimate features (the teacher's are 32): the projection is needed."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.features[-3] = nn.Conv2d(32, 16, 3, padding=1, bias=False)
        self.features[-2] = nn.BatchNorm2d(16)
        self.feature_dim = 16
        self.linear = nn.Linear(16, num_classes)


def make_synthesizer(student: nn.Module | None = None, **overrides) -> AdaDFKDSynthesizer:
    setup = tiny_synthesis_setup(batch_size=4, epochs=8, student=student)
    options = AdaDFKDSynthesizer.Options.resolve({"ngf": 8, "lambda_growth": 1e-4, "queue_size": 10, **overrides})
    return AdaDFKDSynthesizer(setup, options)


# ----------------------------------------------------------------------------- R2M (§12.4)
def unit_rows(*angles_in_degrees: float) -> torch.Tensor:
    radians = torch.tensor(angles_in_degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_r2m_window_keeps_ranks_from_floor_h_k_to_floor_h_plus_length_k():
    assert criterions.r2m_window(0.0, 0.5, 4) == (0, 2)
    assert criterions.r2m_window(0.5, 0.5, 4) == (2, 4)
    assert criterions.r2m_window(0.25, 0.5, 10) == (2, 7)             # ⌊2.5⌋, ⌊7.5⌋
    assert criterions.r2m_window(0.0, 0.29, 100) == (0, 29)           # 0.29·100 = 28.999…96 in floats
    h = curriculum.hard_factor(299, 300, 0.25, 0.75, 0.9)             # 1 − ℓ = 0.0999…98 in floats
    assert criterions.r2m_window(h, 0.9, 4096) == (409, 4096)
    assert criterions.r2m_window(0.0, 0.1, 5) == (0, 0)               # ℓK < 1: an empty window


def test_r2m_loss_uses_the_sorted_window_and_matches_a_hand_computed_value():
    query = unit_rows(0.0)                                   # q = (1, 0)
    key = unit_rows(0.0)                                     # l_pos = 1
    queue = unit_rows(90.0, 36.87, 126.87, 53.13)            # q·Q = (0, 0.8, −0.6, 0.6): unsorted on purpose
    # h = 0, ℓ = 0.5: the two least similar negatives (−0.6, 0); τ = 1.
    easy = criterions.r2m_loss(query, key, queue, 0.0, 0.5, 1.0)
    assert easy.item() == pytest.approx(math.log(math.e + math.exp(-0.6) + 1.0) - 1.0, abs=1e-4)
    # h = 1 − ℓ = 0.5: the K·ℓ = 2 most similar negatives (0.6, 0.8); τ = 0.5.
    hard = criterions.r2m_loss(query, key, queue, 0.5, 0.5, 0.5)
    assert hard.item() == pytest.approx(math.log(math.exp(2) + math.exp(1.2) + math.exp(1.6)) - 2.0, abs=1e-4)
    # Same as CE over the explicit logits, whatever the order of the queue's rows.
    logits = torch.tensor([[1.0, 0.6, 0.8]], dtype=torch.float64) / 0.5
    expected = F.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
    assert criterions.r2m_loss(query, key, queue.flip(0), 0.5, 0.5, 0.5).item() == pytest.approx(expected.item())
    # The whole queue (ℓ = 1) is plain MoCo InfoNCE; the gradient reaches the query only.
    query = query.clone().requires_grad_(True)
    key, queue = key.clone().requires_grad_(True), queue.clone().requires_grad_(True)
    criterions.r2m_loss(query, key, queue, 0.0, 1.0, 0.07).backward()
    assert query.grad.abs().sum() > 0 and key.grad is None and queue.grad is None


def test_hard_factor_follows_the_published_rows():
    h = [curriculum.hard_factor(ep, 300, 0.25, 0.75, 0.9) for ep in range(300)]
    assert h[:76] == [0.0] * 76                                      # 0 until epoch ⌊0.25·300⌋ = 75
    assert h[76] == pytest.approx(0.1 / 150) and h[150] == pytest.approx(0.05)
    assert h[225:] == pytest.approx([0.1] * 75)                      # 1 − ℓ from epoch 75 + ⌊300·0.5⌋
    assert all(later >= earlier for earlier, later in zip(h, h[1:]))
    # cifar100 wrn40_2→wrn16_2: E 500, b .2, e .79, ℓ .8 → ramp of ⌊500·0.59⌋ = 295 epochs from 100.
    assert curriculum.hard_factor(100, 500, 0.2, 0.79, 0.8) == 0.0
    assert curriculum.hard_factor(200, 500, 0.2, 0.79, 0.8) == pytest.approx(0.2 * 100 / 295)
    assert curriculum.hard_factor(395, 500, 0.2, 0.79, 0.8) == pytest.approx(0.2)
    assert curriculum.hard_factor(499, 500, 0.2, 0.79, 0.8) == pytest.approx(0.2)
    # [CLEAN] no ramp (b = e): a jump to 1 − ℓ after epoch ⌊bE⌋ instead of a division by zero.
    assert [curriculum.hard_factor(ep, 10, 0.5, 0.5, 0.8) for ep in (4, 5, 6)] == pytest.approx([0, 0, 0.2])
    # The ramp lasts ⌊E·(e − b)⌋ epochs (here ⌊5.5⌋ = 5), not ⌊eE⌋ − ⌊bE⌋ (= 6).
    assert curriculum.hard_factor(6, 10, 0.25, 0.8, 0.5) == pytest.approx(0.5 * 4 / 5)


def test_begin_epoch_logs_the_window_position_and_is_idempotent():
    synthesizer = make_synthesizer(begin_fraction=0.25, end_fraction=0.75, length=0.8)   # E = 8: ramp 2 → 6
    values = [synthesizer.begin_epoch(epoch)["hard_factor"] for epoch in range(8)]
    assert values == pytest.approx([0, 0, 0, 0.05, 0.1, 0.15, 0.2, 0.2])
    assert synthesizer.begin_epoch(5) == synthesizer.begin_epoch(5)
    assert synthesizer.hard_factor == pytest.approx(0.15)


# ----------------------------------------------------------------------------- InfoNCE (§12.5)
def test_infonce_is_zero_for_identical_orthogonal_features_and_about_log_b_for_unrelated_ones():
    features = torch.eye(8)[:6] * 3.0                       # 6 mutually orthogonal rows
    assert criterions.infonce(features, features, 0.07).item() < 1e-5
    generator = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(64, 128, generator=generator), torch.randn(64, 128, generator=generator)
    assert criterions.infonce(teacher, student, 0.07).item() > 0.95 * math.log(64)
    # Hand value: D = [[1, 0], [0.6, 0.8]] (rows = teacher), τ = 1, positives on the diagonal.
    teacher = torch.tensor([[2.0, 0.0], [0.6, 0.8]], requires_grad=True)
    student = torch.tensor([[1.0, 0.0], [0.0, 5.0]], requires_grad=True)
    expected = ((math.log(math.e + 1) - 1) + (math.log(math.exp(0.6) + math.exp(0.8)) - 0.8)) / 2
    loss = criterions.infonce(teacher, student, 1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0     # f_T without gradient


# ----------------------------------------------------------------------------- queue (§12.4, §12.8 item 2)
def test_queue_starts_with_unit_rows_from_the_given_generator():
    queue = NegativeQueue(dim=3, capacity=7, generator=torch.Generator().manual_seed(1))
    assert queue.keys.shape == (7, 3)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(7))
    same = NegativeQueue(dim=3, capacity=7, generator=torch.Generator().manual_seed(1))
    other = NegativeQueue(dim=3, capacity=7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(queue.keys, same.keys) and not torch.equal(queue.keys, other.keys)


def test_queue_accepts_any_batch_size_wraps_and_round_trips():
    queue = NegativeQueue(dim=1, capacity=5, generator=torch.Generator().manual_seed(0))
    rows = lambda *values: torch.tensor(values, dtype=torch.float32).unsqueeze(1)   # noqa: E731
    queue.enqueue(rows(1, 2, 3))                             # K = 5 is not a multiple of the batch of 3
    before = queue.keys
    queue.enqueue(rows(4, 5, 6))                             # wraps: 6 goes to row 0
    assert queue.keys.squeeze(1).tolist() == [6, 2, 3, 4, 5] and queue.pointer == 1
    assert before.squeeze(1)[:3].tolist() == [1, 2, 3] and before[3:].abs().max() <= 1  # an earlier read is kept
    queue.enqueue(rows(*range(10, 17)))                      # 7 rows > K: the last 5 survive, in ring order
    assert queue.keys.squeeze(1).tolist() == [14, 15, 16, 12, 13] and queue.pointer == 3
    state = queue.state_dict()
    restored = NegativeQueue(dim=1, capacity=5, generator=torch.Generator().manual_seed(9))
    restored.load_state_dict(state)
    assert torch.equal(restored.keys, queue.keys) and restored.pointer == 3
    queue.enqueue(rows(7, 8))
    restored.enqueue(rows(7, 8))
    assert torch.equal(restored.keys, queue.keys)
    with pytest.raises(ValueError, match="queue state is 5×1"):
        NegativeQueue(dim=1, capacity=4).load_state_dict(state)


# ----------------------------------------------------------------------------- student loss (§12.5)
@pytest.mark.parametrize("loss_type", ["kl", "l1"])
def test_batch_and_per_sample_self_paced_weights_agree_when_all_losses_are_equal(loss_type):
    teacher_logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(4, 1)
    student_logits = torch.tensor([[0.5, 0.5, 0.0]]).repeat(4, 1)
    features = (torch.randn(4, 32, generator=torch.Generator().manual_seed(0)),
                torch.randn(4, 32, generator=torch.Generator().manual_seed(1)))
    results = {}
    for granularity in ("batch", "sample"):
        synthesizer = make_synthesizer(spl_granularity=granularity, loss=loss_type, lambda_0=0.5)
        results[granularity] = synthesizer.student_loss(student_logits, teacher_logits, 1000, features)
    (batch_loss, batch_terms), (sample_loss, sample_terms) = results["batch"], results["sample"]
    torch.testing.assert_close(batch_loss, sample_loss)
    torch.testing.assert_close(batch_terms["loss_nce"], sample_terms["loss_nce"])
    # ℓ = ℓ_KD + s_nce·L_NCE, weighted by v = SPL_log(ℓ, λ) with λ = 0.5 + 1e-4·1000 = 0.6.
    synthesizer = make_synthesizer(loss=loss_type)
    kd = synthesizer.per_sample_loss(student_logits, teacher_logits)[0]
    total = kd + 0.1 * criterions.infonce(features[1], features[0], 0.07)
    weight = curriculum.self_paced_weights(total.reshape(1), 0.6, "log")[0]
    assert batch_loss.item() == pytest.approx((weight * total).item(), rel=1e-5)
    assert 0 < weight.item() < 1


def test_student_loss_is_the_batch_weight_times_the_mean_loss_by_default():
    synthesizer = make_synthesizer(lambda_0=1.0, lambda_growth=0.0, s_nce=0.0, loss="l1")
    teacher_logits = torch.zeros(2, 2)
    student_logits = torch.tensor([[1.0, 1.0], [3.0, 3.0]])            # ℓ = (1, 3), ℓ̄ = 2
    features = (torch.eye(2), torch.eye(2))
    loss, terms = synthesizer.student_loss(student_logits, teacher_logits, 0, features)
    v = (1 + math.exp(-1)) / (1 + math.exp(2 - 1))                     # SPL_log(ℓ̄ = 2, λ = 1)
    assert loss.item() == pytest.approx(v * 2, rel=1e-6)
    assert terms["mean_sample_weight"].item() == pytest.approx(v, rel=1e-6)
    assert terms["loss_nce"].item() < 1e-5


# ----------------------------------------------------------------------------- projection (§12.8 item 1)
def test_matching_widths_need_no_projection():
    synthesizer = make_synthesizer()
    features = torch.randn(3, 32)
    assert synthesizer.projection is None and synthesizer.student_extra_parameters() == []
    assert synthesizer.project(features) is features
    assert "projection" not in synthesizer.state_dict()


def test_persistent_projection_is_in_the_student_optimizer_and_is_trained(tmp_path, cifar10_root, tiny_teacher,
                                                                         monkeypatch):
    import registry

    monkeypatch.setitem(registry.CLASSIFIERS, "narrow_cnn", NarrowCNN)
    args = datafree_kd.build_parser().parse_args([
        "--method", "adadfkd", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "narrow_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(tmp_path / "run"),
        "--device", "cpu", "--batch_size", "8", "--ep_steps", "2", "--kd_steps", "2", "--ngf", "8",
        "--queue_size", "12"])
    options = datafree_kd.resolve_options(args)
    teacher = datafree_kd.load_teacher(options, torch.device("cpu"), channels_last=False)
    parts = datafree_kd.build_training(options, teacher, DistributedContext(), Numerics(torch.device("cpu"), None,
                                                                                        False))
    synthesizer = parts.synthesizer
    projection = synthesizer.projection
    assert isinstance(projection, nn.Linear) and (projection.in_features, projection.out_features) == (16, 32)
    optimized = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in projection.parameters()} <= optimized
    synthesizer.begin_epoch(0)
    terms = synthesizer.synthesize()                          # R2M keys go through P (no training there)
    assert torch.isfinite(terms["loss_r2m"]) and synthesizer.queue.pointer == 8
    before = projection.weight.detach().clone()
    datafree_kd.student_step(synthesizer, teacher, parts.trained_student, parts.optimizer, parts.scaler, None, 0)
    assert not torch.equal(before, projection.weight)          # trained by the student's SGD step
    state = synthesizer.state_dict()
    assert torch.equal(state["projection"]["weight"], projection.weight)


def test_reference_mode_draws_a_new_random_projection_at_each_use():
    synthesizer = make_synthesizer(student=NarrowCNN(10), ada_ref_random_projection=True)
    assert synthesizer.projection is None and synthesizer.student_extra_parameters() == []
    features = torch.randn(3, 16)
    state = synthesizer.noise_stream.get_state()
    first, second = synthesizer.project(features), synthesizer.project(features)
    assert first.shape == (3, 32) and not torch.allclose(first, second)
    synthesizer.noise_stream.set_state(state)                 # drawn from the noise stream
    torch.testing.assert_close(synthesizer.project(features), first)
    persistent = make_synthesizer(student=NarrowCNN(10))
    torch.testing.assert_close(persistent.project(features), persistent.project(features))


# ----------------------------------------------------------------------------- generator step (§12.4)
def test_generator_step_adds_r2m_with_one_forward_each_and_an_unmasked_adversarial_term(monkeypatch):
    synthesizer = make_synthesizer(adv=1.0, hard=0.1)
    assert AdaDFKDSynthesizer.Options.resolve().adv_mask == "off" and synthesizer.adv_mask is False
    masks = []
    original = cudfkd.adversarial_kl_masked
    monkeypatch.setattr(cudfkd, "adversarial_kl_masked",
                        lambda *args, **kwargs: masks.append(kwargs["mask"]) or original(*args, **kwargs))
    calls = {"teacher": 0, "student": 0}
    for name, network in (("teacher", synthesizer.teacher), ("student", synthesizer.student)):
        forward = network.forward
        monkeypatch.setattr(network, "forward",
                            lambda *args, _f=forward, _n=name, **kwargs: calls.__setitem__(_n, calls[_n] + 1)
                            or _f(*args, **kwargs))
    keys_before = synthesizer.queue.keys
    terms = synthesizer.synthesize()
    assert masks == [False]
    assert {"loss_adv", "loss_r2m", "loss_entropy", "loss_oh", "loss_bn"} <= set(terms)
    assert calls == {"teacher": 1, "student": 1}             # one forward of each serves all terms
    assert synthesizer.queue.pointer == 4                    # the Bs = 4 keys were enqueued ...
    assert torch.equal(synthesizer.queue.keys[4:], keys_before[4:])
    torch.testing.assert_close(synthesizer.queue.keys[:4].norm(dim=1), torch.ones(4))  # ... as unit vectors


def test_student_is_queried_for_r2m_even_when_the_adversarial_weight_is_zero(monkeypatch):
    synthesizer = make_synthesizer(adv=0.0, hard=0.1)
    queries = []
    forward = synthesizer.student.forward
    monkeypatch.setattr(synthesizer.student, "forward", lambda *a, **k: queries.append(k) or forward(*a, **k))
    terms = synthesizer.synthesize()
    assert "loss_adv" not in terms and "loss_r2m" in terms and queries == [{"return_features": True}]
    quiet = make_synthesizer(adv=0.0, hard=0.0)
    forward = quiet.student.forward
    monkeypatch.setattr(quiet.student, "forward", lambda *a, **k: queries.append(k) or forward(*a, **k))
    terms = quiet.synthesize()
    assert "loss_r2m" not in terms and len(queries) == 1 and quiet.queue.pointer == 0
