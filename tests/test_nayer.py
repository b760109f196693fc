"""NAYER (docs/METHODS.md §11): noisy-layer generator, label embeddings, epoch-wise synthesis.

Checks the exact parameter counts of §11.4, the chunk-wise noisy layers and balanced labels,
the per-batch re-initialisation (noisy layers only), the generator re-creation epochs and their
idempotence, the embedding sources (file / teacher_fc / random) and their one-line refusals,
the student's mode during synthesis ([CLEAN] eval vs. ``--nayer_ref_student_mode``), warm-up
epochs (``gwp_loops`` batches, no student query), and an exact resume across the warm-up boundary.
"""
from __future__ import annotations

import dataclasses

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import datafree_kd
from datafree.synthesis import label_embeddings
from datafree.errors import UsageError
from datafree.models import GeneratorS, NoisyLayerGenerator, reset_default_init
from datafree.models.generators import NoisyLayers
from datafree.synthesis.nayer import NAYERSynthesizer, balanced_labels, recreation_epoch
from tiny_models import TinyCNN, tiny_synthesis_setup

#: One-line refusals of NAYER's options, in the format of tests/test_bad_input.py::CASES. The base
#: command is ``distill_args("dafl", ...)`` (epochs 1), hence ``--warmup 0``. ``{nayer_*}`` name the
# ----------------------------------------------------------------------------- generator (§11.4)
BODY = 223_555   # the G-S body after its Linear, ngf 64 (§1.7)


@pytest.mark.parametrize("classes, width, expected", [(10, 512, 28_944_771), (100, 512, 10_476_771),
                                                      (10, 128, 13_584_003), (100, 128, 8_940_003)],
                         ids=["C10-clip", "C100-clip", "C10-wrn40_2-fc", "C100-wrn40_2-fc"])
def test_parameter_counts_are_those_of_the_reference(classes, width, expected):
    with torch.device("meta"):
        generator = NoisyLayerGenerator(torch.zeros(classes, width), hidden=1000, ngf=64, img_size=32,
                                        batch_size=400)
    count = lambda module: sum(parameter.numel() for parameter in module.parameters())
    layers = math.ceil(400 / classes)
    assert generator.noisy_layers.count == layers == {10: 40, 100: 4}[classes]
    assert count(generator.embedding_norm) == 2 * width
    assert count(generator.noisy_layers) == layers * (width * 1000 + 1000)
    assert count(generator.decoder.linear) == 1000 * 8192 + 8192
    assert count(generator.decoder.conv_blocks) == BODY
    assert count(generator) == expected
    assert "embeddings" not in generator.state_dict()          # a non-persistent buffer
    # The part after the noisy layers is G-S with nz = hidden, layer for layer.
    with torch.device("meta"):
        shapes = [tuple(p.shape) for p in GeneratorS(nz=1000).parameters()]
    assert [tuple(p.shape) for p in generator.decoder.parameters()] == shapes


def test_balanced_labels_give_every_chunk_each_class_once():
    labels = balanced_labels(400, 10)
    assert labels.shape == (400,)
    for chunk in labels.view(40, 10):
        assert torch.equal(chunk, torch.arange(10))
    assert torch.equal(balanced_labels(400, 100).view(4, 100), torch.arange(100).repeat(4, 1))
    # Bs mod C != 0 ([REF] rule, only reachable per rank): the remainder is uniform random labels.
    mixed = balanced_labels(25, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mixed[:20], torch.arange(10).repeat(2)) and mixed[20:].max() < 10


def test_each_chunk_goes_through_its_own_noisy_layer():
    layers = NoisyLayers(count=4, in_features=6, out_features=5)
    inputs = torch.randn(35, 6)                                   # 3 full chunks of 10, then 5 rows
    outputs = layers(inputs, chunk=10)
    for c in range(4):
        rows = slice(10 * c, min(10 * (c + 1), 35))
        expected = inputs[rows] @ layers.weight[c].T + layers.bias[c]
        torch.testing.assert_close(outputs[rows], expected)
    with torch.no_grad():
        layers.weight[2].add_(1.0)
    changed = (layers(inputs, chunk=10) != outputs).any(dim=1)
    assert changed[20:30].all() and not changed[:20].any() and not changed[30:].any()
    with pytest.raises(ValueError, match="need 5 noisy layers"):
        layers(torch.randn(41, 6), chunk=10)


