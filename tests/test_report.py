"""Tests of datafree.report: the §6.2 statistic, run loading, tables, plot and CLI.

Every expected number is computed by hand (or by the explicit formula written in the test),
never by calling the code under test twice.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datafree.report import (
    NOT_AVAILABLE_SHORT_RUN,
    CellKey,
    ReportError,
    load_run,
    main,
    render_results_markdown,
    stats,
    summarize_across_seeds,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 84 epochs: acc[i] = 0.5 * i for the 80 burn-in epochs, then 90, 92, 94, 96.
# Window acc[80:] = [90, 92, 94, 96]: mu = 93, var = (9 + 1 + 1 + 9) / 4 = 5.
SHORT_CURVE = [0.5 * epoch for epoch in range(80)] + [90.0, 92.0, 94.0, 96.0]


def distillation_config(method: str, dataset: str = "cifar10", teacher: str = "resnet34",
                        student: str = "resnet18", seed: int = 0, epochs: int = 84) -> dict:
    """A config.yaml mapping like datafree_kd.py writes (only the keys the report reads + one)."""
    return {"method": method, "dataset": dataset, "teacher": teacher, "student": student,
            "seed": seed, "epochs": epochs, "batch_size": 256}


def write_run(directory: Path, config: dict, accuracies: list[float], epoch_seconds: float = 36.0,
              extra: dict | None = None) -> Path:
    """Write config.yaml and metrics.jsonl (one line per epoch) into ``directory``."""
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lines = []
    best = -math.inf
    for epoch, accuracy in enumerate(accuracies):
        best = max(best, accuracy)
        record = {"epoch": epoch, "acc1": accuracy, "acc5": 99.0, "loss": 0.5, "lr": 0.1,
                  "best_acc1": best, "epoch_seconds": epoch_seconds}
        for key, values in (extra or {}).items():
            record[key] = values[epoch]
        lines.append(json.dumps(record))
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return directory


# ----------------------------------------------------------------------------- stats (§6.2)


def test_stats_short_curve_matches_hand_values():
    result = stats(SHORT_CURVE)
    assert result["mu"] == 93.0
    assert result["var"] == 5.0
    assert result["best"] == 96.0
    assert result["best_epoch"] == 83
    assert result["last"] == 96.0
    assert result["mean_last5"] == (39.5 + 90 + 92 + 94 + 96) / 5  # = 82.3
    assert result["epochs"] == 84


def test_stats_100_epochs_periodic_curve():
    accuracies = [50.0 + 2.0 * (epoch % 4) for epoch in range(100)]
    window = accuracies[80:]  # 20 values: 50, 52, 54, 56 five times
    expected_mu = sum(window) / len(window)
    expected_var = sum((value - expected_mu) ** 2 for value in window) / len(window)
    assert (expected_mu, expected_var) == (53.0, 5.0)
    result = stats(accuracies, burn_in=80)
    assert result["mu"] == 53.0
    assert result["var"] == 5.0  # population variance; the sample variance would be 100/19
    assert result["best"] == 56.0
    assert result["best_epoch"] == 3  # first epoch reaching the max, 0-based
    assert result["last"] == 56.0
    assert result["mean_last5"] == (56 + 50 + 52 + 54 + 56) / 5


def test_stats_burn_in_and_tail_drop():
    with_tail = stats(SHORT_CURVE, burn_in=80, tail_drop=1)  # [90, 92, 94]
    assert with_tail["mu"] == 92.0
    assert with_tail["var"] == 8.0 / 3.0
    later = stats(SHORT_CURVE, burn_in=82)  # [94, 96]
    assert (later["mu"], later["var"]) == (95.0, 1.0)
    both = stats(SHORT_CURVE, burn_in=81, tail_drop=2)  # [92]
    assert (both["mu"], both["var"]) == (92.0, 0.0)
    # best / last never depend on the window
    assert (with_tail["best"], with_tail["last"]) == (96.0, 96.0)


def test_stats_window_empty_gives_none():
    for burn_in, tail_drop in ((84, 0), (100, 0), (83, 1), (0, 84)):
        result = stats(SHORT_CURVE, burn_in=burn_in, tail_drop=tail_drop)
        assert result["mu"] is None and result["var"] is None
        assert result["best"] == 96.0


def test_stats_short_run_first_best_and_fewer_than_five():
    result = stats([1.0, 5.0, 5.0, 3.0], burn_in=1)
    window = [5.0, 5.0, 3.0]
    mu = 13.0 / 3.0
    assert result["mu"] == pytest.approx(mu, abs=1e-12)
    assert result["var"] == pytest.approx(sum((v - mu) ** 2 for v in window) / 3, abs=1e-12)
    assert result["var"] == pytest.approx(8.0 / 9.0, abs=1e-12)
    assert result["best_epoch"] == 1
    assert result["last"] == 3.0
    assert result["mean_last5"] == 14.0 / 4.0


def test_stats_rejects_negative_window_and_empty_curve():
    with pytest.raises(ValueError):
        stats([1.0], burn_in=-1)
    with pytest.raises(ValueError):
        stats([1.0], tail_drop=-1)
    with pytest.raises(ValueError):
        stats([])


def test_summarize_across_seeds_mean_and_sample_std():
    runs = [{"best": 90.0, "mu": 80.0}, {"best": 92.0, "mu": None}, {"best": 97.0, "mu": 81.0}]
    summary = summarize_across_seeds(runs)
    mean, std = summary["best"]
    assert mean == 93.0
    # deviations -3, -1, 4: (9 + 1 + 16) / (3 - 1) = 13
    assert std == pytest.approx(math.sqrt(13.0), abs=1e-12)
    assert summary["mu"] == (None, None)
    assert summarize_across_seeds([{"best": 90.0}]) == {"best": (90.0, None)}
    with pytest.raises(ValueError):
        summarize_across_seeds([{"best": 1.0}, {"last": 1.0}])
    with pytest.raises(ValueError):
        summarize_across_seeds([])


# ----------------------------------------------------------------------------- load_run


def test_load_run_distillation(tmp_path):
    memory = [1000.0] * 84
    memory[10] = 2048.0
    agreement = [50.0] * 84
    agreement[40] = 97.5
    directory = write_run(tmp_path / "run", distillation_config("cudfkd", seed=3), SHORT_CURVE,
                          extra={"peak_memory_mb": memory, "agreement1": agreement})
    run = load_run(directory)
    assert run.key == CellKey("cudfkd", "", None, "cifar10", "resnet34", "resnet18") and run.seed == 3
    assert run.key.pair == "resnet34→resnet18"
    assert run.accuracies == tuple(SHORT_CURVE)
    assert run.peak_memory_mb == 2048.0
    assert run.wall_seconds == 84 * 36.0
    assert run.best_fidelity == {"agreement1": 97.5}
    assert run.epochs_configured == 84 and not run.is_partial
    assert run.progress == "84/84"


def test_load_run_scratch_partial_no_memory(tmp_path):
    config = {"model": "wrn16_1", "dataset": "cifar100", "seed": 1, "epochs": 200}
    run = load_run(write_run(tmp_path / "scratch", config, [10.0, 20.0, 30.0], epoch_seconds=1.5))
    assert (run.key.method, run.key.teacher, run.key.student) == ("scratch", "-", "wrn16_1")
    assert run.is_partial and run.progress == "3/200"
    assert run.peak_memory_mb is None
    assert run.wall_seconds == 4.5
    assert run.best_fidelity == {}


def test_load_run_duplicate_epoch_keeps_later_line(tmp_path):
    directory = write_run(tmp_path / "run", distillation_config("adi", epochs=3), [1.0, 2.0])
    with open(directory / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"epoch": 1, "acc1": 7.0, "epoch_seconds": 1.0}) + "\n\n")
    run = load_run(directory)
    assert run.accuracies == (1.0, 7.0)
    assert run.wall_seconds == 37.0


@pytest.mark.parametrize("case, expected", [
    ("missing_dir", "no such run directory"),
    ("no_metrics", "no metrics.jsonl"),
    ("no_config", "no config.yaml"),
    ("bad_json", "metrics.jsonl:2: malformed JSON"),
    ("no_acc1", "metrics.jsonl:1: 'acc1' must be a finite number"),
    ("not_object", "metrics.jsonl:2: expected a JSON object"),
    ("gap", "epoch 1 is missing"),
    ("empty_metrics", "no epoch recorded yet"),
    ("config_list", "config.yaml: expected a mapping"),
    ("config_no_student", "config.yaml: missing key 'student'"),
])
def test_load_run_errors_name_file_and_line(tmp_path, case, expected):
    directory = tmp_path / "run"
    if case != "missing_dir":
        write_run(directory, distillation_config("dafl"), [1.0, 2.0])
    metrics = directory / "metrics.jsonl"
    if case == "no_metrics":
        metrics.unlink()
    elif case == "no_config":
        (directory / "config.yaml").unlink()
    elif case == "bad_json":
        metrics.write_text('{"epoch": 0, "acc1": 1.0}\n{"epoch": 1, "acc1": \n')
    elif case == "no_acc1":
        metrics.write_text('{"epoch": 0}\n')
    elif case == "not_object":
        metrics.write_text('{"epoch": 0, "acc1": 1.0}\n[1, 2]\n')
    elif case == "gap":
        metrics.write_text('{"epoch": 0, "acc1": 1.0}\n{"epoch": 2, "acc1": 1.0}\n')
    elif case == "empty_metrics":
        metrics.write_text("")
    elif case == "config_list":
        (directory / "config.yaml").write_text("- a\n- b\n")
    elif case == "config_no_student":
        config = distillation_config("dafl")
        del config["student"]
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ReportError) as error:
        load_run(directory)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


# ----------------------------------------------------------------------------- tables


def make_runs(tmp_path: Path) -> list[Path]:
    """Runs covering ordering, several seeds, a scratch run, a partial and a short run.

    cudfkd r34→r18 seeds 0 and 1: SHORT_CURVE and SHORT_CURVE + 2 (best 96 and 98).
    dafl r34→r18 seed 0: SHORT_CURVE, configured for 100 epochs -> partial 84/100.
    cmi wrn40_2→wrn16_1: 10 epochs only (shorter than the burn-in).
    scratch resnet18; dfq on cifar100.
    """
    shifted = [value + 2.0 for value in SHORT_CURVE]
    return [
        write_run(tmp_path / "scratch", {"model": "resnet18", "dataset": "cifar10", "seed": 0,
                                         "epochs": 84}, SHORT_CURVE),
        write_run(tmp_path / "cudfkd1", distillation_config("cudfkd", seed=1), shifted,
                  extra={"peak_memory_mb": [7004.16] * 84}),
        write_run(tmp_path / "cmi", distillation_config("cmi", teacher="wrn40_2", student="wrn16_1",
                                                        epochs=10), [float(i) for i in range(10)]),
        write_run(tmp_path / "dfq100", distillation_config("dfq", dataset="cifar100"), SHORT_CURVE),
        write_run(tmp_path / "cudfkd0", distillation_config("cudfkd", seed=0), SHORT_CURVE,
                  extra={"peak_memory_mb": [7004.16] * 84}),
        write_run(tmp_path / "dafl", distillation_config("dafl", epochs=100), SHORT_CURVE),
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_results_markdown_cells_and_order(tmp_path):
    runs = [load_run(path) for path in make_runs(tmp_path)]
    markdown = render_results_markdown(runs, burn_in=80, tail_drop=0)
    lines = markdown.splitlines()
    cifar10_header = lines.index("### cifar10") + 2
    assert lines[cifar10_header] == ("| cifar10 | resnet34→resnet18 | wrn40_2→wrn16_1 | -→resnet18 |")
    rows = lines[cifar10_header + 2: cifar10_header + 6]
    assert [row.split(" | ")[0] for row in rows] == ["| dafl", "| cmi", "| cudfkd", "| scratch"]
    assert rows[0] == "| dafl | 96.00 (96.00 / 82.30) † · published 92.22 (re-run) |  |  |"
    # last5 = (5+6+7+8+9)/5; scratch CMI has its own expectation (METHODS.md §5.10)
    assert rows[1] == "| cmi |  | 9.00 (9.00 / 7.00) · published 90.01 (different expectation: ≈ 88.82) |  |"
    # two seeds: best 96 and 98 -> 97 ± sqrt(2); last 97 (mean); last5 (82.3 + 84.3) / 2
    assert rows[2] == "| cudfkd | 97.00 ± 1.41 (97.00 / 83.30) n=2 · published 95.28 (reproduction) |  |  |"
    assert "### cifar100" in lines and "| dfq | 96.00 (96.00 / 82.30) · published 77.01 (re-run) |" in lines

    assert "## Stability: μ and σ² over epochs 80..end (burn-in 80, population variance)" in lines
    stability_start = lines.index("| method | dataset | pair | precision | n | μ | σ² | best | peak memory (GB) | "
                                  "wall time (h) | published μ / σ² / best | epochs |")
    stability = lines[stability_start + 2: stability_start + 7]
    # cells sorted by method (paper order), then dataset, then pair
    assert [line.split(" | ")[0] for line in stability] == ["| dafl", "| dfq", "| cmi", "| cudfkd",
                                                            "| scratch"]
    by_method = {line.split(" | ")[0][2:] + " " + line.split(" | ")[1]: line for line in stability}
    # cudfkd: mu 93 and 95 -> 94 ± sqrt(2); var 5 and 5 -> 5 ± 0; memory 7004.16 / 1024 = 6.84 GB;
    # time 84 * 36 s = 0.84 h
    assert by_method["cudfkd cifar10"] == ("| cudfkd | cifar10 | resnet34→resnet18 | - | 2 | 94.00 ± 1.41 | "
                                           "5.00 ± 0.00 | 97.00 ± 1.41 | 6.84 ± 0.00 | 0.84 ± 0.00 | - | "
                                           "84/84, 84/84 |")
    assert by_method["cmi cifar10"] == (f"| cmi | cifar10 | wrn40_2→wrn16_1 | - | 1 | {NOT_AVAILABLE_SHORT_RUN} | "
                                        f"{NOT_AVAILABLE_SHORT_RUN} | 9.00 | – | 0.10 | - | 10/10 |")
    assert by_method["dafl cifar10"].endswith("| 93.00 | 5.00 | 96.00 | – | 0.84 | - | 84/100 † |")
    assert "dafl" in markdown.split("Partial runs")[1].splitlines()[0]
    assert "84/100 (partial)" in markdown
    runs_start = lines.index("## Runs") + 4
    run_rows = [line.split(" | ") for line in lines[runs_start + 2: runs_start + 8]]
    assert [(row[0][2:], row[4]) for row in run_rows] == [
        ("dafl", "0"), ("dfq", "0"), ("cmi", "0"), ("cudfkd", "0"), ("cudfkd", "1"), ("scratch", "0")]


def test_cli_writes_csv_markdown_png(tmp_path, capsys):
    paths = make_runs(tmp_path / "runs")
    out = tmp_path / "out"
    assert main([str(path) for path in paths] + ["--out", str(out), "--burn_in", "82"]) == 0
    printed = capsys.readouterr().out
    assert "μ and σ² over epochs 82..end (burn-in 82, population variance)" in printed
    assert "wrote" in printed

    accuracy = read_csv(out / "accuracy.csv")
    assert [(row["method"], row["dataset"], row["pair"]) for row in accuracy] == [
        ("dafl", "cifar10", "resnet34→resnet18"), ("dfq", "cifar100", "resnet34→resnet18"),
        ("cmi", "cifar10", "wrn40_2→wrn16_1"), ("cudfkd", "cifar10", "resnet34→resnet18"),
        ("scratch", "cifar10", "-→resnet18")]
    # rows: paper method order (dafl, adi, dfq, cmi, cudfkd), then scratch
    assert [row["method"] for row in accuracy] == ["dafl", "dfq", "cmi", "cudfkd", "scratch"]
    cudfkd = accuracy[3]
    assert (cudfkd["n_seeds"], cudfkd["seeds"]) == ("2", "0 1")
    assert float(cudfkd["best_mean"]) == 97.0
    assert float(cudfkd["best_std"]) == round(math.sqrt(2.0), 6)
    assert float(cudfkd["last_mean"]) == 97.0
    assert float(cudfkd["mean_last5_mean"]) == 83.3
    assert accuracy[0]["partial"] == "1" and accuracy[0]["epochs"] == "84/100"
    assert cudfkd["partial"] == "0" and accuracy[0]["best_std"] == ""

    stability = read_csv(out / "stability.csv")
    cudfkd_stability = stability[3]
    assert (cudfkd_stability["burn_in"], cudfkd_stability["tail_drop"]) == ("82", "0")
    # burn-in 82: windows [94, 96] and [96, 98] -> mu 95 and 97, var 1 and 1
    assert float(cudfkd_stability["mu_mean"]) == 96.0
    assert float(cudfkd_stability["var_mean"]) == 1.0
    assert float(cudfkd_stability["var_std"]) == 0.0
    assert float(cudfkd_stability["peak_memory_gb_mean"]) == 6.84
    assert float(cudfkd_stability["wall_hours_mean"]) == 0.84
    assert stability[2]["mu_mean"] == "" and stability[2]["method"] == "cmi"

    assert (out / "results.md").read_text(encoding="utf-8").startswith("# Results")
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000


def test_cli_tail_drop_and_default_out_dir(tmp_path, monkeypatch, capsys):
    loyalty = [0.5] * 84
    loyalty[-1] = 0.875
    run = write_run(tmp_path / "run", distillation_config("adi"), SHORT_CURVE,
                    extra={"agreement1": [10.0 + epoch for epoch in range(84)], "prob_loyalty_ref": loyalty})
    monkeypatch.chdir(tmp_path)
    assert main([str(run), "--tail_drop", "1"]) == 0
    stability = read_csv(tmp_path / "report" / "stability.csv")
    assert float(stability[0]["mu_mean"]) == 92.0
    assert float(stability[0]["var_mean"]) == round(8.0 / 3.0, 6)
    accuracy = read_csv(tmp_path / "report" / "accuracy.csv")
    assert (accuracy[0]["agreement1_mean"], accuracy[0]["prob_loyalty_ref_mean"]) == ("93.0", "0.875")
    assert accuracy[0]["prob_loyalty_js_mean"] == ""
    assert "without the last 1 (burn-in 80, tail drop 1, population variance)" in capsys.readouterr().out


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text(yaml.safe_dump(distillation_config("dafl")))
    with pytest.raises(SystemExit) as exit_info:
        main([str(broken), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error_output = capsys.readouterr().err
    assert error_output.startswith("error: ") and "no metrics.jsonl" in error_output
    assert error_output.count("\n") == 1 and "Traceback" not in error_output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["--tail_drop", "abc"], "error: --tail_drop must be a non-negative integer, got 'abc'"),
    (["RUN", "--tail_drop", "abc"], "error: --tail_drop must be a non-negative integer, got 'abc'"),
    (["RUN", "--tail_drop", "-1"], "error: --tail_drop must be a non-negative integer, got '-1'"),
    (["RUN", "--burn_in", "-3"], "error: --burn_in must be a non-negative integer, got '-3'"),
    (["RUN", "--burn_in", "2.5"], "error: --burn_in must be a non-negative integer, got '2.5'"),
    (["RUN", "--burn_in", ""], "error: --burn_in must be a non-negative integer, got ''"),
    (["RUN", "--burn"], "error: unrecognized arguments: --burn"),
    ([], "error: the following arguments are required: RUN_DIR"),
])
def test_cli_bad_arguments_one_line_exit_2_nothing_created(tmp_path, capsys, monkeypatch, arguments, expected):
    """A bad flag is one line naming the flag (not an internal function), exit 2, no output directory."""
    run = write_run(tmp_path / "run", distillation_config("dafl"), [1.0, 2.0])
    monkeypatch.chdir(tmp_path)
    argv = [str(run) if argument == "RUN" else argument for argument in arguments] + ["--out", "out"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(expected), captured.err
    assert "_non_negative_int" not in captured.err and "Traceback" not in captured.err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_cli_bad_argument_from_the_command_line(tmp_path):
    """``python -m datafree.report --tail_drop abc``: the package's __main__, one line, exit 2."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "datafree.report", "--tail_drop", "abc"], cwd=tmp_path,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)},
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: --tail_drop must be a non-negative integer, got 'abc'\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_missing_matplotlib_skips_png(tmp_path, monkeypatch, capsys):
    run = write_run(tmp_path / "run", distillation_config("adi"), SHORT_CURVE)
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert "note: matplotlib is not installed; accuracy.png skipped" in capsys.readouterr().out
    assert not (tmp_path / "out" / "accuracy.png").exists()
    assert (tmp_path / "out" / "results.md").exists()


