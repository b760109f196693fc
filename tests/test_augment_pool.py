"""Tests for batched augmentation (METHODS.md §2.1, §4.4, §4.5), the image pool (§3.5) and the
CMI memory bank (§4.5, §7 item 11). CPU only, small tensors."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datafree.augment import (
    _resized_crop_boxes,
    jitter_flip,
    random_crop_flip,
    random_resized_crop_flip,
    to_unit_float,
)
from datafree.synthesis.pool import ImagePool, MemoryBank, quantize_images


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_images(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=_seeded(seed))


# ----------------------------------------------------------------------------- random_crop_flip
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_crop_flip_preserves_shape_and_dtype(dtype: torch.dtype) -> None:
    images = (torch.rand(5, 3, 12, 10, generator=_seeded(0)) * 255).to(dtype)
    output = random_crop_flip(images, padding=3, generator=_seeded(1))
    assert output.shape == images.shape and output.dtype == dtype


def test_flip_only_equals_torch_flip_and_no_op_is_identity() -> None:
    images = (_random_images(6) * 255).to(torch.uint8)
    assert torch.equal(random_crop_flip(images, padding=0, flip_prob=1.0), torch.flip(images, dims=[3]))
    assert torch.equal(random_crop_flip(images, padding=0, flip_prob=0.0), images)


def _matching_offsets(output: torch.Tensor, image: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """Offsets (oy, ox) of the zero-padded ``image`` whose window equals ``output``."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (padding,) * 4)
    return [(top, left) for top in range(2 * padding + 1) for left in range(2 * padding + 1)
            if torch.equal(padded[:, top:top + height, left:left + width], output)]


def test_crop_is_a_window_of_the_zero_padded_image_with_per_sample_offsets() -> None:
    images = _random_images(24, size=10) + 0.1  # strictly positive: padding zeros are recognisable
    output = random_crop_flip(images, padding=4, flip_prob=0.0, generator=_seeded(2))
    offsets = []
    for sample in range(images.shape[0]):
        matches = _matching_offsets(output[sample], images[sample], padding=4)
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 8                     # 81 possible offsets, drawn per sample
    assert {top for top, _ in offsets} != {4} and {left for _, left in offsets} != {4}


def test_crop_then_flip_per_sample() -> None:
    images = _random_images(32, size=8) + 0.1
    output = random_crop_flip(images, padding=2, flip_prob=0.5, generator=_seeded(3))
    flipped = []
    for sample in range(images.shape[0]):
        plain = _matching_offsets(output[sample], images[sample], 2)
        mirrored = _matching_offsets(torch.flip(output[sample], dims=[2]), images[sample], 2)
        assert len(plain) + len(mirrored) == 1
        flipped.append(bool(mirrored))
    assert 4 < sum(flipped) < 28


def test_crop_flip_is_differentiable_and_deterministic() -> None:
    images = _random_images(8).requires_grad_(True)
    output = random_crop_flip(images, padding=4, generator=_seeded(4))
    output.sum().backward()
    assert images.grad is not None
    # Every output pixel inside the image reads one input pixel once: gradient 0 or 1.
    inside = random_crop_flip(torch.ones_like(images), padding=4, generator=_seeded(4))
    assert set(images.grad.unique().tolist()) <= {0.0, 1.0}
    assert images.grad.sum() == inside.sum()
    again = random_crop_flip(images.detach(), padding=4, generator=_seeded(4))
    assert torch.equal(again, output.detach())
    other = random_crop_flip(images.detach(), padding=4, generator=_seeded(5))
    assert not torch.equal(other, again)


# ----------------------------------------------------------------------------- random_resized_crop_flip
def test_resized_crop_full_box_is_identity_and_flip_is_mirror() -> None:
    images = _random_images(4)
    identity = random_resized_crop_flip(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, generator=_seeded(0))
    torch.testing.assert_close(identity, images, atol=1e-5, rtol=0)
    mirrored = random_resized_crop_flip(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=1.0)
    torch.testing.assert_close(mirrored, torch.flip(images, dims=[3]), atol=1e-5, rtol=0)
    # No box fits (area > image) on any attempt: fallback to the whole (square) image.
    fallback = random_resized_crop_flip(images, scale=(2.0, 3.0), flip_prob=0.0, generator=_seeded(1))
    torch.testing.assert_close(fallback, images, atol=1e-5, rtol=0)


