"""Tests for datafree.synthesis.criterions (§3.1, §4.5, §5.2) and datafree.synthesis.hooks (§3.2, §4.5).

Expected values are computed independently with numpy / explicit formulas on small logits.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from datafree.synthesis import criterions
from datafree.synthesis.hooks import BatchNormStatisticsHook, InstanceFeatureHook, freeze, instance_feature_modules

STUDENT = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]])
TEACHER = np.array([[0.5, 1.5, -0.5], [2.0, 0.1, 0.3]])  # row 0 agrees with STUDENT (class 1), row 1 does not


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ_c p log(p/q) per row."""
    return (p * np.log(p / q)).sum(axis=1)


def tensors(*arrays: np.ndarray, grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor(array, dtype=torch.float64, requires_grad=grad) for array in arrays]


# ----------------------------------------------------------------------------- KD losses
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_divergence_batchmean_and_none(temperature: float) -> None:
    s, t = tensors(STUDENT, TEACHER)
    p_teacher, p_student = softmax(TEACHER / temperature), softmax(STUDENT / temperature)
    elements = temperature ** 2 * p_teacher * np.log(p_teacher / p_student)
    matrix = criterions.kl_divergence(s, t, temperature, reduction="none")
    assert matrix.shape == (2, 3)
    np.testing.assert_allclose(matrix.numpy(), elements, rtol=1e-12)
    batchmean = criterions.kl_divergence(s, t, temperature)
    assert batchmean.item() == pytest.approx(elements.sum() / 2, rel=1e-12)
    per_sample = criterions.per_sample_kl(s, t, temperature)
    np.testing.assert_allclose(per_sample.numpy(), elements.sum(axis=1), rtol=1e-12)
    with pytest.raises(ValueError):
        criterions.kl_divergence(s, t, temperature, reduction="mean")


def test_kl_divergence_is_zero_for_equal_logits_and_differentiates_both_sides() -> None:
    s, t = tensors(STUDENT, TEACHER, grad=True)
    assert criterions.kl_divergence(s.detach(), s.detach(), 20.0).item() == pytest.approx(0.0, abs=1e-12)
    criterions.kl_divergence(s, t, 2.0).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_l1_and_l2_logits() -> None:
    s, t = tensors(STUDENT, TEACHER)
    difference = STUDENT - TEACHER
    np.testing.assert_allclose(criterions.l1_logits(s, t, reduction="none").numpy(),
                               np.abs(difference).mean(axis=1), rtol=1e-12)
    assert criterions.l1_logits(s, t).item() == pytest.approx(np.abs(difference).mean(), rel=1e-12)
    np.testing.assert_allclose(criterions.l2_logits(s, t, reduction="none").numpy(),
                               (difference ** 2).mean(axis=1), rtol=1e-12)
    assert criterions.l2_logits(s, t).item() == pytest.approx((difference ** 2).mean(), rel=1e-12)
    # hand check of row 0 of L1: |0.5| + |0.5| + |1.0| over 3 classes
    assert criterions.l1_logits(s, t, reduction="none")[0].item() == pytest.approx(2.0 / 3)


