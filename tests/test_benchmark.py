"""benchmarks/throughput.py runs and reports sane numbers (no speed targets here: see benchmarks/)."""
from __future__ import annotations

import json
import sys
import time

import pytest

from conftest import REPO
from datafree.errors import UsageError

sys.path.insert(0, str(REPO / "benchmarks"))
import throughput  # noqa: E402


def test_throughput_table_for_two_methods_and_precisions(tmp_path, tiny_teacher):
    out = tmp_path / "table.md"
    rows = throughput.main(["--methods", "cudfkd,adi", "--pairs", "tiny_cnn:tiny_cnn", "--device", "cpu",
                            "--variants", "fp32,bf16", "--kd_steps_measured", "2", "--synthesis_calls", "1",
                            "--warmup", "1", "--max_g_steps", "2", "--out", str(out),
                            "--batch_size", "8", "--ngf", "8"])
    assert [(r["method"], r["variant"]) for r in rows] == [("cudfkd", "fp32"), ("cudfkd", "bf16"),
                                                          ("adi", "fp32"), ("adi", "bf16")]
    for row in rows:
        assert row["student_images_per_second"] > 0 and row["synthesis_iterations_per_second"] > 0
        assert row["peak_memory_gb"] is None  # CPU
    adi = rows[2]
    # ADI's projection uses its schedule's 1000 iterations per round, not the 2 that were timed.
    assert adi["g_steps"] == 1000
    expected = adi["epochs"] * (1000 / adi["synthesis_iterations_per_second"]
                                + 400 / adi["student_images_per_second"] * 8) / 3600
    assert adi["projected_hours"] == pytest.approx(expected, rel=1e-6)
    assert "| adi | tiny_cnn→tiny_cnn | bf16 | 8 |" in out.read_text()


def test_commands_sharing_an_output_accumulate_rows_and_bad_names_fail_before_measuring(tmp_path, tiny_teacher):
    out = tmp_path / "table.md"
    common = ["--pairs", "tiny_cnn:tiny_cnn", "--device", "cpu", "--variants", "fp32", "--kd_steps_measured", "1",
              "--synthesis_calls", "1", "--warmup", "0", "--max_g_steps", "1", "--out", str(out),
              "--batch_size", "4", "--ngf", "8"]
    throughput.main(["--methods", "dafl", *common])
    throughput.main(["--methods", "zskt", *common])
    rows = json.loads((tmp_path / "table.md.json").read_text())
    assert [row["method"] for row in rows] == ["dafl", "zskt"]
    assert all("--methods" in row["command"] for row in rows)
    assert out.read_text().count("| method | pair |") == 2
    for bad, valid in ((["--methods", "dafl,cudfdk"], "cudfkd"), (["--methods", "dafl", "--variants", "fp64"], "bf16"),
                       (["--methods", "dafl", "--pairs", "resnet34"], "teacher:student")):
        with pytest.raises(UsageError, match=valid):
            throughput.main([*common, *bad])
    assert len(json.loads((tmp_path / "table.md.json").read_text())) == 2  # nothing measured


def test_max_minutes_stops_before_overrunning_and_resume_measures_only_the_rest(tmp_path, tiny_teacher, monkeypatch):
    """A device lent for minutes: the budget check starts no row that the longest row so far says
    would overrun, and the same command with --resume measures only the rows FILE.json lacks."""
    out = tmp_path / "table.md"
    command = ["--methods", "dafl,zskt", "--pairs", "tiny_cnn:tiny_cnn", "--device", "cpu", "--variants", "fp32",
               "--kd_steps_measured", "1", "--synthesis_calls", "1", "--warmup", "0", "--max_g_steps", "1",
               "--out", str(out), "--batch_size", "4", "--ngf", "8"]
    measured: list[str] = []
    original = throughput.measure

    def slow_measure(method, *args, **kwargs):
        measured.append(method)
        time.sleep(0.3)   # every row takes at least 0.3 s, so a second one cannot fit in 0.5 s
        return original(method, *args, **kwargs)

    monkeypatch.setattr(throughput, "measure", slow_measure)
    rows = throughput.main([*command, "--max_minutes", str(0.5 / 60)])
    assert [row["method"] for row in rows] == measured == ["dafl"]
    rows = throughput.main([*command, "--resume"])
    assert [row["method"] for row in rows] == ["zskt"] and measured == ["dafl", "zskt"]
    assert throughput.main([*command, "--resume"]) == [] and measured == ["dafl", "zskt"]
    held = json.loads((tmp_path / "table.md.json").read_text())
    assert [row["method"] for row in held] == ["dafl", "zskt"]
    assert out.read_text().count("| method | pair |") == 2   # nothing appended when nothing is measured
    throughput.main([*command, "--methods", "dafl"])   # without --resume a row is measured again
    assert measured[-1] == "dafl"
    with pytest.raises(UsageError, match="give --out"):
        throughput.main([arg for arg in command if arg not in ("--out", str(out))] + ["--resume"])



def test_the_newer_methods_are_measured_with_their_warm_up_and_synthesis_time(tmp_path, tiny_teacher):
    """Fast and NAYER warm up (20 epochs of synthesis only, NAYER with 10 batches per warm-up epoch):
    their projection adds those epochs; every row reports seconds per synthesize() call."""
    rows = throughput.main(["--methods", "fast,nayer,adadfkd", "--pairs", "tiny_cnn:tiny_cnn", "--device", "cpu",
                            "--variants", "fp32", "--kd_steps_measured", "1", "--synthesis_calls", "1",
                            "--warmup", "0", "--max_g_steps", "1", "--batch_size", "8",
                            "--synthesis_batch_size", "10", "--ngf", "8", "--le_hidden", "16", "--queue_size", "16"])
    assert [(row["method"], row["warmup"]) for row in rows] == [("fast", 20), ("nayer", 20), ("adadfkd", 0)]
    for row in rows:
        assert row["synthesis_seconds_per_call"] > 0 and row["settings"].startswith("--batch_size 8")
        kd_epochs = row["epochs"] - row["warmup"]
        warm_up_seconds = row["projected_hours"] * 3600 - kd_epochs * row["epoch_seconds"]
        assert (warm_up_seconds > 0) if row["warmup"] else warm_up_seconds == pytest.approx(0, abs=1e-6)
