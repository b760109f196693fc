"""MB-DFKD, the reconstruction of docs/METHODS.md §15.4: the bank's writes, reads, wrap-around and
state, the KD batch, the labels that say "reconstruction", and the bad-input rows."""
from __future__ import annotations

import pytest
import torch

import datafree_kd
from datafree.errors import UsageError
from datafree.published import published
from datafree.synthesis.mbdfkd import MBDFKDSynthesizer
from tiny_models import tiny_synthesis_setup

KD = ["--method", "mbdfkd", "--teacher", "resnet34", "--student", "resnet18"]


def make_synthesizer(**given) -> MBDFKDSynthesizer:
    setup = tiny_synthesis_setup()
    options = {"nz": 16, "ngf": 8, "kd_steps": 5, "ep_steps": 10, "bank_size": 20, "bank_dtype": "float32", **given}
    return MBDFKDSynthesizer(setup, MBDFKDSynthesizer.Options.resolve(options))


def kd_step(synthesizer: MBDFKDSynthesizer, step: int) -> torch.Tensor:
    images = synthesizer.sample()
    synthesizer.after_student_step(step)
    return images


def test_the_bank_writes_half_the_novel_batch_after_the_first_kd_steps_of_each_round_and_wraps():
    synthesizer = make_synthesizer(bank_writes=2)        # B 16: writes of 8 rows, bank of 20, B/8 = 2 read
    first = kd_step(synthesizer, 0)
    assert first.shape == (16, 3, 32, 32)                 # empty bank: no replayed row on the first step
    assert torch.equal(synthesizer.bank.features[:8].view(8, 3, 32, 32), first[:8])
    assert (len(synthesizer.bank), synthesizer.bank.pointer) == (8, 8)
    second = kd_step(synthesizer, 1)
    assert second.shape == (18, 3, 32, 32)
    for step in range(2, 5):                              # the rest of round 1: reads, no writes
        assert kd_step(synthesizer, step).shape == (18, 3, 32, 32)
    assert (len(synthesizer.bank), synthesizer.bank.pointer, synthesizer.bank.total_written) == (16, 16, 16)
    sixth = kd_step(synthesizer, 5)                       # round 2, first step: 8 rows at 16..19, 0..3
    assert (len(synthesizer.bank), synthesizer.bank.pointer, synthesizer.bank.total_written) == (20, 4, 24)
    bank = synthesizer.bank.features.view(20, 3, 32, 32)
    assert torch.equal(bank[16:20], sixth[:4]) and torch.equal(bank[0:4], sixth[4:8])


def test_replayed_rows_are_distinct_bank_rows_in_float32():
    synthesizer = make_synthesizer(bank_dtype="float16", mem_ratio=0.25)   # 4 replayed rows
    for step in range(3):
        kd_step(synthesizer, step)
    assert synthesizer.bank.features.dtype == torch.float16
    replayed = synthesizer.sample()[16:]
    assert replayed.shape == (4, 3, 32, 32) and replayed.dtype == torch.float32
    bank = synthesizer.bank.features[:len(synthesizer.bank)].float()
    matches = [int((bank == row.flatten()).all(dim=1).nonzero()) for row in replayed]
    assert len(set(matches)) == 4
    stored = synthesizer.bank.features[:8].float().view(8, 3, 32, 32)
    novel = synthesizer.novel_images
    assert stored.shape == novel[:8].shape   # half precision keeps the standardised images to ~1e-3
    assert not torch.equal(stored, novel[:8])


def test_state_round_trips_the_bank_contents_pointer_and_count():
    synthesizer = make_synthesizer()
    synthesizer.synthesize()
    for step in range(7):
        kd_step(synthesizer, step)
    state = synthesizer.state_dict()
    assert (state["bank"]["pointer"], state["bank"]["total_written"]) == (48 % 20, 48)   # steps 0-3 and 5-6 write 8 rows each
    assert state["bank"]["features"].shape == (20, 3 * 32 * 32)
    other = make_synthesizer()
    other.load_state_dict(state)
    assert torch.equal(other.bank.features, synthesizer.bank.features)
    assert torch.equal(other.sample(), synthesizer.sample())


def test_student_loss_is_l1_over_every_row_and_the_generator_keeps_pre_dfkd_terms():
    synthesizer = make_synthesizer()
    terms = synthesizer.synthesize()
    assert {"loss_oh", "loss_ie", "loss_act", "loss_adv", "loss_generator"} <= set(terms)
    loss, _ = synthesizer.student_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]]), 0)
    assert loss.item() == pytest.approx(2.0)


def test_every_place_a_user_sees_the_method_calls_it_a_reconstruction():
    assert "mbdfkd (reconstruction, §15)" in datafree_kd.build_parser().format_help().replace("\n", " ").replace("  ", "")
    recipe = MBDFKDSynthesizer.recipe
    assert "reconstruction" in recipe.label
    assert all("RECONSTRUCTION" in launcher.what for launcher in recipe.launchers) and len(recipe.launchers) == 9
    number = published("mbdfkd", "", "cifar10", "resnet34", "resnet18")
    assert (number.value, number.kind, number.stability) == (92.4, "reconstruction", (83.3, 16.4, 92.4))
    assert number.describe_stability() == "83.3 / 16.4 / 92.4"
    assert any("reconstruction" in note for note in MBDFKDSynthesizer.deviations(MBDFKDSynthesizer.Options.resolve({})))


def test_published_rows_resolve():
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(KD))
    assert (options["batch_size"], options["kd_steps"], options["lr_g"], options["nz"], options["bank_size"],
            options["bank_writes"], options["bank_write_ratio"], options["bank_dtype"], options["mem_ratio"]) == \
        (1024, 10, 0.02, 1000, 73728, 4, 0.5, "float16", 0.125)


@pytest.mark.parametrize("flags, message", [
    (["--bank_size", "0"], "--bank_size"),
    (["--bank_write_ratio", "0"], "--bank_write_ratio must be above 0"),
    (["--bank_dtype", "bfloat16"], "invalid choice: 'bfloat16'"),
    (["--vae_half", "0.5"], "--vae_half is not an option of --method mbdfkd"),
    (["--generator", "G-L", "--gen_output", "sigmoid"], "--method predfkd and mbdfkd need --generator G-D"),
])
def test_bad_inputs_are_refused_in_one_line(flags, message):
    with pytest.raises(UsageError, match=message) as refused:
        datafree_kd.resolve_options(datafree_kd.build_parser().parse_args([*KD, *flags]))
    assert "\n" not in str(refused.value)


def test_the_bank_is_reported_at_its_full_size_before_it_is_allocated():
    from datafree.synthesis.budget import plan_memory

    synthesizer = make_synthesizer()                      # 20 images of 3×32×32 float32 = 20 × 12,288 B
    assert synthesizer._bank is None
    assert plan_memory(synthesizer, "auto") == ("memory: image bank 20 images x 3x32x32 float32 = 246 kB, on cpu "
                                                "(in last.pth too)")
    assert synthesizer._bank is None                      # the budget is checked first (§15.4, §21.3)
    kd_step(synthesizer, 0)
    assert synthesizer.bank.features.shape == (20, 3072) and synthesizer.bank.features.dtype == torch.float32
