"""The plan of ticks (datafree/run/plan.py): every tick written out by hand, lengths, stop points, and
the same sequence as the nested loops (epochs, rounds, KD steps) it replaced."""
from __future__ import annotations

import pytest

from datafree.run.plan import EPOCH_END, KD_STEP, SYNTHESIS, TRAIN_STEP, DistillationPlan, EpochPlan, Tick

S, K, E = SYNTHESIS, KD_STEP, EPOCH_END

#: epochs 3, warmup 1, ep_steps 4, kd_steps 2: 2 rounds per epoch. Warm-up epoch 0 is two synthesis
#: rounds and its end (3 ticks); KD epochs 1 and 2 are two rounds of (synthesis, 2 KD steps) and their
#: end (7 ticks each). Columns: kind, epoch, round, step in round, kd_step, distilling.
WARMUP_TABLE = [
    (S, 0, 0, 0, 0, False),   # 0
    (S, 0, 1, 0, 0, False),   # 1
    (E, 0, 2, 0, 0, False),   # 2
    (S, 1, 0, 0, 0, True),    # 3
    (K, 1, 0, 0, 0, True),    # 4
    (K, 1, 0, 1, 1, True),    # 5
    (S, 1, 1, 0, 2, True),    # 6
    (K, 1, 1, 0, 2, True),    # 7
    (K, 1, 1, 1, 3, True),    # 8
    (E, 1, 2, 0, 4, True),    # 9
    (S, 2, 0, 0, 4, True),    # 10
    (K, 2, 0, 0, 4, True),    # 11
    (K, 2, 0, 1, 5, True),    # 12
    (S, 2, 1, 0, 6, True),    # 13
    (K, 2, 1, 0, 6, True),    # 14
    (K, 2, 1, 1, 7, True),    # 15
    (E, 2, 2, 0, 8, True),    # 16
]


def test_every_tick_of_a_plan_with_a_warmup_epoch():
    plan = DistillationPlan(epochs=3, warmup=1, ep_steps=4, kd_steps=2)
    assert len(plan) == len(WARMUP_TABLE) == 17
    for tick, (kind, epoch, round_, step, kd_step, distilling) in enumerate(WARMUP_TABLE):
        assert plan[tick] == Tick(kind, epoch, round=round_, step=step, kd_step=kd_step, distilling=distilling), tick
    assert [plan.epoch_ticks(epoch) for epoch in range(3)] == [range(0, 3), range(3, 10), range(10, 17)]
    assert [plan.epoch_of(tick) for tick in (0, 2, 3, 9, 10, 16, 17)] == [0, 0, 1, 1, 2, 2, 3]


def test_ticks_are_frozen_and_out_of_range_ticks_refused():
    plan = DistillationPlan(epochs=3, warmup=1, ep_steps=4, kd_steps=2)
    with pytest.raises(AttributeError):
        plan[4].epoch = 0
    for tick in (-1, 17):
        with pytest.raises(IndexError, match="outside this plan of 17 ticks"):
            plan[tick]
    assert list(plan) == [plan[tick] for tick in range(17)]   # iteration stops at len(plan)


@pytest.mark.parametrize("arguments", [(0, 0, 4, 2), (2, 3, 4, 2), (2, -1, 4, 2), (2, 0, 4, 0), (2, 0, 2, 4)])
def test_impossible_schedules_have_no_plan(arguments):
    with pytest.raises(ValueError, match="no plan"):
        DistillationPlan(*arguments)


def test_a_published_schedule_is_indexed_without_a_list():
    """Fast's CIFAR schedule (§10.8): 200 epochs, 20 of warm-up, 400 KD steps per epoch in rounds of 5.
    Warm-up epochs are 80 rounds + end (81 ticks), KD epochs 80 · 6 + 1 = 481 ticks."""
    plan = DistillationPlan(epochs=200, warmup=20, ep_steps=400, kd_steps=5)
    assert len(plan) == 20 * 81 + 180 * 481 == 88_200
    assert plan[20 * 81 - 1] == Tick(EPOCH_END, 19, round=80, distilling=False)
    assert plan[20 * 81] == Tick(SYNTHESIS, 20, round=0, kd_step=0)
    assert plan[20 * 81 + 481 + 6 * 3 + 4] == Tick(KD_STEP, 21, round=3, step=3, kd_step=400 + 15 + 3)
    assert plan[len(plan) - 1] == Tick(EPOCH_END, 199, round=80, kd_step=180 * 400)
    assert plan.position(len(plan)) == {"epoch": 200, "round": 0, "kd_in_round": 0, "kd_step": 72_000}


def test_rounds_drop_the_remainder_of_ep_steps():
    plan = DistillationPlan(epochs=1, warmup=0, ep_steps=5, kd_steps=2)   # 2 rounds, KD steps 0-3
    assert [(t.kind, t.round, t.step, t.kd_step) for t in plan] == [
        (S, 0, 0, 0), (K, 0, 0, 0), (K, 0, 1, 1), (S, 1, 0, 2), (K, 1, 0, 2), (K, 1, 1, 3), (E, 2, 0, 4)]