def write_warm_up_run(directory: Path, method: str, warmup: int, accuracies: list[float]) -> Path:
    """A FastDFKD / NAYER run directory as datafree_kd.py writes it with ``--warmup N``: config.yaml
    records ``warmup``, and the first N metrics records are synthesis-only epochs, which
    ``RunLifecycle.end_epoch`` logs without any evaluation key (no acc1 / best_acc1) but with
    ``"warmup": true``."""
    config = {**distillation_config(method, teacher="wrn40_2", student="wrn16_1",
                                    epochs=warmup + len(accuracies)), "warmup": warmup}
    write_run(directory, config, accuracies)
    warm_up = [{"epoch": epoch, "lr": 0.1, "loss_generator": 1.5, "epoch_seconds": 10.0,
                "images_per_second": 100.0, "synthesis_seconds": 9.0, "warmup": True} for epoch in range(warmup)]
    evaluated = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    records = warm_up + [{**record, "epoch": record["epoch"] + warmup} for record in evaluated]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return directory


def test_write_report_with_warm_up_epochs_plots_evaluated_epochs(tmp_path):
    """The whole report on runs with warm-up epochs: the PNG is written (it used to fail with
    "x and y must have same first dimension"), each accuracy at its true epoch number."""
    fast = load_run(write_warm_up_run(tmp_path / "fast", "fast", warmup=20, accuracies=[50.0, 60.0, 65.0]))
    nayer = load_run(write_warm_up_run(tmp_path / "nayer", "nayer", warmup=3, accuracies=[40.0, 45.0]))
    assert (fast.warmup_epochs, fast.epochs_done, fast.accuracy_epochs) == (20, 23, (20, 21, 22))
    assert nayer.accuracy_epochs == (3, 4) and not nayer.is_partial
    markdown, written = write_report([fast, nayer], tmp_path / "out", burn_in=1, tail_drop=0)
    assert [path.name for path in written] == ["results.md", "accuracy.csv", "stability.csv", "accuracy.png"]
    png = (tmp_path / "out" / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert "| fast | cifar10 | wrn40_2→wrn16_1 | - | 1 | 62.50 | 6.25 | 65.00 |" in markdown   # burn-in: KD epochs


def test_plot_draws_accuracies_at_their_epochs(tmp_path, monkeypatch):
    """The x values of a warm-up run's curve are its evaluated epochs, not 0..n-1."""
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, x, y, **kwargs: drawn.append((list(x), list(y)))
                        or original(self, x, y, **kwargs))
    run = load_run(write_warm_up_run(tmp_path / "fast", "fast", warmup=2, accuracies=[50.0, 60.0]))
    write_report([run], tmp_path / "out", burn_in=0, tail_drop=0)
    assert drawn == [([2, 3], [50.0, 60.0])]