def reference_js_numpy(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    p, q = softmax(student / temperature), softmax(teacher / temperature)
    m = np.clip((p + q) / 2, 0.01, 0.99)
    p, q = np.clip(p, 0.01, 0.99), np.clip(q, 0.01, 0.99)
    return 0.5 * kl_rows(m, p).mean() + 0.5 * kl_rows(m, q).mean()


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_js_divergence_ref_matches_the_clamped_reverse_kl_formula(temperature: float) -> None:
    s, t = tensors(STUDENT, TEACHER)
    value = criterions.js_divergence_ref(s, t, temperature)
    assert value.item() == pytest.approx(reference_js_numpy(STUDENT, TEACHER, temperature), rel=1e-12)


def test_js_divergence_ref_clamps_saturated_probabilities() -> None:
    student, teacher = np.array([[20.0, 0.0, 0.0]]), np.array([[0.0, 20.0, 0.0]])
    s, t = tensors(student, teacher)
    expected = reference_js_numpy(student, teacher, 3.0)
    # clamped: P = [.99, .01, .01], Q = [.01, .99, .01], M ≈ [.4994, .4994, .01] -> ≈ 1.611 > 1
    assert expected == pytest.approx(1.611, abs=2e-3)
    assert criterions.js_divergence_ref(s, t, 3.0).item() == pytest.approx(expected, rel=1e-12)
    # adversarial js term of §5.2: 1 − clamp(JS_ref, 0, 1) -> 0 here
    assert criterions.adversarial_js_ref(s, t, 3.0).item() == 0.0


def test_adversarial_js_ref_unclamped_value() -> None:
    s, t = tensors(STUDENT, TEACHER)
    expected = 1.0 - reference_js_numpy(STUDENT, TEACHER, 3.0)
    assert criterions.adversarial_js_ref(s, t).item() == pytest.approx(expected, rel=1e-12)


def test_textbook_js_divergence() -> None:
    s, t = tensors(STUDENT, TEACHER)
    p, q = softmax(STUDENT / 2.0), softmax(TEACHER / 2.0)
    m = (p + q) / 2
    expected = (0.5 * kl_rows(p, m) + 0.5 * kl_rows(q, m)).mean()
    assert criterions.js_divergence(s, t, 2.0).item() == pytest.approx(expected, rel=1e-12)
    assert criterions.js_divergence(t, s, 2.0).item() == pytest.approx(expected, rel=1e-12)  # symmetric
    # disjoint one-hot distributions reach log 2
    far = torch.tensor([[1e4, 0.0]], dtype=torch.float64)
    assert criterions.js_divergence(far, far.flip(1)).item() == pytest.approx(math.log(2.0), rel=1e-12)
    assert criterions.js_divergence(s, s).item() == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- generator priors
def test_pseudo_label_cross_entropy() -> None:
    (t,) = tensors(TEACHER)
    probabilities = softmax(TEACHER)
    expected = -np.log(probabilities[np.arange(2), TEACHER.argmax(axis=1)]).mean()
    assert criterions.pseudo_label_cross_entropy(t).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_class_balance_and_batch_mean_entropy(temperature: float) -> None:
    (t,) = tensors(TEACHER)
    mean_probability = softmax(TEACHER / temperature).mean(axis=0)
    negative_entropy = (mean_probability * np.log(mean_probability)).sum()
    assert criterions.class_balance_loss(t, temperature).item() == pytest.approx(negative_entropy, rel=1e-12)
    assert criterions.batch_mean_entropy(t, temperature).item() == pytest.approx(-negative_entropy, rel=1e-12)


def test_class_balance_is_minus_log_classes_for_a_balanced_batch() -> None:
    balanced = torch.eye(3, dtype=torch.float64) * 50.0
    assert criterions.class_balance_loss(balanced).item() == pytest.approx(-math.log(3.0), rel=1e-12)


def test_class_balance_gradient_is_finite_when_a_class_underflows() -> None:
    t = torch.tensor([[0.0, -200.0, 0.0], [1.0, -200.0, 0.0]], requires_grad=True)  # e^-200 == 0 in float32
    loss = criterions.class_balance_loss(t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(t.grad).all()


def test_activation_loss() -> None:
    features = torch.tensor([[1.0, -2.0], [0.5, -0.5]])
    assert criterions.activation_loss(features).item() == pytest.approx(-1.0)


def test_total_variation_hand_case() -> None:
    image = torch.tensor([[[[1.0, 2.0, 4.0], [0.0, 3.0, 5.0]]]])
    # horizontal |1-2|,|2-4|,|0-3|,|3-5| -> 2; vertical 1,1,1 -> 1;
    # anti-diagonal x[1,0]-x[0,1], x[1,1]-x[0,2] = -2, -1 -> 1.5; diagonal x[0,0]-x[1,1], x[0,1]-x[1,2] -> 2.5
    assert criterions.total_variation(image).item() == pytest.approx(7.0)


def test_total_variation_matches_loops_on_a_batch() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 3, 4, 5))
    height, width = 4, 5
    horizontal = [abs(images[b, c, i, j] - images[b, c, i, j + 1])
                  for b in range(2) for c in range(3) for i in range(height) for j in range(width - 1)]
    vertical = [abs(images[b, c, i, j] - images[b, c, i + 1, j])
                for b in range(2) for c in range(3) for i in range(height - 1) for j in range(width)]
    anti = [abs(images[b, c, i + 1, j] - images[b, c, i, j + 1])
            for b in range(2) for c in range(3) for i in range(height - 1) for j in range(width - 1)]
    diagonal = [abs(images[b, c, i, j] - images[b, c, i + 1, j + 1])
                for b in range(2) for c in range(3) for i in range(height - 1) for j in range(width - 1)]
    expected = np.mean(horizontal) + np.mean(vertical) + np.mean(anti) + np.mean(diagonal)
    (x,) = tensors(images)
    assert criterions.total_variation(x).item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- adversarial KL
