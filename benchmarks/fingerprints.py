"""Fingerprints of short runs of every registered method, to prove a refactor changes no result.

Writes a tiny learnable CIFAR-10 and CIFAR-100 fixture, trains a wrn16_1 teacher on each with
``train_scratch.py``, runs every method for one short epoch (the test suite's tiny flags) and
prints one JSON object: run name -> weight fingerprint (``datafree_kd.fingerprint``) of the
trained network. Run it before and after a change on the same machine and compare::

    python benchmarks/fingerprints.py > before.json     # ... change the code ...
    python benchmarks/fingerprints.py > after.json && diff before.json after.json

Floating-point results differ between CPU instruction sets, so compare only runs made on one
machine. Takes about a minute on two cores.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

import datafree_kd  # noqa: E402
import registry  # noqa: E402
import train_scratch  # noqa: E402
from cifar_fixtures import write_cifar  # noqa: E402
from conftest import distill_args  # noqa: E402

#: Variants beyond the tiny configuration, on CIFAR-10: the code paths a tiny run skips (warm-up and the
#: adversarial gate, Reptile, the first-layer reset, ADI's [REF] last iterate, NAYER's [REF] student mode).
VARIANTS = {
    "fast/warmup_reptile": ("fast", "--epochs", "3", "--warmup", "1", "--fast_meta", "reptile", "--reset_l0_epoch", "2"),
    "fast/warmup": ("fast", "--epochs", "2", "--warmup", "1"),
    "adi/keep_last": ("adi", "--adi_keep_last"),
    "nayer/warmup_ref_mode": ("nayer", "--epochs", "2", "--warmup", "1", "--g_loops", "2", "--nayer_ref_student_mode"),
    "cmi/no_adv": ("cmi", "--adv", "0"),
}


def quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return function(*args)


def weights_fingerprint(path: Path) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    total = sum(float(value.double().abs().sum()) for key, value in state.items() if value.is_floating_point())
    return f"{total:.10e}"


def main() -> None:
    torch.set_num_threads(2)
    prints: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for dataset in ("cifar10", "cifar100"):
            root = work / dataset
            write_cifar(root, dataset, n_train=640, n_test=200, learnable=True, seed=0)
            teacher = work / f"{dataset}_wrn16_1.pth"
            quiet(train_scratch.main, ["--model", "wrn16_1", "--dataset", dataset, "--data_root", str(root),
                                       "--epochs", "2", "--batch_size", "64", "--lr", "0.05", "--milestones", "1",
                                       "--device", "cpu", "--save_dir", str(work / f"scratch_{dataset}"),
                                       "--pretrained_path", str(teacher), "--no_progress"])
            prints[f"scratch/{dataset}"] = weights_fingerprint(work / f"scratch_{dataset}" / "last.pth")
            methods = registry.METHODS if dataset == "cifar10" else ["cudfkd", "dfq"]
            for method in methods:
                run = work / f"{method}_{dataset}"
                args = distill_args(method, root, teacher, run)
                args[args.index("--dataset") + 1] = dataset
                quiet(datafree_kd.main, args)
                prints[f"{method}/{dataset}"] = weights_fingerprint(run / "last.pth")
            if dataset == "cifar10":
                for name, (method, *extra) in VARIANTS.items():
                    run = work / name.replace("/", "_")
                    quiet(datafree_kd.main, distill_args(method, root, teacher, run, *extra))
                    prints[name] = weights_fingerprint(run / "last.pth")
    json.dump(prints, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