def test_resized_crop_equals_bilinear_resize_of_a_box() -> None:
    """scale 1/4, ratio 1 on 16 px: an 8x8 box, bilinearly resized to 16x16 (torchvision semantics)."""
    images = _random_images(6, size=16)
    output = random_resized_crop_flip(images, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip_prob=0.0,
                                      generator=_seeded(6))
    boxes = []
    for sample in range(images.shape[0]):
        matches = []
        for top in range(9):
            for left in range(9):
                box = images[sample:sample + 1, :, top:top + 8, left:left + 8]
                resized = F.interpolate(box, size=(16, 16), mode="bilinear", align_corners=False)[0]
                if torch.allclose(resized, output[sample], atol=1e-5):
                    matches.append((top, left))
        assert len(matches) == 1
        boxes.append(matches[0])
    assert len(set(boxes)) > 1


def test_resized_crop_boxes_follow_scale_and_ratio_and_match_the_output() -> None:
    count = 2000
    top, left, height, width = _resized_crop_boxes(count, 32, 32, (0.25, 1.0), (3 / 4, 4 / 3), 10,
                                                   torch.device("cpu"), _seeded(9))
    assert torch.all(top >= 0) and torch.all(left >= 0)
    assert torch.all(top + height <= 32) and torch.all(left + width <= 32)
    area = height * width / 1024
    assert area.min() >= 0.2 and area.max() <= 1.0 and area.min() < 0.3   # 0.25 up to side rounding
    aspect = width / height
    assert aspect.min() >= 0.7 and aspect.max() <= 1.45
    assert len(set(top.tolist())) > 10 and len(set(left.tolist())) > 10
    # The default-parameter output is exactly "crop that box, bilinear resize" (seeded replay).
    images = _random_images(12, size=32)
    output = random_resized_crop_flip(images, flip_prob=0.0, generator=_seeded(10))
    top, left, height, width = _resized_crop_boxes(12, 32, 32, (0.25, 1.0), (3 / 4, 4 / 3), 10,
                                                   torch.device("cpu"), _seeded(10))
    for sample in range(12):
        t, l, h, w = (int(value[sample]) for value in (top, left, height, width))
        expected = F.interpolate(images[sample:sample + 1, :, t:t + h, l:l + w], size=(32, 32), mode="bilinear",
                                 align_corners=False)[0]
        torch.testing.assert_close(output[sample], expected, atol=1e-5, rtol=0)


def test_resized_crop_varies_per_sample_flows_gradients_and_is_deterministic() -> None:
    single = _random_images(1, size=16)
    images = single.expand(16, -1, -1, -1).clone().requires_grad_(True)
    output = random_resized_crop_flip(images, generator=_seeded(7))
    assert output.shape == images.shape and output.dtype == images.dtype
    distinct = {tuple(torch.round(sample.flatten()[:20] * 1e4).tolist()) for sample in output.detach()}
    assert len(distinct) > 8
    (output * torch.randn(output.shape, generator=_seeded(8))).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    again = random_resized_crop_flip(images.detach(), generator=_seeded(7))
    assert torch.equal(again, output.detach())
    with pytest.raises(TypeError):
        random_resized_crop_flip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


# ----------------------------------------------------------------------------- jitter_flip
def _find_roll(output: torch.Tensor, images: torch.Tensor, flipped: bool, max_shift: int) -> list[tuple[int, int]]:
    matches = []
    for shift_y in range(-max_shift, max_shift + 1):
        for shift_x in range(-max_shift, max_shift + 1):
            expected = torch.roll(images, shifts=(shift_y, shift_x), dims=(2, 3))
            if flipped:
                expected = torch.flip(expected, dims=[3])
            if torch.equal(expected, output):
                matches.append((shift_y, shift_x))
    return matches


def test_jitter_is_one_roll_for_the_whole_batch_then_batch_flip() -> None:
    images = _random_images(5, size=12)
    shifts = []
    for seed in range(12):
        output = jitter_flip(images, max_shift=4, flip_prob=0.0, generator=_seeded(seed))
        matches = _find_roll(output, images, flipped=False, max_shift=4)
        assert len(matches) == 1
        shifts.append(matches[0])
        flipped = jitter_flip(images, max_shift=4, flip_prob=1.0, generator=_seeded(seed))
        assert _find_roll(flipped, images, flipped=True, max_shift=4) == matches  # same draw order
    assert len(set(shifts)) > 3
    assert torch.equal(jitter_flip(images, max_shift=0, flip_prob=0.0), images)
    outcomes = {torch.equal(jitter_flip(images, max_shift=0, generator=_seeded(seed)), images) for seed in range(20)}
    assert outcomes == {True, False}  # flip_prob 0.5: both happen