def test_adversarial_kl_masked_cudfkd_and_cmi() -> None:
    s, t = tensors(STUDENT, TEACHER, grad=True)
    # only row 0 agrees (argmax 1 == 1); row 1 disagrees (2 vs 0)
    kl_row0_tau3 = kl_rows(softmax(TEACHER / 3)[:1], softmax(STUDENT / 3)[:1])[0]
    cudfkd = criterions.adversarial_kl_masked(s, t, temperature=3.0)
    assert cudfkd.item() == pytest.approx(-(1 / 2) * 9 * kl_row0_tau3, rel=1e-12)
    unscaled = criterions.adversarial_kl_masked(s, t, temperature=3.0, scale_by_temperature_squared=False)
    assert unscaled.item() == pytest.approx(-(1 / 2) * kl_row0_tau3, rel=1e-12)
    # CMI (§4.5): T = 1, no scaling; both flags agree at T = 1
    kl_row0_tau1 = kl_rows(softmax(TEACHER)[:1], softmax(STUDENT)[:1])[0]
    cmi = criterions.adversarial_kl_masked(s, t)
    assert cmi.item() == pytest.approx(-(1 / 2) * kl_row0_tau1, rel=1e-12)
    assert criterions.adversarial_kl_masked(s, t, 1.0, False).item() == pytest.approx(cmi.item(), rel=1e-12)
    # the masked row receives no gradient
    cudfkd.backward()
    assert s.grad[1].abs().sum().item() == 0.0 and t.grad[1].abs().sum().item() == 0.0
    assert s.grad[0].abs().sum().item() > 0.0


# ----------------------------------------------------------------------------- contrastive loss
def contrastive_numpy(local: np.ndarray, global_: np.ndarray, num_current: int, temperature: float) -> float:
    logits = local @ global_.T / temperature
    log_probability = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    per_row = -np.diag(log_probability)
    if num_current == len(local):
        return per_row.mean()
    return per_row[:num_current].mean() + per_row[num_current:].mean()


def test_contrastive_loss_with_and_without_cached_rows() -> None:
    rng = np.random.default_rng(1)
    local = rng.normal(size=(5, 4))
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    global_ = rng.normal(size=(5, 4))
    global_ /= np.linalg.norm(global_, axis=1, keepdims=True)
    for num_current in (2, 5):
        local_proj, global_proj = tensors(local, global_, grad=True)
        loss = criterions.contrastive_loss(local_proj, global_proj, num_current, temperature=0.2)
        assert loss.item() == pytest.approx(contrastive_numpy(local, global_, num_current, 0.2), rel=1e-12)
        loss.backward()
        assert global_proj.grad is None  # stop-gradient on the global branch
        assert local_proj.grad.abs().sum() > 0


def test_contrastive_loss_hand_case() -> None:
    # two orthogonal instances, perfect views: logits = I / 0.5 -> ce = −log(e^2 / (e^2 + 1)) for every row
    identity = torch.eye(2, dtype=torch.float64)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert criterions.contrastive_loss(identity, identity, 2, 0.5).item() == pytest.approx(expected, rel=1e-12)
    assert criterions.contrastive_loss(identity, identity, 1, 0.5).item() == pytest.approx(2 * expected, rel=1e-12)
    with pytest.raises(ValueError):
        criterions.contrastive_loss(identity, identity, 0, 0.5)