def test_metrics_log_is_below_the_report_and_the_run_lifecycle():
    """The one metrics.jsonl reader imports neither of its users (so both can import it)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, datafree.metrics_log; "
            "print(sorted(m for m in sys.modules if m.startswith('datafree.report') or m == 'datafree.run.lifecycle'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_import_does_not_load_matplotlib():
    root = Path(__file__).resolve().parents[1]
    code = "import sys, datafree.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_variants_precisions_and_warm_up_epochs_are_reported_apart(tmp_path):
    """A launcher variant (--log_tag) and a precision other than fp32 make cells of their own; warm-up
    epochs (logged without accuracy) count as epochs done but not in the statistics; each cell is
    printed beside its published number and the difference."""
    late = write_run(tmp_path / "late", {**distillation_config("cudfkd", "cifar100"), "log_tag": "late2022",
                                         "precision": "fp32", "epochs": 4}, [70.0, 74.0, 76.0, 75.0])
    bf16 = write_run(tmp_path / "bf16", {**distillation_config("cudfkd", "cifar100"), "precision": "bf16",
                                         "epochs": 4}, [70.0, 72.0, 73.0, 71.0])
    fast = tmp_path / "fast"
    write_run(fast, {**distillation_config("fast", student="resnet18"), "log_tag": "fast2", "epochs": 5},
              [90.0, 93.0, 92.5])
    warmup = [json.dumps({"epoch": epoch, "warmup": True, "epoch_seconds": 10.0}) for epoch in range(2)]
    shifted = [json.dumps({**json.loads(line), "epoch": json.loads(line)["epoch"] + 2})
               for line in (fast / "metrics.jsonl").read_text().splitlines()]
    (fast / "metrics.jsonl").write_text("\n".join(warmup + shifted) + "\n")
    runs = [load_run(path) for path in (late, bf16, fast)]
    assert (runs[2].epochs_done, runs[2].accuracies, runs[2].is_partial) == (5, (90.0, 93.0, 92.5), False)
    assert stats(runs[2].accuracies, burn_in=1)["mu"] == 92.75   # the burn-in counts KD epochs
    lines = render_results_markdown(runs, burn_in=0, tail_drop=0).splitlines()
    assert ("| cudfkd (late2022) | 76.00 (75.00 / 73.75) · published 75.87 (alternative state) |" in lines)
    assert "| cudfkd (bf16) | 73.00 (71.00 / 71.50) · published 75.87 (reproduction) |" in lines
    start = lines.index("## Compared with the published numbers") + 6
    comparison = lines[start:lines.index("", start)]
    assert comparison[0].startswith("| cudfkd (bf16) | cifar100 | resnet34→resnet18 | bf16 | 73.00 | "
                                    "75.87 (reproduction) | -2.87 |")
    assert comparison[1].startswith("| cudfkd (late2022) | cifar100 | resnet34→resnet18 | fp32 | 76.00 | "
                                    "75.87 (alternative state) | +0.13 |")
    assert comparison[2] == ("| fast (fast2) | cifar10 | resnet34→resnet18 | - | 93.00 | 92.62 (reproduction) | "
                             "+0.38 | the code state behind the paper is unknown (§13 item 3) |")


def test_the_seed_stability_rows_are_printed_beside_measured_mu_and_variance(tmp_path):
    """DFAD, MB-DFKD and PRE-DFKD appear in the seed's stability table only (§14.7, §15.3, §16.7): the
    report prints that row beside the measured μ / σ² of the cell, and the reconstruction's kind."""
    runs = [load_run(write_run(tmp_path / method, distillation_config(method), SHORT_CURVE))
            for method in ("dfad", "mbdfkd", "predfkd")]
    lines = render_results_markdown(runs, burn_in=80, tail_drop=0).splitlines()
    stability = {line.split(" | ")[0][2:]: line for line in lines
                 if line.startswith("| ") and " | cifar10 | resnet34→resnet18 | - | 1 | 93.00 | 5.00 |" in line}
    assert stability["dfad"].endswith("| 86.1 / 12.3 / 93.3 | 84/84 |")
    assert stability["mbdfkd (reconstruction)"].endswith("| 83.3 / 16.4 / 92.4 | 84/84 |")
    assert stability["predfkd"].endswith("| 87.4 / 10.3 / 94.1 | 84/84 |")
    assert any("92.40 (reconstruction)" in line for line in lines)