def nested_loops(epochs: int, warmup: int, ep_steps: int, kd_steps: int) -> list[Tick]:
    """The ticks in the order of the loops the plan replaced: epochs, rounds, KD steps, epoch end."""
    ticks, kd_step, rounds = [], 0, ep_steps // kd_steps
    for epoch in range(epochs):
        distilling = epoch >= warmup
        for round_ in range(rounds):
            ticks.append(Tick(SYNTHESIS, epoch, round=round_, kd_step=kd_step, distilling=distilling))
            for step in range(kd_steps if distilling else 0):
                ticks.append(Tick(KD_STEP, epoch, round=round_, step=step, kd_step=kd_step))
                kd_step += 1
        ticks.append(Tick(EPOCH_END, epoch, round=rounds, kd_step=kd_step, distilling=distilling))
    return ticks


@pytest.mark.parametrize("epochs, warmup, ep_steps, kd_steps",
                         [(1, 0, 1, 1), (2, 0, 4, 2), (3, 2, 4, 2), (4, 1, 7, 3), (3, 3, 6, 6), (5, 2, 10, 1)])
def test_the_plan_is_the_nested_loops(epochs, warmup, ep_steps, kd_steps):
    plan = DistillationPlan(epochs, warmup, ep_steps, kd_steps)
    assert list(plan) == nested_loops(epochs, warmup, ep_steps, kd_steps)


def test_stop_points_of_a_distillation_plan():
    """Alone, a run may stop before a synthesis round or a KD step that is not its round's first;
    under torchrun (collective checks) only before a synthesis round. Never before an epoch end."""
    plan = DistillationPlan(epochs=3, warmup=1, ep_steps=4, kd_steps=2)
    alone = [tick for tick in range(len(plan) + 1) if plan.stop_point(tick)]
    collective = [tick for tick in range(len(plan) + 1) if plan.stop_point(tick, collective=True)]
    assert alone == [0, 1, 3, 5, 6, 8, 10, 12, 13, 15]
    assert collective == [0, 1, 3, 6, 10, 13]


def test_positions_name_a_tick_in_the_words_of_the_messages():
    plan = DistillationPlan(epochs=3, warmup=1, ep_steps=4, kd_steps=2)
    assert plan.position(0) == {"epoch": 0, "round": 0, "kd_in_round": 0, "kd_step": 0}
    assert plan.position(5) == {"epoch": 1, "round": 0, "kd_in_round": 1, "kd_step": 1}
    assert plan.describe(10) == "epoch 2, round 0, kd in round 0, kd step 4"
    assert plan.position(17) == {"epoch": 3, "round": 0, "kd_in_round": 0, "kd_step": 8}


def test_every_tick_of_a_train_scratch_plan():
    plan = EpochPlan(epochs=2, steps=3)
    T = TRAIN_STEP
    assert len(plan) == 8
    assert [(t.kind, t.epoch, t.step) for t in plan] == [
        (T, 0, 0), (T, 0, 1), (T, 0, 2), (E, 0, 3), (T, 1, 0), (T, 1, 1), (T, 1, 2), (E, 1, 3)]
    assert plan[5] == Tick(TRAIN_STEP, 1, step=1)
    assert [plan.epoch_ticks(epoch) for epoch in (0, 1)] == [range(0, 4), range(4, 8)]
    assert [tick for tick in range(9) if plan.stop_point(tick)] == [0, 1, 2, 4, 5, 6]
    assert [tick for tick in range(9) if plan.stop_point(tick, collective=True)] == [0, 4]
    assert plan.position(5) == {"epoch": 1, "step": 1} and plan.position(8) == {"epoch": 2, "step": 0}
    with pytest.raises(ValueError, match="no plan"):
        EpochPlan(epochs=1, steps=0)


# ----------------------------------------------------------------------------- in the loop
def test_last_pth_stores_the_next_tick(tmp_path, cifar10_root, teacher_checkpoint):
    """A stop after the first KD step (tick 1) leaves tick 2 in last.pth, not a position dict."""
    import torch

    import datafree_kd
    from conftest import distill_args

    run = tmp_path / "run"
    stopped = datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, run, "--max_minutes", "1e-9"))
    saved = torch.load(run / "last.pth", weights_only=True)
    assert stopped["tick"] == saved["tick"] == 2 and "position" not in saved and saved["epoch"] == 0


@pytest.mark.parametrize("program", ["datafree_kd", "train_scratch"])
def test_a_checkpoint_from_before_the_tick_format_is_refused_in_one_line(program, tmp_path, cifar10_root,
                                                                         teacher_checkpoint, capsys):
    """``--resume`` of a last.pth that holds the former position dict: exit 2, one line that says
    why and how to go on, no traceback, and the run directory as it was."""
    import torch

    import datafree_kd
    import train_scratch
    from conftest import distill_args
    from datafree.run.cli import run_cli

    run = tmp_path / "run"
    if program == "datafree_kd":
        main, args = datafree_kd.main, distill_args("dafl", cifar10_root, teacher_checkpoint, run)
        old_position = {"epoch": 0, "round": 0, "kd_in_round": 1, "kd_step": 1}
    else:
        main = train_scratch.main
        args = ["--model", "wrn16_1", "--dataset", "cifar10", "--data_root", str(cifar10_root), "--epochs", "1",
                "--batch_size", "64", "--device", "cpu", "--no_progress", "--save_dir", str(run),
                "--pretrained_path", str(tmp_path / "pretrained.pth")]
        old_position = {"epoch": 0, "step": 1}
    main([*args, "--max_minutes", "1e-9"])
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    del checkpoint["tick"]
    checkpoint["position"] = old_position   # as written before the tick format
    torch.save(checkpoint, run / "last.pth")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_cli(main, [*args, "--resume"])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and "Traceback" not in error
    assert "predates the tick format" in error and "start a new run" in error and "--overwrite" in error
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
