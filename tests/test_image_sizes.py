"""Generators at any image size (METHODS.md §18.6, §19.3) and memory that scales (§21.3).

Pins the parameter counts of the 64-px and 224-px generators at their published configurations,
checks forwards at 64 and 224 px (small widths and batches, CPU), the one-line refusals of sizes a
body cannot reach, the start-up budget line on hand-computed numbers, that a pool kept in host
memory gives exactly the batches of the device pool, and that the driver's batch check uses the
real image size.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn as nn

import datafree_kd
import registry
from datafree.errors import UsageError
from datafree.models import (CurriculumGenerator, GeneratorS, ImageSizeError, LargeGenerator, NoisyLayerGenerator,
                             ReferenceGenerator, SpatialLatentGenerator, fast_generator)
from datafree.models.generators import MAX_START_SIZE, body_for
from datafree.synthesis import budget
from datafree.synthesis.budget import Store, budget_line, format_bytes, plan_memory, pool_on_host
from datafree.synthesis.cmi import CMISynthesizer
from datafree.synthesis.fast import FastSynthesizer
from datafree.synthesis.nayer import NAYERSynthesizer
from datafree.synthesis.pool import ImagePool
from test_synthesis_pooled import capture_stores, make_setup, round_trip


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def setup_at(size: int, seed: int = 0, **changes: Any):
    """The pooled suites' tiny CPU setup (any-size teacher: global average pooling) at ``size`` px."""
    return dataclasses.replace(make_setup(seed), image_size=size, **changes)


# ----------------------------------------------------------------------------- generators
def test_published_generator_sizes_at_64_and_224_px() -> None:
    """§18.6: G-Cu d 3, nz 1024 at 64 px; §19.3: Fast's spatial-latent DeepGenerator (nz 256, ngf 64, without
    the reference's unused Linear); §19.3: NAYER's NLDeepGenerator (ngf 64, le_emb_size 256, D 512, 1000
    classes, the reference's default batch 200 = one noisy layer); G-S's Linear on the same deep body."""
    assert count_parameters(CurriculumGenerator(nz=1024, ngf=64, depth=3, img_size=64)) == 35_139_139
    deep = SpatialLatentGenerator(nz=256, ngf=64, img_size=224)
    # convs 256→128, 128→128, 128→64, 64→64, 64→64 (no bias), five BNs, conv 64→3 with bias
    assert count_parameters(deep) == 294_912 + 147_456 + 73_728 + 2 * 36_864 + 2 * (256 + 128) + 128 + 1_731
    assert count_parameters(deep) == 592_451
    assert deep.latent_shape == (256, 14, 14)
    nayer = NoisyLayerGenerator(torch.zeros(1000, 512), hidden=256, ngf=64, img_size=224, batch_size=200)
    # BN1d(512) + one noisy layer 512→256 + Linear(256 → 128·14·14) + the deep body from 128 channels
    assert count_parameters(nayer) == 1_024 + 131_328 + 6_447_616 + 444_995 == 7_024_963
    assert count_parameters(GeneratorS(nz=256, ngf=64, img_size=224)) == 6_447_616 + 444_995
    # 64 px keeps the published shallow bodies, start map 16 (§18.6)
    assert count_parameters(GeneratorS(nz=256, ngf=64, img_size=64)) == 257 * 128 * 16 * 16 + 223_555


def test_the_body_follows_the_image_size_only() -> None:
    assert [body_for(size) for size in (28, 32, 64, 96, 224)] == ["shallow", "shallow", "shallow", "deep", "deep"]
    deep = SpatialLatentGenerator(nz=8, ngf=4, img_size=224)
    upsamplings = [module for module in deep.modules() if isinstance(module, nn.Upsample)]
    assert len(upsamplings) == 4 and isinstance(deep.conv_blocks[0], nn.Conv2d)   # no BN before the first conv
    assert isinstance(fast_generator(8, 4, 32), GeneratorS)
    assert isinstance(fast_generator(8, 4, 224), SpatialLatentGenerator)
    assert GeneratorS(nz=8, ngf=4, img_size=64).start_size == 16 == MAX_START_SIZE
    assert GeneratorS(nz=8, ngf=4, img_size=224).start_size == 14