def small_generator(classes: int = 10, width: int = 12) -> NoisyLayerGenerator:
    return NoisyLayerGenerator(torch.randn(classes, width), hidden=16, ngf=4, img_size=32, batch_size=2 * classes)


def test_re_init_touches_only_the_noisy_layers():
    generator = small_generator()
    before = {name: value.clone() for name, value in generator.state_dict().items()}
    generator.re_init_noisy_layers(torch.Generator().manual_seed(1))
    after = generator.state_dict()
    noisy = {"noisy_layers.weight", "noisy_layers.bias"}
    assert all(torch.equal(before[name], after[name]) for name in before if name not in noisy)
    assert not torch.equal(before["noisy_layers.weight"], after["noisy_layers.weight"])
    assert torch.equal(after["noisy_layers.bias"], torch.zeros(2, 16))
    weight = after["noisy_layers.weight"]
    assert abs(weight.std().item() - 1.0) < 0.15 and abs(weight.mean().item()) < 0.15   # N(0, 1), not 0.02
    twin = small_generator()
    twin.re_init_noisy_layers(torch.Generator().manual_seed(1))
    assert torch.equal(twin.noisy_layers.weight, weight)
    noisy_ids = {id(p) for p in generator.noisy_layers.parameters()}
    assert len(generator.persistent_parameters()) == len(list(generator.parameters())) - 2
    assert not noisy_ids & {id(p) for p in generator.persistent_parameters()}


def test_reset_default_init_draws_pytorchs_defaults_from_a_generator():
    torch.manual_seed(7)
    linear, conv, norm = nn.Linear(6, 5), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    expected = [p.clone() for p in (*linear.parameters(), *conv.parameters())]
    model = nn.Sequential(linear, conv, norm)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(3.0)
        norm.running_mean.add_(1.0)
    reset_default_init(model, generator=torch.Generator().manual_seed(7))
    for parameter, value in zip((*linear.parameters(), *conv.parameters()), expected):
        assert torch.equal(parameter, value)
    assert torch.equal(norm.weight, torch.ones(4)) and torch.equal(norm.bias, torch.zeros(4))
    assert torch.equal(norm.running_mean, torch.zeros(4)) and norm.num_batches_tracked.item() == 0
    # The batched noisy layers draw, layer by layer, what separate nn.Linear layers would.
    layers = NoisyLayers(3, 6, 5)
    generator = torch.Generator().manual_seed(8)
    reset_default_init(layers, generator=generator)
    torch.manual_seed(8)
    noisy_reference = [nn.Linear(6, 5) for _ in range(3)]
    for c, reference in enumerate(noisy_reference):
        assert torch.equal(layers.weight[c], reference.weight) and torch.equal(layers.bias[c], reference.bias)


# ----------------------------------------------------------------------------- synthesizer
def make_synthesizer(synthesis_batch_size: int = 20, **overrides) -> NAYERSynthesizer:
    """A NAYER synthesizer on a tiny CPU teacher / student (10 classes)."""
    setup = tiny_synthesis_setup(batch_size=8, epochs=8, synthesis_batch_size=synthesis_batch_size)
    options = NAYERSynthesizer.Options.resolve({"ngf": 4, "le_hidden": 16, "g_steps": 2, "warmup": 0, "g_loops": 1,
                                                "gwp_loops": 1, **overrides})
    return NAYERSynthesizer(setup, options)


def test_recreation_epochs_follow_the_reference_rule():
    assert [e for e in range(60) if recreation_epoch(e, warmup=20, life=10)] == [0, 10, 20, 30, 40, 50]
    # [REF] rule kept verbatim: with warmup 1 it fires twice per period (§11.10 item 7).
    assert [e for e in range(25) if recreation_epoch(e, warmup=1, life=10)] == [0, 1, 10, 11, 20, 21]