def test_jitter_is_differentiable() -> None:
    images = _random_images(2, size=8).requires_grad_(True)
    jitter_flip(images, generator=_seeded(0)).pow(2).sum().backward()
    torch.testing.assert_close(images.grad, 2 * images.detach())  # a permutation of pixels


def test_to_unit_float() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    torch.testing.assert_close(to_unit_float(images), torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 1, 3))
    with pytest.raises(TypeError):
        to_unit_float(images.float())


# ----------------------------------------------------------------------------- ImagePool
def _constant_images(values: list[float]) -> torch.Tensor:
    """Image i is the constant values[i] (shape (N, 3, 4, 4))."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


def _ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].long().tolist()


def test_quantisation_clamps_scales_and_truncates() -> None:
    values = [-0.5, 0.999 / 255, 1.999 / 255, 0.5, 254.9 / 255, 1.0, 1.5]
    expected = [0, 0, 1, 127, 254, 255, 255]
    assert _ids(quantize_images(_constant_images(values))) == expected
    pool = ImagePool()
    pool.add(_constant_images(values))
    assert pool.images.dtype == torch.uint8 and _ids(pool.images) == expected


def test_pool_grows_by_doubling_and_keeps_every_image() -> None:
    pool = ImagePool()
    capacities = set()
    for step in range(40):
        pool.add(_constant_images([(step + 0.5) / 255] * 3))
        capacities.add(pool.capacity)
        assert len(pool) == 3 * (step + 1) and pool.capacity >= len(pool)
    assert pool.capacity < 2 * len(pool) + 3
    assert len(capacities) <= 7                      # 3, 6, 12, 24, 48, 96, 192: amortised doubling
    assert _ids(pool.images) == [step for step in range(40) for _ in range(3)]
    with pytest.raises(ValueError):
        pool.add(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError):
        pool.add(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_pool_sampling_covers_every_image_once_per_pass() -> None:
    pool = ImagePool()
    pool.add(_constant_images([(index + 0.5) / 255 for index in range(10)]))
    generator = _seeded(0)
    drawn = [index for _ in range(5) for index in _ids(pool.sample(4, generator))]  # 20 draws = 2 passes
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert drawn[:10] != list(range(10)) and drawn[:10] != drawn[10:]
    # After adding, the next batch starts a new pass over the grown pool.
    pool.add(_constant_images([(index + 0.5) / 255 for index in range(10, 15)]))
    drawn = [index for _ in range(5) for index in _ids(pool.sample(3, generator))]
    assert sorted(drawn) == list(range(15))
    with pytest.raises(RuntimeError):
        ImagePool().sample(2)


def test_small_pool_samples_with_replacement_and_batches_are_never_short() -> None:
    pool = ImagePool()
    pool.add(_constant_images([(index + 0.5) / 255 for index in range(3)]))
    batch = pool.sample(8, _seeded(1))
    assert batch.shape == (8, 3, 4, 4) and set(_ids(batch)) <= {0, 1, 2}
    pool.add(_constant_images([(index + 0.5) / 255 for index in range(3, 7)]))
    sizes = [pool.sample(5, _seeded(step)).shape[0] for step in range(4)]
    assert sizes == [5, 5, 5, 5]


def test_bounded_pool_is_a_ring_of_the_newest_images() -> None:
    pool = ImagePool(max_size=10)
    for start in (0, 4, 8):
        pool.add(_constant_images([(index + 0.5) / 255 for index in range(start, start + 4)]))
    assert len(pool) == 10 and pool.capacity == 10 and pool.total_added == 12
    assert sorted(_ids(pool.images)) == list(range(2, 12))
    pool.add(_constant_images([(index + 0.5) / 255 for index in range(100, 125)]))
    assert sorted(_ids(pool.images)) == list(range(115, 125))


def test_pool_state_round_trip_gives_identical_future_samples() -> None:
    pool = ImagePool()
    pool.add(_random_images(13, size=4))
    generator = _seeded(3)
    for _ in range(2):
        pool.sample(5, generator)
    buffer = io.BytesIO()
    torch.save({"pool": pool.state_dict(), "generator": generator.get_state()}, buffer)
    future = [pool.sample(5, generator) for _ in range(6)]

    buffer.seek(0)
    saved = torch.load(buffer)
    restored = ImagePool()
    restored.load_state_dict(saved["pool"])
    restored_generator = torch.Generator()
    restored_generator.set_state(saved["generator"])
    replay = [restored.sample(5, restored_generator) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(future, replay))


def test_pool_png_export_is_lossless(tmp_path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    pool = ImagePool()
    pool.add(_random_images(3, size=4))
    assert pool.export_png(tmp_path / "png") == 3
    names = sorted(path.name for path in (tmp_path / "png").iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    first = np.array(image_module.open(tmp_path / "png" / names[0]))
    assert torch.equal(torch.from_numpy(first).permute(2, 0, 1), pool.images[0])


# ----------------------------------------------------------------------------- MemoryBank
def _rows(start: int, stop: int, dim: int = 3) -> torch.Tensor:
    """Row r holds the value r in every column."""
    return torch.arange(start, stop, dtype=torch.float32)[:, None].expand(-1, dim).clone()


def _row_ids(rows: torch.Tensor) -> list[int]:
    return rows[:, 0].long().tolist()


def test_bank_full_exactly_at_capacity_still_samples_k_rows() -> None:
    """The [REF] bug: pointer back at 0 after exactly ``capacity`` rows returned zero rows."""
    for batches in ([5, 5], [4, 4, 2], [10]):
        bank = MemoryBank(capacity=10, dim=3)
        written = 0
        for size in batches:
            bank.add(_rows(written, written + size))
            written += size
        assert bank.pointer == 0 and len(bank) == 10
        sample = bank.get(6, _seeded(0))
        assert sample.shape == (6, 3) and len(set(_row_ids(sample))) == 6
        assert sorted(_row_ids(bank.get(50, _seeded(1)))) == list(range(10))


def test_bank_batch_crossing_the_end_wraps() -> None:
    bank = MemoryBank(capacity=10, dim=3)
    bank.add(_rows(0, 7))
    bank.add(_rows(7, 12))                             # 7, 8, 9 at the end; 10, 11 wrap to rows 0, 1
    assert _row_ids(bank.features) == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert bank.pointer == 2 and bank.total_written == 12 and len(bank) == 10
    bank.add(_rows(12, 37))                            # larger than the buffer: newest 10 kept, in ring order
    assert _row_ids(bank.features) == [30, 31, 32, 33, 34, 35, 36, 27, 28, 29]
    assert bank.pointer == 7 and bank.total_written == 37


def test_bank_samples_distinct_rows_from_the_filled_part_only() -> None:
    bank = MemoryBank(capacity=16, dim=2)
    assert bank.get(4).shape == (0, 2)
    bank.add(_rows(100, 103, dim=2))
    sample = bank.get(8, _seeded(0))
    assert sorted(_row_ids(sample)) == [100, 101, 102]   # k > filled: every filled row once, never a zero row
    seen = {row for seed in range(40) for row in _row_ids(bank.get(1, _seeded(seed)))}
    assert seen == {100, 101, 102}
    with pytest.raises(ValueError):
        bank.add(torch.zeros(2, 3))


def test_bank_state_round_trip() -> None:
    bank = MemoryBank(capacity=8, dim=4)
    bank.add(torch.randn(5, 4, generator=_seeded(0)))
    bank.add(torch.randn(6, 4, generator=_seeded(1)))
    restored = MemoryBank(capacity=8, dim=4)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.features, bank.features)
    assert (restored.pointer, restored.total_written) == (bank.pointer, bank.total_written)
    assert torch.equal(restored.get(5, _seeded(2)), bank.get(5, _seeded(2)))
    extra = torch.randn(3, 4, generator=_seeded(3))
    bank.add(extra)
    restored.add(extra)
    assert torch.equal(restored.features, bank.features)
    partial = MemoryBank(capacity=8, dim=4)
    partial.add(torch.ones(3, 4))
    again = MemoryBank(capacity=8, dim=4)
    again.load_state_dict(partial.state_dict())
    assert len(again) == 3 and torch.equal(again.get(10, _seeded(0)), partial.get(10, _seeded(0)))
    with pytest.raises(ValueError):
        MemoryBank(capacity=9, dim=4).load_state_dict(bank.state_dict())