@pytest.mark.parametrize("size, channels", [(64, 3), (64, 1), (224, 3)])
def test_every_generator_makes_images_of_the_requested_size(size: int, channels: int) -> None:
    batch = 2
    generators = [GeneratorS(nz=8, ngf=4, img_size=size, out_channels=channels),
                  fast_generator(8, 4, size, out_channels=channels),
                  CurriculumGenerator(nz=8, ngf=4, depth=3 if size == 64 else 4, img_size=size, out_channels=channels)]
    if size == 64:   # the two-upsampling bodies stop at 64 px
        generators += [LargeGenerator(nz=8, ngf=4, img_size=size, out_channels=channels),
                       ReferenceGenerator(nz=8, ngf=4, img_size=size, out_channels=channels)]
    for generator in generators:
        images = generator(torch.randn(batch, *generator.latent_shape))
        assert images.shape == (batch, channels, size, size), type(generator).__name__
    nayer = NoisyLayerGenerator(torch.randn(2, 6), hidden=8, ngf=4, img_size=size, batch_size=batch,
                                out_channels=channels)
    assert nayer(torch.tensor([0, 1])).shape == (batch, channels, size, size)


@pytest.mark.parametrize("build, fix", [
    (lambda: LargeGenerator(img_size=224), "deep-body generator"),
    (lambda: ReferenceGenerator(img_size=128), "deep-body generator"),
    (lambda: CurriculumGenerator(depth=2, img_size=224), "--depth 4"),
    (lambda: CurriculumGenerator(depth=3, img_size=36), "multiple of 8"),
    (lambda: GeneratorS(img_size=200), "multiple of 16"),
    (lambda: SpatialLatentGenerator(img_size=512), "up to 256 px"),
    (lambda: NoisyLayerGenerator(torch.zeros(2, 4), img_size=90), "multiple of 16"),
])
def test_unreachable_sizes_are_refused_in_one_line(build, fix: str) -> None:
    with pytest.raises(ImageSizeError) as caught:
        build()
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert fix in str(caught.value) and "\n" not in str(caught.value)


def fast_options(**overrides: Any) -> FastSynthesizer.Options:
    return FastSynthesizer.Options.resolve({"synthesis_batch_size": 2, "batch_size": 2, "g_steps": 1, "nz": 4,
                                            "ngf": 4, "warmup": 0, "epochs": 2, **overrides})


def test_fast_at_224_px_uses_a_spatial_latent_and_refuses_the_g_s_reset() -> None:
    synthesizer = FastSynthesizer(setup_at(224), fast_options(reset_l0_epoch=-1))
    stored = capture_stores(synthesizer)
    synthesizer.synthesize()
    assert isinstance(synthesizer.meta_generator, SpatialLatentGenerator)
    assert stored[0].shape == (4, 3, 224, 224) and synthesizer.sample().shape == (6, 3, 224, 224)
    with pytest.raises(UsageError, match="--reset_l0_epoch -1"):
        FastSynthesizer(setup_at(224), fast_options(reset_l0_epoch=1))
    FastSynthesizer(setup_at(224), fast_options(reset_l0_epoch=5))   # after the last epoch: never fires


def test_nayer_at_224_px_decodes_with_the_deep_body() -> None:
    options = NAYERSynthesizer.Options.resolve({"synthesis_batch_size": 10, "batch_size": 4, "g_steps": 1,
                                                "ngf": 4, "le_hidden": 8, "warmup": 0, "g_loops": 1,
                                                "label_embeddings": "random"}, num_classes=10)
    synthesizer = NAYERSynthesizer(setup_at(224, synthesis_batch_size=10), options)
    synthesizer.begin_epoch(0)
    synthesizer.synthesize()
    assert synthesizer.image_generator.decoder.start_size == 14
    assert synthesizer.pool.images.shape == (10, 3, 224, 224)


# ----------------------------------------------------------------------------- budget
def test_budget_line_on_a_hand_computed_case() -> None:
    pool = Store("pool", 140_000, (3, 224, 224), torch.uint8, unit="images", growing=True, spillable=True)
    bank = Store("feature bank", 40_960, (1_024,), torch.float32)
    assert pool.nbytes == 140_000 * 150_528 == 21_073_920_000 and bank.nbytes == 167_772_160
    assert budget_line([pool], True, torch.device("cuda:0"), 12_000_000_000) == (
        "memory: pool up to 140,000 images x 3x224x224 uint8 = 21.1 GB, on host (in last.pth too, device budget "
        "12.0 GB)")
    assert budget_line([pool, bank], False, torch.device("cpu"), None, per_rank=True) == (
        "memory: pool up to 140,000 images x 3x224x224 uint8 = 21.1 GB, on cpu; feature bank 40,960 rows x "
        "1,024 float32 = 168 MB, on cpu (in last.pth too, per rank)")
    assert [format_bytes(count) for count in (999, 1_000, 2_457_600, 157_286_400)] == [
        "999 B", "1.00 kB", "2.46 MB", "157 MB"]
    # auto: the device while the stores fit the budget; device / host force it; no budget (CPU): device
    assert pool_on_host("auto", [pool, bank], 21_241_692_160) is False
    assert pool_on_host("auto", [pool, bank], 21_241_692_159) is True
    assert pool_on_host("auto", [pool], None) is False
    assert pool_on_host("device", [pool], 1) is False and pool_on_host("host", [pool], None) is True


