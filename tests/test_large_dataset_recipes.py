"""The Tiny-ImageNet and ImageNet recipes (docs/METHODS.md §18.5, §19.4): the per-dataset option rows, resolved
through the driver, the launchers that run them, and the with-data accuracies their headers quote."""
from __future__ import annotations

import pytest

import datafree_kd
import registry
from datafree.published import LARGE_PAIRS, published, scratch_accuracy

TINY_R50 = ("tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet")
TINY_R34 = ("tiny_imagenet", "resnet34_imagenet", "resnet18_imagenet")


def resolve(method: str, dataset: str, teacher: str, student: str, *flags: str) -> dict:
    """The resolved configuration of a run, as ``datafree_kd.py`` builds it (one process)."""
    args = datafree_kd.build_parser().parse_args(["--method", method, "--dataset", dataset, "--teacher", teacher,
                                                  "--student", student, *flags])
    return datafree_kd.resolve_options(args, world_size=1)


#: method -> (cell, the values its ROWS row gives there: the §18.5 scripts and Fast-50's log headers, §19.4).
ROWS = {
    "cudfkd": (TINY_R50, {
        "batch_size": 128, "synthesis_batch_size": 128, "epochs": 400, "ep_steps": 400, "kd_steps": 10, "g_steps": 1,
        "lr": 0.1, "lr_g": 1e-3, "beta1": 0.9, "beta2": 0.99, "loss": "l1", "T": 5.0, "lambda_0": 1.5,
        "lambda_growth": 2e-5, "adv": 1.0, "grad_adv": 0.1, "begin_fraction": 0.2, "end_fraction": 0.75,
        "nz": 1024, "depth": 3, "oh": 1.0, "bn": 1.0, "act": 0.0, "balance": 20.0, "adv_type": "kl",
        "adv_mask": "off", "curr_option": "curr_log", "spl_granularity": "batch"}),
    "adadfkd": (TINY_R50, {
        "batch_size": 256, "synthesis_batch_size": 256, "epochs": 500, "ep_steps": 400, "kd_steps": 10,
        "loss": "l1", "T": 5.0, "lambda_0": 1.3, "lambda_growth": 2e-5, "adv": 1.0, "grad_adv": 0.0,
        "begin_fraction": 0.2, "end_fraction": 0.75, "length": 0.81, "s_nce": 0.02, "queue_size": 16384,
        "hard": 0.05, "tau": 0.07, "nz": 1024, "depth": 3, "adv_mask": "off", "spl_granularity": "batch"}),
    "dfq": (TINY_R50, {
        "batch_size": 256, "synthesis_batch_size": 256, "epochs": 400, "ep_steps": 400, "kd_steps": 10,
        "g_steps": 1, "T": 5.0, "balance": 20.0, "nz": 256, "adv": 1.0, "bn": 1.0, "oh": 1.0, "act": 0.0,
        "beta1": 0.9, "beta2": 0.99, "generator": "G-L"}),
    "cmi": (TINY_R34, {
        "batch_size": 32, "synthesis_batch_size": 64, "epochs": 50, "ep_steps": 2000, "kd_steps": 2000,
        "g_steps": 200, "adv": 0.5, "oh": 0.5, "bn": 1.0, "cr": 0.8, "cr_T": 0.1, "T": 20.0,
        "lr_schedule": "cosine"}),
    "fast": (("imagenet", "tv_resnet50", "tv_resnet50"), {
        "batch_size": 100, "synthesis_batch_size": 100, "epochs": 400, "warmup": 0, "ep_steps": 1000,
        "kd_steps": 100, "fast_variant": "fast50", "g_steps": 50, "lr_g": 2e-4, "lr_z": 0.01, "lr": 0.1,
        "weight_decay": 1e-4, "lr_schedule": "cosine", "eta_min": 0.0, "T": 5.0, "adv": 0.1, "bn": 0.1,
        "oh": 0.1, "bn_mmt": 0.9, "fast_meta": "reptile", "nz": 256, "reset_l0_epoch": -1}),
}


@pytest.mark.parametrize("method", sorted(ROWS))
def test_the_dataset_rows_resolve_through_the_driver(method):
    cell, expected = ROWS[method]
    options = resolve(method, *cell)
    assert {key: options[key] for key in expected} == expected
    # the 32-px row is untouched
    cifar = resolve(method, "cifar10", "resnet34", "resnet18")
    assert any(cifar[key] != value for key, value in expected.items())