def test_the_64_and_224_px_cells_are_labelled_and_compared_with_their_published_numbers(tmp_path):
    """Tiny-ImageNet and ImageNet cells (§18.5, §19.4): the variant labels the row, the published number and its
    kind follow the measured one, the datasets follow CIFAR and the pairs the papers' order."""
    cells = {"ada": ("adadfkd", "tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet", ""),
             "cu": ("cudfkd", "tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet", ""),
             "r50": ("fast", "imagenet", "tv_resnet50", "tv_resnet50", "fast50"),
             "r18": ("fast", "imagenet", "tv_resnet50", "tv_resnet18", "fast50"),
             "deepinv": ("adi", "imagenet", "tv_resnet50", "tv_resnet50", "deepinv2k")}
    runs = []
    for name, (method, dataset, teacher, student, tag) in cells.items():
        config = {**distillation_config(method, dataset, teacher, student), "epochs": 3,
                  **({"log_tag": tag} if tag else {})}
        runs.append(load_run(write_run(tmp_path / name, config, [50.0, 55.0, 54.0])))
    lines = render_results_markdown(runs, burn_in=0, tail_drop=0).splitlines()
    assert lines.index("### tiny_imagenet") < lines.index("### imagenet")
    assert "| adadfkd | 55.00 (54.00 / 53.00) · published 58.18 (reproduction) |" in lines
    assert "| cudfkd | 55.00 (54.00 / 53.00) |" in lines
    assert "| imagenet | tv_resnet50→tv_resnet50 | tv_resnet50→tv_resnet18 |" in lines
    assert "| fast (fast50) | 55.00 (54.00 / 53.00) · published 68.61 (re-run) | 55.00 (54.00 / 53.00) · published " \
           "53.45 (re-run) |" in lines
    assert "| adi (deepinv2k) | 55.00 (54.00 / 53.00) · published 68.00 (re-run) |  |" in lines
    assert any(line.startswith("| fast (fast50) | imagenet | tv_resnet50→tv_resnet18 | - | 55.00 | 53.45 (re-run) | "
                               "+1.55 |") for line in lines)