def test_stores_are_sized_at_their_final_size_from_the_real_image_size() -> None:
    options = CMISynthesizer.Options.resolve({"synthesis_batch_size": 4, "epochs": 3, "ep_steps": 40,
                                              "kd_steps": 20, "g_steps": 1, "nz": 8, "ngf": 4, "bank_size": 10,
                                              "n_neg": 6, "head_dim": 8})
    synthesizer = CMISynthesizer(setup_at(64), options)
    pool, bank = synthesizer.memory_stores()
    # 3 epochs × 2 rounds × 4 images of 3×64×64 bytes; the bank: 10 rows of [hl ‖ hg] = 2 × (4 + 8) floats
    assert (pool.rows, pool.row_shape, pool.nbytes) == (24, (3, 64, 64), 24 * 12_288)
    assert (bank.rows, bank.row_shape, bank.nbytes) == (10, (24,), 960)
    assert plan_memory(synthesizer, "auto") == ("memory: pool up to 24 images x 3x64x64 uint8 = 295 kB, on cpu; "
                                                "feature bank 10 rows x 24 float32 = 960 B, on cpu (in last.pth too)")
    assert not synthesizer.pool.on_host
    nayer_options = NAYERSynthesizer.Options.resolve({"synthesis_batch_size": 10, "epochs": 5, "warmup": 2,
                                                      "gwp_loops": 3, "g_loops": 2, "ep_steps": 40, "kd_steps": 40,
                                                      "ngf": 4, "le_hidden": 8, "label_embeddings": "random"})
    nayer = NAYERSynthesizer(setup_at(32, synthesis_batch_size=10), nayer_options)
    assert nayer.memory_stores()[0].rows == (2 * 3 + 3 * 2) * 10


def test_auto_moves_the_pool_to_the_host_when_the_stores_exceed_the_device_budget(monkeypatch) -> None:
    options = CMISynthesizer.Options.resolve({"synthesis_batch_size": 4, "epochs": 3, "ep_steps": 40,
                                              "kd_steps": 20, "g_steps": 1, "nz": 8, "ngf": 4, "bank_size": 10,
                                              "n_neg": 6, "head_dim": 8})
    synthesizer = CMISynthesizer(setup_at(64), options)
    monkeypatch.setattr(budget, "device_budget", lambda device: 100_000)
    line = plan_memory(synthesizer, "auto")
    assert line.startswith("memory: pool up to 24 images x 3x64x64 uint8 = 295 kB, on host; feature bank")
    assert line.endswith("(in last.pth too, device budget 100 kB)")
    assert synthesizer.pool.on_host and synthesizer.pool.storage_device == torch.device("cpu")


# ----------------------------------------------------------------------------- host pool == device pool
def test_a_host_pool_draws_exactly_the_batches_of_a_device_pool() -> None:
    pools = {"device": ImagePool(), "host": ImagePool(on_host=True), "ring": ImagePool(max_size=9),
             "host_ring": ImagePool(max_size=9, on_host=True)}
    generators = {name: torch.Generator().manual_seed(5) for name in pools}
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    drawn: dict[str, list[torch.Tensor]] = {name: [] for name in pools}
    for start in (0, 2, 6):   # a pool smaller than the batch (with replacement), then shuffled passes
        for name, pool in pools.items():
            pool.add(images[start:start + (2 if start == 0 else 4 if start == 2 else 6)])
            drawn[name] += [pool.sample(3, generators[name]) for _ in range(4)]
    for device_name, host_name in (("device", "host"), ("ring", "host_ring")):
        assert all(torch.equal(a, b) for a, b in zip(drawn[device_name], drawn[host_name]))
    restored = ImagePool()   # a host pool's state resumes on the device path, and the other way round
    restored.load_state_dict(round_trip(pools["host"].state_dict()))
    generator = torch.Generator().manual_seed(9)
    twin = torch.Generator().manual_seed(9)
    assert all(torch.equal(restored.sample(4, generator), pools["host"].sample(4, twin)) for _ in range(5))


