"""Pool-based synthesizers: ADI (METHODS.md §4.4) and CMI (§4.5) on a tiny CPU teacher/student.

Checks the pool / bank bookkeeping (§3.5), the best-iterate copy versus the [REF] last-iterate
bug (§4.4, §7 item 10), the pixel clip (§1.8), CMI's per-call generator reset with a persistent
head, the contrastive gradient paths, option validation, exact resume, and that the frozen
teacher never accumulates gradients (§7 item 15).
"""
from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from datafree.errors import UsageError
from datafree.options import add_option_flags
from datafree.synthesis.hooks import freeze
from datafree.models import GeneratorS, Normalizer, reset_generator_init
from datafree.synthesis.adi import ADISynthesizer
from datafree.synthesis.base import SynthesisSetup
from datafree.synthesis.cmi import CMISynthesizer

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
WIDTH = 4
FEATURE_DIM = WIDTH + 2 * WIDTH          # instance features: inputs of the two BN layers
BATCH_SIZE = 6
SYNTHESIS_BATCH_SIZE = 4


class TinyClassifier(nn.Module):
    """Two conv + BN stages and a linear head, with the classifier interface of §1.1."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = WIDTH) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        hidden = F.relu(self.bn1(self.conv1(x)))
        hidden = F.relu(self.bn2(self.conv2(hidden)))
        features = hidden.mean(dim=(2, 3))
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def make_setup(seed: int = 0) -> SynthesisSetup:
    """A frozen tiny teacher with non-trivial BN running statistics, a tiny student, CIFAR-10 constants."""
    torch.manual_seed(seed)
    teacher = TinyClassifier()
    for module in teacher.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    student = TinyClassifier()
    return SynthesisSetup(teacher=freeze(teacher), student=student,
                          normalizer=Normalizer(CIFAR10_MEAN, CIFAR10_STD), num_classes=NUM_CLASSES,
                          dataset="cifar10", teacher_name="tiny", batch_size=BATCH_SIZE,
                          synthesis_batch_size=SYNTHESIS_BATCH_SIZE, epochs=2, device=torch.device("cpu"),
                          autocast_dtype=None, channels_last=False, seed=seed)


def adi_options(**overrides: Any) -> ADISynthesizer.Options:
    return ADISynthesizer.Options.resolve({"synthesis_batch_size": SYNTHESIS_BATCH_SIZE, "g_steps": 3, **overrides})


def cmi_options(**overrides: Any) -> CMISynthesizer.Options:
    return CMISynthesizer.Options.resolve({"synthesis_batch_size": SYNTHESIS_BATCH_SIZE, "g_steps": 2, "nz": 16,
                                           "ngf": 64, "bank_size": 10, "n_neg": 6, "head_dim": 8, **overrides})


def capture_stores(synthesizer) -> list[torch.Tensor]:
    """Record the float images handed to ``store`` (before quantisation), still storing them."""
    stored: list[torch.Tensor] = []
    original = synthesizer.store

    def spy(images: torch.Tensor) -> None:
        stored.append(images.detach().clone())
        original(images)

    synthesizer.store = spy
    return stored


def round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """Serialise a state dict as a checkpoint would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


# ----------------------------------------------------------------------------- pool bookkeeping
@pytest.mark.parametrize("method, options", [(ADISynthesizer, adi_options()), (CMISynthesizer, cmi_options())])
def test_synthesize_appends_one_uint8_batch_and_sample_is_normalised(method, options) -> None:
    setup = make_setup()
    synthesizer = method(setup, options)
    assert synthesizer.preview_images() is None
    terms = synthesizer.synthesize()
    assert len(synthesizer.pool) == SYNTHESIS_BATCH_SIZE
    assert synthesizer.pool.images.dtype == torch.uint8
    assert all(name.startswith("loss_") and not value.requires_grad for name, value in terms.items())
    assert synthesizer.preview_images().shape == (SYNTHESIS_BATCH_SIZE, 3, 32, 32)

    batch = synthesizer.sample()
    assert batch.shape == (BATCH_SIZE, 3, 32, 32) and batch.dtype == torch.float32
    low = (-setup.normalizer.mean / setup.normalizer.std).view(1, 3, 1, 1)
    high = ((1 - setup.normalizer.mean) / setup.normalizer.std).view(1, 3, 1, 1)
    assert bool(((batch >= low - 1e-5) & (batch <= high + 1e-5)).all())
    assert not batch.requires_grad

    synthesizer.synthesize()
    assert len(synthesizer.pool) == 2 * SYNTHESIS_BATCH_SIZE
    assert synthesizer.temperature == 20.0