def test_begin_epoch_recreates_in_place_once_per_due_epoch():
    synthesizer = make_synthesizer(warmup=2, g_life=2)
    generator = synthesizer.image_generator
    parameters = dict(generator.named_parameters())
    snapshot = lambda: {name: p.detach().clone() for name, p in parameters.items()}
    same = lambda a, b: all(torch.equal(a[name], b[name]) for name in a)

    def disturb():
        with torch.no_grad():
            for parameter in parameters.values():
                parameter.add_(0.5)

    constructed = snapshot()
    assert synthesizer.begin_epoch(0) == {"synthesis_loops": 1.0, "generator_recreated": 1.0}
    recreated = snapshot()
    assert not torch.equal(constructed["decoder.linear.weight"], recreated["decoder.linear.weight"])
    assert torch.equal(recreated["embedding_norm.weight"], torch.ones(32))       # PyTorch default: BN γ = 1
    disturb()
    trained = snapshot()
    synthesizer.begin_epoch(0)                        # a resumed epoch: not re-created twice
    assert same(trained, snapshot())
    assert synthesizer.begin_epoch(1)["generator_recreated"] == 0.0
    assert same(trained, snapshot())
    synthesizer.begin_epoch(2)
    now = snapshot()
    assert all(not torch.equal(trained[name], now[name]) for name in now)
    assert all(a is b for a, b in zip(parameters.values(), generator.parameters()))   # in place
    assert synthesizer.state_dict()["recreated_epoch"] == 2


@pytest.mark.parametrize("ref_mode", [False, True], ids=["clean", "ref"])
def test_student_mode_during_synthesis(ref_mode):
    """[CLEAN] the student is queried in eval for every batch; --nayer_ref_student_mode queries it in
    train mode from the second batch of an epoch, updating its BN running statistics (§11.10 item 1)."""
    synthesizer = make_synthesizer(g_loops=3, nayer_ref_student_mode=ref_mode)
    student = synthesizer.student
    modes: list[bool] = []
    student.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    running = [buffer.clone() for name, buffer in student.named_buffers() if "running_mean" in name]
    student.train()
    synthesizer.begin_epoch(0)
    terms = synthesizer.synthesize()
    assert "loss_adv" in terms and student.training                         # mode restored
    assert modes == [False] * 2 + [ref_mode] * 4                             # 3 batches x g_steps 2
    after = [buffer for name, buffer in student.named_buffers() if "running_mean" in name]
    assert all(torch.equal(a, b) for a, b in zip(running, after)) is (not ref_mode)
    assert all(p.grad is None for p in student.parameters())
    assert len(synthesizer.pool) == 3 * 20


def test_warmup_epochs_run_gwp_loops_batches_without_the_student():
    synthesizer = make_synthesizer(warmup=2, gwp_loops=3, g_loops=1)
    queries: list[bool] = []
    synthesizer.student.register_forward_pre_hook(lambda module, inputs: queries.append(module.training))
    stored: list[torch.Tensor] = []
    original_store = synthesizer.store
    synthesizer.store = lambda images: (stored.append(images), original_store(images))
    assert synthesizer.begin_epoch(0)["synthesis_loops"] == 3.0
    terms = synthesizer.synthesize()
    assert len(stored) == 3 and len(synthesizer.pool) == 60 and queries == [] and "loss_adv" not in terms
    assert set(terms) >= {"loss_bn", "loss_oh", "loss_synthesis", "loss_synthesis_best"}
    assert synthesizer.begin_epoch(2)["synthesis_loops"] == 1.0
    terms = synthesizer.synthesize()
    assert len(stored) == 4 and queries == [False, False] and "loss_adv" in terms
    # Every stored batch is a best iterate in [0, 1] with one image per class per chunk.
    assert all(images.shape == (20, 3, 32, 32) and 0 <= images.min() and images.max() <= 1 for images in stored)


def test_persistent_state_round_trips_and_embeddings_are_not_saved():
    synthesizer = make_synthesizer()
    synthesizer.begin_epoch(0)
    synthesizer.synthesize()
    state = synthesizer.state_dict()
    assert "embeddings" not in state["generator"] and state["recreated_epoch"] == 0
    twin = make_synthesizer()
    twin.load_state_dict(state)
    twin.begin_epoch(0)                               # resumed mid-epoch: no second re-creation
    first, second = synthesizer.synthesize(), twin.synthesize()
    assert torch.equal(synthesizer.pool.images, twin.pool.images)
    assert torch.equal(first["loss_synthesis"], second["loss_synthesis"])