def test_moving_a_pool_to_the_host_mid_run_changes_no_sample() -> None:
    device_pool, moved = ImagePool(), ImagePool()
    images = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    streams = [torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)]
    for pool, stream in zip((device_pool, moved), streams):
        pool.add(images)
        pool.sample(4, stream)
    moved.move_to_host(reserve=1_000)
    assert moved.on_host and moved.capacity == 10
    for _ in range(4):
        assert torch.equal(device_pool.sample(4, streams[0]), moved.sample(4, streams[1]))
    fresh = ImagePool()
    fresh.move_to_host(reserve=50)
    fresh.add(images[:2])
    assert fresh.capacity == 50   # the first allocation takes the projected final size
    resumed = ImagePool()
    resumed.move_to_host(reserve=50)
    resumed.load_state_dict(moved.state_dict())
    resumed.add(images[:1])
    assert resumed.capacity == 50 and len(resumed) == 11   # a resumed host pool grows once, to its final size


def test_cmi_with_a_host_pool_trains_exactly_as_with_a_device_pool() -> None:
    options = CMISynthesizer.Options.resolve({"synthesis_batch_size": 4, "g_steps": 2, "nz": 8, "ngf": 4,
                                              "bank_size": 10, "n_neg": 6, "head_dim": 8})
    runs = []
    for mode in ("device", "host"):
        synthesizer = CMISynthesizer(make_setup(), options)
        plan_memory(synthesizer, mode)
        assert synthesizer.pool.on_host == (mode == "host")
        samples = []
        for _ in range(2):
            synthesizer.synthesize()
            samples += [synthesizer.sample() for _ in range(3)]
        runs.append(samples)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned staging, asynchronous copies)")
def test_a_pinned_host_pool_feeds_cuda_the_batches_of_a_cuda_pool() -> None:
    device = torch.device("cuda")
    pools = (ImagePool(device), ImagePool(device, on_host=True))
    streams = [torch.Generator(device=device).manual_seed(3) for _ in pools]
    images = torch.rand(40, 3, 16, 16, device=device)
    for pool in pools:
        pool.add(images)
    assert pools[1].pinned
    for _ in range(25):
        first, second = (pool.sample(7, stream) for pool, stream in zip(pools, streams))
        assert second.device.type == "cuda" and torch.equal(first, second)


# ----------------------------------------------------------------------------- the driver
def test_check_memory_uses_the_real_image_size(monkeypatch) -> None:
    monkeypatch.setitem(registry.DATASETS, "fake64", dataclasses.replace(registry.DATASETS["cifar10"],
                                                                         name="fake64", image_size=64))
    monkeypatch.setattr(datafree_kd, "memory_bytes", lambda device: 10_000_000)
    options = {"batch_size": 256, "synthesis_batch_size": 128, "dataset": "fake64"}
    with pytest.raises(UsageError, match="a batch of 256 images needs 0.0117 GiB") as caught:
        datafree_kd.check_memory(options, torch.device("cpu"), world_size=1)   # 256·3·64·64·4 = 12,582,912 B
    assert "\n" not in str(caught.value)
    datafree_kd.check_memory({**options, "dataset": "cifar10"}, torch.device("cpu"), world_size=1)  # 3,145,728 B
    datafree_kd.check_memory(options, torch.device("cpu"), world_size=2)   # 128 images per rank


def test_the_driver_reports_the_stores_and_places_the_pool(tmp_path, cifar10_root, tiny_teacher, capsys) -> None:
    from datafree.run.distributed import DistributedContext
    from datafree.run.numerics import Numerics

    for mode in ("auto", "host"):
        args = datafree_kd.build_parser().parse_args([
            "--method", "cmi", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
            "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--device", "cpu",
            "--batch_size", "8", "--epochs", "3", "--ep_steps", "4", "--kd_steps", "2", "--g_steps", "1", "--ngf", "4",
            "--bank_size", "64", "--n_neg", "16", "--pool_device", mode])
        options = datafree_kd.resolve_options(args)
        teacher = datafree_kd.load_teacher(options, torch.device("cpu"), channels_last=False)
        parts = datafree_kd.build_training(options, teacher, DistributedContext(),
                                           Numerics(torch.device("cpu"), None, False))
        line = capsys.readouterr().out.strip().splitlines()[-1]
        # 3 epochs × 2 rounds × 8 images of 3×32×32 bytes, then the bank
        where = "host" if mode == "host" else "cpu"
        assert line.startswith(f"memory: pool up to 48 images x 3x32x32 uint8 = 147 kB, on {where}; feature bank "
                               "64 rows x "), line
        assert parts.synthesizer.pool.on_host == (mode == "host")
