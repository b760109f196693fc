"""DFAD (docs/METHODS.md §14): the L1 min-max game, G-A, the modes of the reference, the multistep schedules."""
from __future__ import annotations

import pytest
import torch

import datafree_kd
from datafree.errors import UsageError
from datafree.run.distributed import DistributedContext
from datafree.run.numerics import Numerics
from datafree.schedules import multistep_factor, parse_milestones
from datafree.synthesis.dfad import DFADSynthesizer
from tiny_models import tiny_synthesis_setup

KD = ["--method", "dfad", "--teacher", "resnet34", "--student", "resnet18"]


def make_synthesizer(**given) -> DFADSynthesizer:
    setup = tiny_synthesis_setup(batch_size=8, epochs=300)
    return DFADSynthesizer(setup, DFADSynthesizer.Options.resolve({"nz": 16, "ngf": 8, **given}))


def test_the_generator_is_g_a_with_2_329_091_parameters():
    options = DFADSynthesizer.Options.resolve()
    assert (options.generator, options.gen_output, options.gen_bn_eps, options.nz, options.ngf) == \
        ("G-D", "normalized", 1e-5, 256, 64)
    setup = make_synthesizer().setup
    generator = DFADSynthesizer(setup, options).image_generator
    assert sum(p.numel() for p in generator.parameters()) == 2_329_091   # §14.3, by hand from the layer list


def test_student_and_generator_losses_are_the_l1_logit_gap_and_its_negative():
    synthesizer = make_synthesizer()
    student = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    # |1| + |2| + |2| + |-4| = 9 over B·C = 4 entries
    loss, terms = synthesizer.student_loss(student, teacher, kd_step=0)
    assert loss.item() == pytest.approx(2.25) and terms == {}
    assert synthesizer.adversarial_term(student, teacher).item() == pytest.approx(-2.25)


def test_the_generator_step_moves_the_generator_and_queries_the_student_in_the_chosen_mode():
    for mode, changes in (("train", True), ("eval", False)):
        synthesizer = make_synthesizer(adv_student_mode=mode)
        bn = synthesizer.student.features[1]
        before = bn.running_mean.clone()
        generator_before = [p.detach().clone() for p in synthesizer.image_generator.parameters()]
        terms = synthesizer.synthesize()
        assert set(terms) == {"loss_adv", "loss_generator"} and terms["loss_adv"].item() != 0   # §14.8 item 5
        assert any(not torch.equal(a, b) for a, b in zip(generator_before, synthesizer.image_generator.parameters()))
        assert (not torch.equal(before, bn.running_mean)) is changes, mode
        assert synthesizer.student.training   # the student's own mode is restored


def test_kd_batches_skip_the_dataset_normaliser_and_come_from_a_generator_in_train_mode():
    synthesizer = make_synthesizer()
    images = synthesizer.sample()
    assert images.shape == (8, 3, 32, 32) and synthesizer.image_generator.training
    # Tanh + affine-free BN in train(): each channel of the batch is standardised, not mapped by (x − 0.5)/0.25.
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert images.var(dim=(0, 2, 3), unbiased=False).sub(1).abs().max() < 1e-2


def test_multistep_schedules_of_student_and_generator():
    assert parse_milestones("100,200") == (100, 200) and parse_milestones("") == ()
    for bad in ("200,100", "0,5", "a"):
        with pytest.raises(ValueError):
            parse_milestones(bad)
    assert [multistep_factor(e, (100, 200), 0.1) for e in (0, 99, 100, 199, 200, 499)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    synthesizer = make_synthesizer()
    lrs = {}
    for epoch in (0, 99, 100, 200, 100):   # idempotent: epoch 100 again gives the same rate
        lrs[epoch] = synthesizer.begin_epoch(epoch)["lr_g"]
        assert synthesizer.optimizer.param_groups[0]["lr"] == lrs[epoch]
    assert lrs == pytest.approx({0: 1e-3, 99: 1e-3, 100: 1e-4, 200: 1e-5})


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_the_students_multistep_schedule_in_the_loop(tiny_teacher, tmp_path):
    args = datafree_kd.build_parser().parse_args([
        "--method", "dfad", "--teacher", "tiny_cnn", "--student", "tiny_cnn", "--teacher_ckpt", str(tiny_teacher),
        "--device", "cpu", "--batch_size", "8", "--ngf", "8", "--epochs", "5", "--milestones", "2,4",
        "--save_dir", str(tmp_path)])
    options = datafree_kd.resolve_options(args)
    device = torch.device("cpu")
    teacher = datafree_kd.load_teacher(options, device, channels_last=False)
    parts = datafree_kd.build_training(options, teacher, DistributedContext(), Numerics.from_options(options, device))
    seen = []
    for _ in range(5):
        seen.append(parts.optimizer.param_groups[0]["lr"])
        parts.scheduler.step()
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_published_rows_resolve():
    parser = datafree_kd.build_parser()
    cifar = datafree_kd.resolve_options(parser.parse_args(KD))
    assert (cifar["epochs"], cifar["ep_steps"], cifar["kd_steps"], cifar["weight_decay"], cifar["lr_schedule"],
            cifar["milestones"], cifar["adv_student_mode"], cifar["gen_sample_mode"]) == \
        (500, 250, 5, 5e-4, "multistep", "100,200", "train", "train")
    mnist = datafree_kd.resolve_options(parser.parse_args(
        ["--method", "dfad", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "mnist"]))
    assert (mnist["batch_size"], mnist["epochs"], mnist["lr"], mnist["weight_decay"], mnist["lr_schedule"],
            mnist["nz"]) == (512, 40, 0.01, 1e-4, "constant", 100)


@pytest.mark.parametrize("flags, message", [
    (["--lr_schedule", "multistep", "--milestones", ""], "--lr_schedule multistep needs --milestones"),
    (["--milestones", "200,100"], "--milestones must be comma-separated increasing epochs >= 1, got '200,100'"),
    (["--adv_student_mode", "both"], "invalid choice: 'both'"),
])
def test_bad_schedule_flags_are_refused_in_one_line(flags, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")) as refused:
        datafree_kd.resolve_options(datafree_kd.build_parser().parse_args([*KD, *flags]))
    assert "\n" not in str(refused.value)