def test_cmi_bank_gets_one_row_of_dim_2d_per_image() -> None:
    synthesizer = CMISynthesizer(make_setup(), cmi_options())
    assert synthesizer.feature_dim == FEATURE_DIM
    assert synthesizer.bank.dim == 2 * FEATURE_DIM
    synthesizer.synthesize()
    assert len(synthesizer.bank) == SYNTHESIS_BATCH_SIZE
    synthesizer.synthesize()
    assert len(synthesizer.bank) == 2 * SYNTHESIS_BATCH_SIZE
    assert not synthesizer.bank.features.requires_grad


# ----------------------------------------------------------------------------- ADI best iterate
class ScriptedADI(ADISynthesizer):
    """ADI with a scripted, non-monotone loss: constants 5, 1, 3 plus a small term that moves the pixels."""

    SCRIPT = (5.0, 1.0, 3.0)

    def __init__(self, setup: SynthesisSetup, options: dict[str, Any]) -> None:
        super().__init__(setup, options)
        self.snapshots: list[torch.Tensor] = []

    def inversion_terms(self, pixels, targets):
        self.snapshots.append(pixels.detach().clone())
        constant = self.SCRIPT[len(self.snapshots) - 1]
        return {"scripted": (1.0, constant + 1e-3 * pixels.mean())}


@pytest.mark.parametrize("keep_last", [False, True])
def test_adi_stores_a_copy_of_the_lowest_loss_batch_unless_keep_last(keep_last: bool) -> None:
    setup = make_setup()
    synthesizer = ScriptedADI(setup, adi_options(adi_keep_last=keep_last))
    stored = capture_stores(synthesizer)
    terms = synthesizer.synthesize()
    best_iterate = setup.normalizer.denormalize(synthesizer.snapshots[1])
    last_scored_iterate = setup.normalizer.denormalize(synthesizer.snapshots[2])
    assert len(stored) == 1
    if keep_last:
        # [REF]: the final iterate (after the last step and clip), neither the best nor the last scored one.
        assert not torch.allclose(stored[0], best_iterate)
        assert not torch.allclose(stored[0], last_scored_iterate)
        assert "loss_synthesis_best" not in terms
    else:
        torch.testing.assert_close(stored[0], best_iterate)
        torch.testing.assert_close(terms["loss_synthesis_best"], torch.tensor(1.0), atol=1e-3, rtol=0)


def test_adi_pixels_are_clipped_into_the_image_range() -> None:
    setup = make_setup()
    synthesizer = ADISynthesizer(setup, adi_options(lr_g=5.0, adi_keep_last=True))
    stored = capture_stores(synthesizer)
    synthesizer.synthesize()
    final_images = stored[0]                          # denormalize(final iterate) with --adi_keep_last
    assert float(final_images.min()) >= -1e-5 and float(final_images.max()) <= 1 + 1e-5
    assert float((final_images <= 1e-4).float().mean() + (final_images >= 1 - 1e-4).float().mean()) > 0.1