# ----------------------------------------------------------------------------- embeddings (§11.3)
def test_pt_and_npy_files_give_the_same_embeddings_and_the_sha256_is_recorded(tmp_path):
    values = torch.randn(10, 512, dtype=torch.float16)              # [REF] payloads are fp16
    torch.save(values, tmp_path / "le.pt")
    np.save(tmp_path / "le.npy", values.numpy())
    from_pt, described = label_embeddings.load_label_embeddings(str(tmp_path / "le.pt"), 10, nn.Identity(), 0)
    from_npy, _ = label_embeddings.load_label_embeddings(str(tmp_path / "le.npy"), 10, nn.Identity(), 0)
    assert from_pt.dtype == torch.float32 and torch.equal(from_pt, from_npy) and torch.equal(from_pt, values.float())
    assert "10 x 512" in described
    options = NAYERSynthesizer.Options.resolve({"label_embeddings": str(tmp_path / "le.npy")})
    assert options.label_embeddings_sha256 == hashlib.sha256((tmp_path / "le.npy").read_bytes()).hexdigest()
    assert options.as_config()["label_embeddings_sha256"] == options.label_embeddings_sha256
    assert NAYERSynthesizer.deviations(options) == []
    for keyword in ("teacher_fc", "random"):
        options = NAYERSynthesizer.Options.resolve({"label_embeddings": keyword})
        assert options.label_embeddings_sha256 is None
        assert "CLIP ViT-B/32" in NAYERSynthesizer.deviations(options)[0]


def test_teacher_fc_is_the_last_linear_with_c_outputs_and_random_is_seeded():
    teacher = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 6), nn.Linear(6, 10), nn.Linear(10, 3))
    embeddings, described = label_embeddings.load_label_embeddings("teacher_fc", 10, teacher, seed=0)
    assert torch.equal(embeddings, teacher[3].weight) and embeddings.shape == (10, 6) and "'3'" in described
    tiny = TinyCNN(10)
    assert torch.equal(label_embeddings.load_label_embeddings("teacher_fc", 10, tiny, 0)[0], tiny.linear.weight)
    with pytest.raises(UsageError, match="no nn.Linear with 100 outputs"):
        label_embeddings.load_label_embeddings("teacher_fc", 100, tiny, 0)
    first = label_embeddings.load_label_embeddings("random", 10, tiny, seed=3)[0]
    assert first.shape == (10, 512)
    assert torch.equal(first, label_embeddings.load_label_embeddings("random", 10, tiny, seed=3)[0])
    assert not torch.equal(first, label_embeddings.load_label_embeddings("random", 10, tiny, seed=4)[0])
    # The synthesizer's generator takes its input width from the source.
    assert make_synthesizer().image_generator.embedding_dim == 32           # TinyCNN's fc: 32 wide
    assert make_synthesizer(label_embeddings="random").image_generator.embedding_dim == 512


@pytest.mark.parametrize("name, content, expected", [
    ("rows.pt", torch.randn(9, 8), "has 9 rows but the dataset has 10 classes"),
    ("flat.npy", np.zeros(8, np.float32), "has shape (8,), expected 2-D"),
    ("nan.pt", torch.full((10, 8), float("nan")), "non-finite"),
    ("dict.pt", {"weight": torch.zeros(10, 8)}, "holds a dict, not a tensor"),
    ("objects.npy", np.array([{"a": 1}] * 10, dtype=object), "cannot be read as a .npy array"),
    ("text.npy", np.array([["a"] * 8] * 10), "not real numbers"),
    ("corrupt.pt", b"\x00garbage", "cannot be read as a tensor"),
    ("embeddings.txt", b"1 2 3", "unknown extension '.txt'"),
])
def test_bad_embedding_files_are_refused_in_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        torch.save(content, path)
    with pytest.raises(UsageError) as refused:
        NAYERSynthesizer.Options.resolve({"label_embeddings": str(path)}, num_classes=10)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_option_ranges_are_checked():
    NAYERSynthesizer.Options.resolve({}, num_classes=10)
    for key in ("g_loops", "gwp_loops", "g_life", "le_hidden"):
        with pytest.raises(UsageError, match=f"--{key} must be positive, got 0"):
            NAYERSynthesizer.Options.resolve({key: 0}, num_classes=10)
    with pytest.raises(UsageError, match="--le_hidden must be an int, got 2.5"):
        NAYERSynthesizer.Options.resolve({"le_hidden": 2.5}, num_classes=10)
    with pytest.raises(UsageError, match="pass e.g. 400"):
        NAYERSynthesizer.Options.resolve({"synthesis_batch_size": 410}, num_classes=100)