def test_cudfkd_on_tiny_imagenet_still_takes_a_given_flag_over_its_row():
    options = resolve("cudfkd", *TINY_R50, "--depth", "2", "--nz", "512", "--lambda_growth", "1e-4")
    assert (options["depth"], options["nz"], options["lambda_growth"], options["batch_size"]) == (2, 512, 1e-4, 128)


def _launchers(dataset: str) -> list[tuple[str, object]]:
    return [(name, launcher) for name, method in registry.METHODS.items() if method.recipe is not None
            for launcher in method.recipe.launchers if launcher.dataset == dataset]


#: (method, cell, variant) -> the options its launcher sets apart from the dataset row (§18.5, §19.4).
LAUNCHER_DEPARTURES = {
    ("cudfkd", TINY_R50, ""): set(), ("adadfkd", TINY_R50, ""): set(), ("dfq", TINY_R50, ""): set(),
    ("cmi", TINY_R34, ""): set(),
    ("fast", ("imagenet", "tv_resnet50", "tv_resnet50"), "fast50"): set(),
    ("fast", ("imagenet", "tv_resnet50", "tv_resnet18"), "fast50"): {"adv"},
    ("fast", ("imagenet", "tv_resnet50", "tv_mobilenet_v2"), "fast50"): set(),
    # not a dataset row: the 2022-11 script of another cell, and DeepInversion run by ADI
    ("cudfkd", TINY_R34, "late2022"): None, ("adi", ("imagenet", "tv_resnet50", "tv_resnet50"), "deepinv2k"): None,
}


def test_the_64_and_224_px_launchers_are_the_dataset_rows():
    """Each main launcher of a Tiny-ImageNet / ImageNet cell passes what its method resolves on that dataset
    without flags, so a run without the launcher reproduces the same script (one exception: Fast-50's
    R50→R18 run used adv 1.0)."""
    seen = set()
    for dataset in ("tiny_imagenet", "imagenet"):
        for name, launcher in _launchers(dataset):
            key = (name, launcher.cell, launcher.variant)
            assert key in LAUNCHER_DEPARTURES, key
            seen.add(key)
            departures = LAUNCHER_DEPARTURES[key]
            if departures is None:
                continue
            flags = [part for setting in launcher.settings for part in (f"--{setting.flag}", setting.value)]
            given = resolve(name, *launcher.cell, *flags)
            plain = resolve(name, *launcher.cell)
            differing = {option for option in registry.get_method(name).Options.flag_names()
                         if given[option] != plain[option]}
            assert differing == departures, key
    assert seen == set(LAUNCHER_DEPARTURES)
    fast_r18 = next(launcher for name, launcher in _launchers("imagenet") if launcher.student == "tv_resnet18")
    assert {setting.flag: setting.value for setting in fast_r18.settings}["adv"] == "1.0"


def test_published_numbers_and_with_data_accuracies():
    """58.18 (AdaDFKD, reproduction), Fast-50 68.61 / 53.45 / 43.02 and DeepInv-2k 68.00 (re-runs); the other
    64-px cells have none. Teachers: ljrprocc's released files and torchvision's documented top-1."""
    number = published("adadfkd", "", *TINY_R50)
    assert (number.value, number.kind) == (58.18, "reproduction")
    assert [(published("fast", "fast50", "imagenet", *pair).value, published("fast", "fast50", "imagenet", *pair).kind)
            for pair in LARGE_PAIRS["imagenet"]] == [(68.61, "re-run"), (53.45, "re-run"), (43.02, "re-run")]
    assert published("adi", "deepinv2k", "imagenet", "tv_resnet50", "tv_resnet50").describe() == "68.00 (re-run)"
    assert published("cudfkd", "", *TINY_R50) is None and published("cudfkd", "late2022", *TINY_R34) is None
    assert published("dfq", "", *TINY_R50) is None and published("cmi", "", *TINY_R34) is None
    assert [scratch_accuracy(model, "tiny_imagenet")
            for model in ("resnet50_imagenet", "resnet34_imagenet", "resnet18_imagenet", "resnet18")] == \
        [67.18, 62.43, 61.48, None]
    assert [scratch_accuracy(model, "imagenet") for model in ("tv_resnet50", "tv_resnet18", "tv_mobilenet_v2")] == \
        [76.13, 69.76, 71.88]