# ----------------------------------------------------------------------------- CMI generator / head
def parameter_copies(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def test_cmi_generator_is_reset_every_call_and_head_persists() -> None:
    setup = make_setup()
    synthesizer = CMISynthesizer(setup, cmi_options())
    initial_head = parameter_copies(synthesizer.head)
    synthesizer.synthesize()
    final_first_call = parameter_copies(synthesizer.image_generator)
    head_after_first_call = parameter_copies(synthesizer.head)
    assert any(not torch.equal(initial_head[name], head_after_first_call[name]) for name in initial_head)

    # The expected second initialisation: §1.7 init drawn from the synthesizer's RNG state now.
    expected = GeneratorS(nz=16)
    stream = torch.Generator()
    stream.set_state(synthesizer.noise_stream.get_state())
    reset_generator_init(expected, generator=stream)

    seen: dict[str, dict[str, torch.Tensor]] = {}
    original_terms = synthesizer.synthesis_terms

    def spy(images: torch.Tensor, targets: torch.Tensor):   # first called before the first step
        if not seen:
            seen["generator"] = parameter_copies(synthesizer.image_generator)
            seen["head"] = parameter_copies(synthesizer.head)
        return original_terms(images, targets)

    synthesizer.synthesis_terms = spy
    synthesizer.synthesize()
    for name, value in expected.named_parameters():
        torch.testing.assert_close(seen["generator"][name], value.detach(), rtol=0, atol=0)
    assert all(not torch.equal(seen["generator"][name], final_first_call[name])
               for name, value in expected.named_parameters() if value.dim() > 1)
    assert any(not torch.equal(seen["generator"][name], final_first_call[name]) for name in final_first_call)
    for name, value in head_after_first_call.items():
        torch.testing.assert_close(seen["head"][name], value, rtol=0, atol=0)


def test_cmi_contrastive_loss_trains_only_through_the_local_branch() -> None:
    synthesizer = CMISynthesizer(make_setup(), cmi_options())
    local_features = torch.randn(SYNTHESIS_BATCH_SIZE, FEATURE_DIM, requires_grad=True)
    global_features = torch.randn(SYNTHESIS_BATCH_SIZE, FEATURE_DIM, requires_grad=True)
    cached = torch.randn(3, 2 * FEATURE_DIM, requires_grad=True)
    loss = synthesizer.contrastive_term(local_features, global_features, cached)
    loss.backward()
    assert local_features.grad is not None and float(local_features.grad.abs().sum()) > 0
    assert global_features.grad is None or float(global_features.grad.abs().sum()) == 0
    assert float(cached.grad[:, :FEATURE_DIM].abs().sum()) > 0          # cached local rows -> head path
    assert float(cached.grad[:, FEATURE_DIM:].abs().sum()) == 0         # cached global rows detached
    assert all(parameter.grad is not None for parameter in synthesizer.head.parameters())


def test_cmi_generator_gets_contrastive_gradient_only_from_the_local_view() -> None:
    synthesizer = CMISynthesizer(make_setup(), cmi_options(adv=0.0, bn=0.0, oh=0.0))
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = synthesizer.contrastive_term

    def spy(local_features, global_features, cached):
        calls.append((local_features, global_features))
        return original(local_features.detach(), global_features, cached)

    latents = synthesizer.randn(SYNTHESIS_BATCH_SIZE, 16).requires_grad_(True)
    targets = synthesizer.random_labels(SYNTHESIS_BATCH_SIZE)
    terms, _ = synthesizer.synthesis_terms(synthesizer.forward_float(synthesizer.image_generator, latents), targets)
    terms["cr"][1].backward()
    assert latents.grad is not None and float(latents.grad.abs().sum()) > 0

    synthesizer.contrastive_term = spy
    latents.grad = None
    terms, _ = synthesizer.synthesis_terms(synthesizer.forward_float(synthesizer.image_generator, latents), targets)
    terms["cr"][1].backward()
    assert latents.grad is None or float(latents.grad.abs().sum()) == 0
    assert calls and calls[0][1].requires_grad        # the global features were differentiable


# ----------------------------------------------------------------------------- options
def test_cmi_options_are_checked_in_one_line() -> None:
    cmi_options()
    with pytest.raises(UsageError, match="cannot fill") as error:
        cmi_options(synthesis_batch_size=11, bank_size=10)
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="--n_neg must be positive, got 0"):
        cmi_options(n_neg=0)
    with pytest.raises(UsageError, match="--g_steps must be positive"):
        adi_options(g_steps=0)