# ----------------------------------------------------------------------------- hooks
class TinyNet(nn.Module):
    """conv -> BN(4) -> ReLU -> conv -> BN(2) -> pooled logits; a stand-in teacher."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))).mean(dim=(2, 3))


def make_teacher() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet().double()
    for layer in (model.bn1, model.bn2):
        layer.running_mean.copy_(torch.randn(layer.num_features))
        layer.running_var.copy_(torch.rand(layer.num_features) + 0.5)
    return freeze(model)


def bn_inputs(model: TinyNet, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        first = model.conv1(x)
        second = model.conv2(torch.relu(model.bn1(first)))
    return [first.numpy(), second.numpy()]


def expected_bn_loss(model: TinyNet, x: torch.Tensor) -> float:
    total = 0.0
    for layer, activations in zip((model.bn1, model.bn2), bn_inputs(model, x)):
        mean = activations.mean(axis=(0, 2, 3))
        variance = activations.var(axis=(0, 2, 3), ddof=0)
        total += np.linalg.norm(layer.running_var.numpy() - variance) + np.linalg.norm(layer.running_mean.numpy() - mean)
    return total


def test_freeze_sets_eval_and_no_parameter_gradients() -> None:
    model = TinyNet()
    assert freeze(model) is model
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_bn_statistics_hook_value_latest_forward_and_gradient() -> None:
    model = make_teacher()
    hook = BatchNormStatisticsHook(model)
    assert len(hook.layers) == 2
    first = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    second = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    model(first)
    assert hook.loss.item() == pytest.approx(expected_bn_loss(model, first), rel=1e-10)
    model(second)
    loss = hook.loss
    assert loss.item() == pytest.approx(expected_bn_loss(model, second), rel=1e-10)
    loss.backward()
    assert second.grad is not None and second.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    hook.remove()


def test_bn_statistics_hook_skips_no_grad_forwards_unless_asked() -> None:
    model = make_teacher()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with BatchNormStatisticsHook(model) as hook:
        model(x)
        with torch.no_grad():
            model(x)
        with pytest.raises(RuntimeError):
            hook.loss
    with BatchNormStatisticsHook(model, skip_without_grad=False) as hook:
        with torch.no_grad():
            model(x)
        assert hook.loss.item() == pytest.approx(expected_bn_loss(model, x), rel=1e-10)


def test_bn_statistics_hook_remove_and_context_manager_detach_hooks() -> None:
    model = make_teacher()
    with BatchNormStatisticsHook(model) as hook:
        assert len(model.bn1._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1
    assert len(model.bn1._forward_hooks) == 0 and len(model.bn2._forward_hooks) == 0
    assert len(model._forward_pre_hooks) == 0
    hook.remove()  # idempotent
    with pytest.raises(ValueError):
        BatchNormStatisticsHook(nn.Linear(2, 2))


def test_instance_feature_hook_spatial_means_of_bn_inputs() -> None:
    model = make_teacher()
    modules = instance_feature_modules(model)
    assert modules == [model.bn1, model.bn2]
    hook = InstanceFeatureHook(modules)
    model(torch.randn(3, 3, 4, 4, dtype=torch.float64))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    model(x)
    features = hook.features
    first, second = bn_inputs(model, x.detach())
    expected = np.concatenate([first.mean(axis=(2, 3)), second.mean(axis=(2, 3))], axis=1)
    assert features.shape == (2, 6)
    np.testing.assert_allclose(features.detach().numpy(), expected, rtol=1e-12)
    features.sum().backward()
    assert x.grad.abs().sum() > 0
    hook.remove()
    assert len(model.bn1._forward_hooks) == 0


class ResNet(nn.Module):
    """Stand-in with the ResNet class name, stage widths 64/128/256/512 and given block counts."""

    def __init__(self, blocks: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 1), nn.BatchNorm2d(64))
        widths = [64, 64, 128, 256, 512]
        for stage in range(4):
            layers = [nn.Conv2d(widths[stage], widths[stage + 1], 1)]
            layers += [nn.Conv2d(widths[stage + 1], widths[stage + 1], 1) for _ in range(blocks[stage] - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def test_instance_feature_modules_resnet34_uses_stage_inputs() -> None:
    model = ResNet((3, 4, 6, 3))
    modules = instance_feature_modules(model)
    assert modules == [model.layer1, model.layer2, model.layer3, model.layer4]
    with InstanceFeatureHook(modules) as hook:
        model(torch.randn(2, 3, 2, 2))
        assert hook.features.shape == (2, 64 + 64 + 128 + 256)
    # a ResNet-18 (2, 2, 2, 2) falls back to the BN layers
    resnet18 = ResNet((2, 2, 2, 2))
    assert instance_feature_modules(resnet18) == [resnet18.stem[1]]