def test_cifar100_defaults_take_40_generator_steps():
    parser = datafree_kd.build_parser()
    args = ["--method", "nayer", "--teacher", "wrn40_2", "--student", "wrn16_1"]
    cifar10 = datafree_kd.resolve_options(parser.parse_args(args))
    cifar100 = datafree_kd.resolve_options(parser.parse_args([*args, "--dataset", "cifar100"]))
    assert (cifar10["g_steps"], cifar100["g_steps"]) == (30, 40)
    assert cifar10["label_embeddings"] == "teacher_fc" and cifar10["nayer_ref_student_mode"] is False
    assert (cifar10["epochs"], cifar10["synthesis_batch_size"], cifar10["batch_size"]) == (220, 400, 512)


def test_driver_level_options_take_nayers_published_values():
    """warmup 20, eta_min 2e-4, bn_mmt 0.9 (§11.8) are in DEFAULTS and must win over the fields' 0s."""
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(
        ["--method", "nayer", "--teacher", "wrn40_2", "--student", "wrn16_1"]))
    assert (options["warmup"], options["eta_min"], options["bn_mmt"]) == (20, 2e-4, 0.9)


# ----------------------------------------------------------------------------- end to end
def test_resume_across_the_warmup_boundary_equals_an_uninterrupted_run(tmp_path, cifar10_root, tiny_teacher):
    """Stopped after every round / KD step (warm-up epoch 0, then KD epochs 1 and 2) and resumed
    each time, the run ends with the same student, bit for bit; config.yaml holds the file's SHA-256."""
    embeddings = tmp_path / "le.pt"
    torch.save(torch.randn(10, 24), embeddings)
    base = ["--method", "nayer", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
            "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--device", "cpu",
            "--no_progress", "--batch_size", "8", "--synthesis_batch_size", "10", "--epochs", "3", "--warmup", "1",
            "--ep_steps", "4", "--kd_steps", "2", "--g_steps", "2", "--g_loops", "1", "--gwp_loops", "2",
            "--g_life", "3", "--ngf", "4", "--le_hidden", "16", "--label_embeddings", str(embeddings)]
    full, pieces = tmp_path / "full", tmp_path / "pieces"
    datafree_kd.main([*base, "--save_dir", str(full)])
    result = datafree_kd.main([*base, "--save_dir", str(pieces), "--max_minutes", "1e-9"])
    positions = []
    while result["stopped"]:
        positions.append(result["position"])
        result = datafree_kd.main([*base, "--save_dir", str(pieces), "--max_minutes", "1e-9", "--resume"])
        assert len(positions) < 20
    # Stopped inside the warm-up epoch (between its two synthesis rounds), then in each KD epoch.
    assert positions[0] == {"epoch": 0, "round": 1, "kd_in_round": 0, "kd_step": 0}
    assert {position["epoch"] for position in positions} == {0, 1, 2}
    expected = torch.load(full / "last.pth", weights_only=False)["state_dict"]
    resumed = torch.load(pieces / "last.pth", weights_only=False)["state_dict"]
    assert all(torch.equal(value, resumed[key]) for key, value in expected.items())
    config = yaml.safe_load((full / "config.yaml").read_text())
    assert config["label_embeddings_sha256"] == hashlib.sha256(embeddings.read_bytes()).hexdigest()
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["synthesis_loops"] for r in records] == [2.0, 1.0, 1.0]
    assert [r["generator_recreated"] for r in records] == [1.0, 1.0, 0.0]     # (e − 1) % 3 == 0 or e % 3 == 0
    assert "loss_adv" in records[-1]


def test_the_pool_flip_is_off_on_tiny_imagenet_and_imagenet_as_in_the_reference():
    """§18.6: at 64 and 224 px the reference crops its pool images without flipping them."""
    for dataset, flip in (("cifar10", "dataset"), ("cifar100", "dataset"), ("tiny_imagenet", "off"), ("imagenet", "off")):
        assert NAYERSynthesizer.Options.resolve({}, dataset=dataset).pool_flip == flip, dataset
    assert make_synthesizer().flip_probability == 0.5
    synthesizer = make_synthesizer(pool_flip="off")
    assert synthesizer.flip_probability == 0.0
    # with the crop's padding 0 the augmentation is then the identity: no row comes back mirrored
    synthesizer.setup = dataclasses.replace(synthesizer.setup, pool_padding=0)
    images = torch.rand(16, 3, 32, 32)
    assert torch.equal(synthesizer.pool_augment(images), images)