def test_method_options_resolve_from_the_published_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_option_flags(parser, {"adi": ADISynthesizer.Options, "cmi": CMISynthesizer.Options})
    parsed = vars(parser.parse_args([]))
    assert {key: parsed[key] for key in ("tv", "l2", "js_T", "adi_keep_last", "bank_size", "n_neg", "head_dim")} \
        == {"tv": None, "l2": None, "js_T": None, "adi_keep_last": None, "bank_size": None, "n_neg": None,
            "head_dim": None}
    assert parser.parse_args(["--adi_keep_last"]).adi_keep_last is True
    adi, cmi = ADISynthesizer.Options.resolve(), CMISynthesizer.Options.resolve()
    assert adi.adi_keep_last is False
    assert (adi.g_steps, adi.bn, adi.tv) == (1000, 10.0, 0.001)
    assert (cmi.g_steps, cmi.bank_size, cmi.n_neg, cmi.head_dim) == (200, 40960, 4096, 256)


# ----------------------------------------------------------------------------- state and gradients
@pytest.mark.parametrize("method, options", [(ADISynthesizer, adi_options()), (CMISynthesizer, cmi_options())])
def test_state_dict_round_trip_reproduces_the_next_samples(method, options) -> None:
    synthesizer = method(make_setup(), options)
    synthesizer.synthesize()
    synthesizer.sample()
    state = round_trip(synthesizer.state_dict())
    expected_samples = [synthesizer.sample() for _ in range(2)]

    restored = method(make_setup(), options)
    restored.load_state_dict(state)
    for expected in expected_samples:
        torch.testing.assert_close(restored.sample(), expected, rtol=0, atol=0)

    if method is CMISynthesizer:   # the next synthesis continues identically (head, bank, RNG)
        synthesizer.synthesize()
        restored.synthesize()
        torch.testing.assert_close(restored.pool.images, synthesizer.pool.images, rtol=0, atol=0)
        torch.testing.assert_close(restored.bank.features, synthesizer.bank.features)


@pytest.mark.parametrize("method, options", [(ADISynthesizer, adi_options()), (CMISynthesizer, cmi_options())])
def test_kd_batches_draw_only_from_the_augmentation_stream(method, options) -> None:
    """§7 item 14: pool draws and crops/flips have their own stream, so the noise of the next
    synthesis (initial pixels or latents, target labels, CMI's generator re-initialisation) does
    not depend on how many KD batches were taken in between; the two streams start differently."""
    synthesizer = method(make_setup(), options)
    assert not torch.equal(torch.randn(8, generator=synthesizer.noise_stream),
                           torch.randn(8, generator=synthesizer.augmentation_stream))
    noise: dict[int, list[torch.Tensor]] = {}
    for kd_batches in (1, 5):
        instance = method(make_setup(), options)
        instance.synthesize()
        noise_state = instance.noise_stream.get_state()
        augmentation_state = instance.augmentation_stream.get_state()
        for _ in range(kd_batches):
            instance.sample()
        assert torch.equal(instance.noise_stream.get_state(), noise_state)
        assert not torch.equal(instance.augmentation_stream.get_state(), augmentation_state)
        drawn = noise[kd_batches] = []
        for name in ("randn", "random_labels"):
            original = getattr(instance, name)
            def record(*shape: int, original=original) -> torch.Tensor:
                value = original(*shape)
                drawn.append(value.clone())   # ADI optimises its initial pixels in place
                return value
            setattr(instance, name, record)
        instance.synthesize()
    assert len(noise[1]) == 2
    for first, second in zip(noise[1], noise[5]):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("method, options", [(ADISynthesizer, adi_options()), (CMISynthesizer, cmi_options())])
def test_teacher_and_student_parameters_receive_no_gradient(method, options) -> None:
    setup = make_setup()
    setup.student.train()
    synthesizer = method(setup, options)
    synthesizer.synthesize()
    assert all(parameter.grad is None for parameter in setup.teacher.parameters())
    assert all(parameter.grad is None for parameter in setup.student.parameters())
    assert all(parameter.requires_grad for parameter in setup.student.parameters())
    assert setup.student.training and not setup.teacher.training
