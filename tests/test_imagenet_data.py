"""Tiny-ImageNet and ImageNet on disk (docs/METHODS.md §18.1, §18.3, §19.1): the dataset entries, the
two folder readers, the decoded-split cache, every malformed tree, --download, and the test split kept
in host memory. Fixture trees are written by ``imagenet_fixtures`` (3 classes; the entries' class counts
are patched to 3 while a test runs)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datafree_kd
import registry
import train_scratch
from datafree import folders
from datafree.data import DATASETS, DatasetError, cache_path, download, evaluation_loader, load_split
from datafree.run.cli import RUNTIME_KEYS, run_cli
from datafree.run.evaluation import evaluate
from datafree.run.numerics import Numerics
from imagenet_fixtures import (IMAGENET_BREAKAGES, TINY_BREAKAGES, break_imagefolder, break_tiny, tiny_val_labels,
                               write_imagefolder, write_tiny_imagenet)
from tiny_models import TinyCNN

TINY_LAYOUT = "tiny-imagenet-200/{wnids.txt,train/<wnid>/images/*.JPEG,val/images/*.JPEG,val/val_annotations.txt}"
IMAGENET_LAYOUT = "imagenet/val/<wnid>/*.JPEG"


def pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


# ----------------------------------------------------------------------------- entries
def test_entries_hold_the_published_constants():
    tiny, imagenet = DATASETS["tiny_imagenet"], DATASETS["imagenet"]
    assert (tiny.num_classes, tiny.image_shape, tiny.mean, tiny.std) == (200, (3, 64, 64), (0.5,) * 3, (0.5,) * 3)
    assert (tiny.train_padding, tiny.train_flip, tiny.pool_padding, tiny.pool_flip) == (4, True, 4, True)
    assert tiny.test_on_device and tiny.eval_resize == 0 and tiny.reader == "tiny_folder"
    assert tiny.url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert tiny.archive_md5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert (imagenet.num_classes, imagenet.image_shape, imagenet.eval_resize) == (1000, (3, 224, 224), 256)
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    assert not imagenet.test_on_device and not imagenet.url and imagenet.train_files == ()
    assert imagenet.reader == "imagefolder" and imagenet.scratch_refusal
    for name in ("cifar10", "cifar100", "mnist"):   # the earlier entries keep their behaviour
        info = DATASETS[name]
        assert info.test_on_device and info.eval_resize == 0 and not info.scratch_refusal and info.url


def test_tiny_imagenet_teacher_recipe_is_the_released_teachers_one(tmp_path):
    options = train_scratch.resolve_options(train_scratch.build_parser().parse_args(
        ["--model", "resnet18", "--dataset", "tiny_imagenet", "--save_dir", str(tmp_path / "run")]))
    assert (options["optimizer"], options["lr"], options["batch_size"], options["weight_decay"], options["momentum"],
            options["epochs"], options["milestones"], options["gamma"]) == ("sgd", 0.2, 128, 1e-4, 0.9, 200,
                                                                           "120,150,180", 0.1)


# ----------------------------------------------------------------------------- Tiny-ImageNet reader
def test_tiny_reader_shapes_labels_and_sorted_class_order(tmp_path, three_classes):
    root = write_tiny_imagenet(tmp_path / "data")
    folder = root / "tiny-imagenet-200"
    train_images, train_labels = load_split(root, "tiny_imagenet", "train", cache_dir=tmp_path / "cache",
                                            progress=False)
    assert train_images.dtype == torch.uint8 and train_images.shape == (12, 3, 64, 64)
    # wnids.txt says n03, n01, n02; the index is the sorted position, and classes come in sorted order.
    assert train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    first_n03 = folder / "train" / "n03" / "images" / "n03_0.JPEG"
    assert torch.equal(train_images[8], torch.from_numpy(pillow_rgb(first_n03)))
    test_images, test_labels = load_split(root, "tiny_imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    names = sorted(path.name for path in (folder / "val" / "images").iterdir())
    labels = tiny_val_labels(root)
    assert test_images.shape == (6, 3, 64, 64) and test_labels.tolist() == [labels[name] for name in names]
    assert test_labels.tolist() == [0, 2, 1, 0, 2, 1]   # n01, n03, n02, ...
    expected = np.stack([pillow_rgb(folder / "val" / "images" / name) for name in names])
    assert torch.equal(test_images, torch.from_numpy(expected))   # the decode is Pillow's, bit for bit
    grey = test_images[names.index("val_1.JPEG")]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_decoded_split_is_cached_reused_and_rebuilt_when_a_source_changes(tmp_path, three_classes, monkeypatch,
                                                                          capsys):
    root = write_tiny_imagenet(tmp_path / "data")
    first = load_split(root, "tiny_imagenet", "test", progress=False)
    cache = cache_path(DATASETS["tiny_imagenet"], root, "test")
    assert cache == root / "datafree_cache" / "tiny_imagenet-test-64px.pt" and cache.is_file()
    assert [path.name for path in cache.parent.iterdir()] == [cache.name]   # no temporary left
    decoded = []
    real_decode = folders.decode
    monkeypatch.setattr(folders, "decode", lambda path, *args: decoded.append(path) or real_decode(path, *args))
    again = load_split(root, "tiny_imagenet", "test", progress=False)
    assert decoded == [] and torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    changed = root / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    Image.fromarray(np.full((64, 64, 3), 77, np.uint8)).save(changed, format="JPEG")
    os.utime(changed, ns=(1, 1))
    capsys.readouterr()
    rebuilt = load_split(root, "tiny_imagenet", "test", progress=False)
    assert len(decoded) == 6 and "stale" in capsys.readouterr().err
    assert torch.equal(rebuilt[0][2], torch.from_numpy(pillow_rgb(changed))) and not torch.equal(rebuilt[0], first[0])
    decoded.clear()
    assert torch.equal(load_split(root, "tiny_imagenet", "test", progress=False)[0], rebuilt[0]) and decoded == []
    # A relabelled image changes the digest too, with no image file touched.
    annotations = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace("val_0.JPEG\tn01", "val_0.JPEG\tn03"))
    assert load_split(root, "tiny_imagenet", "test", progress=False)[1][0] == 2 and len(decoded) == 6


def test_a_damaged_or_unwritable_cache_is_a_note_not_an_error(tmp_path, three_classes, capsys):
    root = write_tiny_imagenet(tmp_path / "data", n_val=3)
    cache = cache_path(DATASETS["tiny_imagenet"], root, "test", tmp_path / "cache")
    expected = load_split(root, "tiny_imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    cache.write_bytes(b"garbage")
    capsys.readouterr()
    assert torch.equal(load_split(root, "tiny_imagenet", "test", cache_dir=tmp_path / "cache", progress=False)[0],
                       expected[0])
    assert "unreadable" in capsys.readouterr().err and torch.load(cache, weights_only=True)["images"].shape[0] == 3
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    images, _ = load_split(root, "tiny_imagenet", "test", cache_dir=blocked, progress=False)
    assert torch.equal(images, expected[0]) and "cannot write the cache" in capsys.readouterr().err


@pytest.mark.parametrize("how", TINY_BREAKAGES)
def test_tiny_bad_trees_are_one_line_exit_2_through_train_scratch(tmp_path, three_classes, how, capsys):
    root = write_tiny_imagenet(tmp_path / "data", n_train=2, n_val=4)
    split, phrase = break_tiny(root, how)
    with pytest.raises(DatasetError) as caught:
        load_split(root, "tiny_imagenet", split, cache_dir=tmp_path / "cache", progress=False)
    assert phrase in str(caught.value)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli(train_scratch.main, ["--model", "resnet18", "--dataset", "tiny_imagenet", "--data_root", str(root),
                                     "--cache_dir", str(tmp_path / "cache"), "--save_dir", str(run), "--pretrained_path",
                                     str(tmp_path / "teacher.pth"), "--device", "cpu", "--no_progress"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("note:")]
    assert stopped.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: tiny_imagenet: ") and phrase in lines[0]
    assert f"{root}/{TINY_LAYOUT}" in lines[0] and "--download" in lines[0]
    assert not run.exists() and not (tmp_path / "teacher.pth").exists()


def test_train_scratch_then_datafree_kd_on_the_tiny_fixture(tmp_path, three_classes, monkeypatch):
    """A 64-px teacher trained on the fixture's train split, then one DAFL epoch evaluated on its val
    split, which comes from the cache train_scratch.py wrote (nothing decoded a second time)."""
    monkeypatch.setitem(registry.CLASSIFIERS, "tiny_cnn", TinyCNN)
    root = write_tiny_imagenet(tmp_path / "data", n_train=4, n_val=6)
    teacher = tmp_path / "teacher.pth"
    result = train_scratch.main(["--model", "tiny_cnn", "--dataset", "tiny_imagenet", "--data_root", str(root),
                                 "--epochs", "1", "--batch_size", "4", "--lr", "0.05", "--device", "cpu",
                                 "--no_progress", "--save_dir", str(tmp_path / "run"), "--pretrained_path", str(teacher)])
    assert result["epochs"] == 1 and 0 <= result["best_acc1"] <= 100 and teacher.is_file()
    for split in ("train", "test"):
        assert cache_path(DATASETS["tiny_imagenet"], root, split).is_file()
    monkeypatch.setattr(folders, "decode", lambda *args: pytest.fail("the cached split was decoded again"))
    summary = datafree_kd.main(["--method", "dafl", "--dataset", "tiny_imagenet", "--teacher", "tiny_cnn",
                                "--student", "tiny_cnn", "--teacher_ckpt", str(teacher), "--data_root", str(root),
                                "--save_dir", str(tmp_path / "kd"), "--device", "cpu", "--no_progress",
                                "--batch_size", "6", "--epochs", "1", "--ep_steps", "2", "--kd_steps", "1", "--ngf", "8",
                                "--test_on_device"])
    assert summary["epochs"] == 1 and summary["best_acc1"] in (0.0, 100 / 6, 200 / 6, 50.0, 400 / 6, 500 / 6, 100.0)


# ----------------------------------------------------------------------------- ImageNet reader
def test_resize_and_centre_crop_sizes_follow_torchvision():
    assert folders.resized_size(300, 260, 256) == (295, 256)
    assert folders.resized_size(260, 300, 256) == (256, 295)
    assert folders.resized_size(120, 90, 256) == (341, 256)
    assert folders.resized_size(256, 256, 256) == (256, 256)
    assert folders.centre_box(295, 256, 224) == (36, 16, 260, 240)     # 35.5 rounds half to even
    assert folders.centre_box(341, 256, 224) == (58, 16, 282, 240)     # 58.5 too


def test_imagefolder_reader_resizes_crops_and_labels_by_sorted_folder(tmp_path, three_classes):
    root = write_imagefolder(tmp_path / "data")
    images, labels = load_split(root, "imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    # n01: 2 JPEGs + extra.png (RGBA); notes.txt is skipped; n02, n03: 2 JPEGs each.
    assert images.dtype == torch.uint8 and images.shape == (7, 3, 224, 224) and labels.tolist() == [0] * 3 + [1] * 2 + [2] * 2
    val = root / "imagenet" / "val"
    wide = val / "n02" / "ILSVRC2012_val_n02_0.JPEG"   # written first: 300 x 260
    with Image.open(wide) as image:
        assert image.size == (300, 260)
        expected = np.asarray(image.convert("RGB").resize((295, 256), Image.Resampling.BILINEAR)
                              .crop((36, 16, 260, 240))).transpose(2, 0, 1).copy()
    assert torch.equal(images[3], torch.from_numpy(expected))
    small = val / "n01" / "ILSVRC2012_val_n01_0.JPEG"    # 120 x 90: enlarged to 341 x 256
    with Image.open(small) as image:
        assert image.size == (120, 90)
        expected = np.asarray(image.convert("RGB").resize((341, 256), Image.Resampling.BILINEAR)
                              .crop((58, 16, 282, 240))).transpose(2, 0, 1).copy()
    assert torch.equal(images[0], torch.from_numpy(expected))
    square = val / "n01" / "ILSVRC2012_val_n01_1.JPEG"   # 256 x 256: cropped only
    assert torch.equal(images[1], torch.from_numpy(pillow_rgb(square)[:, 16:240, 16:240].copy()))
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((300, 400, 3), 123, np.uint8)).save(flat)
    assert np.all(folders.decode(flat, 224, 256) == 123)
    cached = load_split(root, "imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(cached[0], images) and torch.equal(cached[1], labels)


@pytest.mark.parametrize("how", IMAGENET_BREAKAGES)
def test_imagenet_bad_trees_are_one_line_with_the_layout(tmp_path, three_classes, how):
    root = write_imagefolder(tmp_path / "data")
    phrase = break_imagefolder(root, how)
    with pytest.raises(DatasetError) as caught:
        load_split(root, "imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("imagenet: ") and phrase in message
    assert f"{root}/{IMAGENET_LAYOUT}" in message and "image-net.org" in message and "--download" not in message
    assert not cache_path(DATASETS["imagenet"], root, "test", tmp_path / "cache").exists()


def test_imagenet_train_split_is_never_read_and_train_scratch_refuses_it(tmp_path, three_classes, capsys):
    root = write_imagefolder(tmp_path / "data")
    with pytest.raises(DatasetError, match="train split is never read"):
        load_split(root, "imagenet", "train")
    with pytest.raises(SystemExit) as stopped:
        run_cli(train_scratch.main, ["--model", "resnet18", "--dataset", "imagenet", "--data_root", str(root),
                                     "--save_dir", str(tmp_path / "run"), "--device", "cpu"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.count("\n") == 1 and "torchvision's pretrained weights" in error
    assert not (tmp_path / "run").exists()


def test_imagenet_download_is_refused_with_the_place_for_the_files(tmp_path, three_classes):
    with pytest.raises(DatasetError) as caught:
        download(tmp_path / "data", "imagenet", progress=False)
    message = str(caught.value)
    assert "\n" not in message and "--download cannot fetch it" in message
    assert f"{tmp_path / 'data'}/{IMAGENET_LAYOUT}" in message and not (tmp_path / "data").exists()
    root = write_imagefolder(tmp_path / "data")
    assert download(root, "imagenet", progress=False) == root / "imagenet"   # present: nothing to do


# ----------------------------------------------------------------------------- Tiny-ImageNet download
def _zip_of(tree: Path, archive: Path, extra: dict[str, bytes] | None = None) -> str:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(tree.parent).as_posix())
        for name, content in (extra or {}).items():
            handle.writestr(name, content)
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_tiny_download_fetches_checks_and_unzips(tmp_path, three_classes, monkeypatch):
    staging = write_tiny_imagenet(tmp_path / "staging", n_train=2, n_val=3)
    archive = tmp_path / "served" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    md5 = _zip_of(staging / "tiny-imagenet-200", archive)
    monkeypatch.setitem(DATASETS, "tiny_imagenet", dataclasses.replace(DATASETS["tiny_imagenet"], archive_md5=md5))
    root = tmp_path / "data"
    folder = download(root, "tiny_imagenet", progress=False, url=archive.as_uri())
    assert folder == root / "tiny-imagenet-200" and sorted(p.name for p in root.iterdir()) == [
        "tiny-imagenet-200", "tiny-imagenet-200.zip"]
    for split in ("train", "test"):
        assert torch.equal(load_split(root, "tiny_imagenet", split, progress=False)[0],
                           load_split(staging, "tiny_imagenet", split, progress=False)[0])
    download(root, "tiny_imagenet", progress=False, url="file:///nowhere")   # complete: nothing fetched


def test_tiny_download_refuses_a_wrong_md5_and_unsafe_zip_members(tmp_path, three_classes, monkeypatch):
    staging = write_tiny_imagenet(tmp_path / "staging", n_train=1, n_val=1)
    archive = tmp_path / "served" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    _zip_of(staging / "tiny-imagenet-200", archive)
    with pytest.raises(DatasetError, match="90528d7ca1a48142e341f4ef8d21d0de"):   # the official MD5
        download(tmp_path / "data", "tiny_imagenet", progress=False, url=archive.as_uri())
    assert list((tmp_path / "data").iterdir()) == []
    md5 = _zip_of(staging / "tiny-imagenet-200", archive, {"../escaped.txt": b"outside"})
    monkeypatch.setitem(DATASETS, "tiny_imagenet", dataclasses.replace(DATASETS["tiny_imagenet"], archive_md5=md5))
    with pytest.raises(DatasetError, match="unsafe member '../escaped.txt'") as caught:
        download(tmp_path / "data", "tiny_imagenet", progress=False, url=archive.as_uri())
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "tiny-imagenet-200").exists()


# ----------------------------------------------------------------------------- the test split in host memory
def test_flags_are_run_flags_that_do_not_block_a_resume(tmp_path):
    args = datafree_kd.build_parser().parse_args(
        ["--method", "dafl", "--teacher", "resnet18", "--student", "resnet18", "--dataset", "imagenet",
         "--test_on_device", "--cache_dir", str(tmp_path)])
    assert args.test_on_device is True and args.cache_dir == str(tmp_path)
    scratch = train_scratch.build_parser().parse_args(["--model", "resnet18"])
    assert scratch.test_on_device is False and scratch.cache_dir is None
    assert {"test_on_device", "cache_dir"} <= RUNTIME_KEYS


def test_host_staged_test_split_evaluates_exactly_as_on_the_device(tmp_path, three_classes):
    root = write_imagefolder(tmp_path / "data")
    base = {"dataset": "imagenet", "data_root": str(root), "download": False, "cache_dir": str(tmp_path / "cache"),
            "progress": False, "batch_size": 3}
    numerics = Numerics(torch.device("cpu"), None, False)
    staged = datafree_kd.load_test_batches({**base, "test_on_device": False}, numerics)
    whole = datafree_kd.load_test_batches({**base, "test_on_device": True}, numerics)
    assert staged.stage_on_host and not whole.stage_on_host and len(staged) == len(whole) == 3
    for (staged_images, staged_labels), (images, labels) in zip(staged, whole):
        assert torch.equal(staged_images, images) and torch.equal(staged_labels, labels)
    torch.manual_seed(0)
    model = TinyCNN(3)
    assert evaluate(model, staged) == evaluate(model, whole)
    tiny_info = DATASETS["tiny_imagenet"]
    images, labels = torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
    assert not evaluation_loader(tiny_info, images, labels, 2, "cpu").stage_on_host
    assert evaluation_loader(tiny_info, images, labels, 2, "cpu", test_on_device=False).stage_on_host
    with pytest.raises(ValueError, match="evaluation only"):
        from datafree.data import TensorLoader
        TensorLoader(images, labels, batch_size=2, shuffle=True, stage_on_host=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_staged_batches_reach_cuda_from_pinned_memory(tmp_path, three_classes):
    root = write_imagefolder(tmp_path / "data")
    images, labels = load_split(root, "imagenet", "test", cache_dir=tmp_path / "cache", progress=False)
    info = DATASETS["imagenet"]
    staged = evaluation_loader(info, images, labels, 3, "cuda")
    whole = evaluation_loader(info, images, labels, 3, "cuda", test_on_device=True)
    assert staged.images.is_pinned() and staged.images.device.type == "cpu" and whole.images.is_cuda
    model = TinyCNN(3).cuda()
    assert evaluate(model, staged) == evaluate(model, whole)



def test_a_temporary_cache_file_left_by_a_killed_run_is_removed(tmp_path, three_classes):
    root = write_tiny_imagenet(tmp_path / "data", n_val=2)
    cache = cache_path(DATASETS["tiny_imagenet"], root, "test")
    cache.parent.mkdir(parents=True)
    old, recent = cache.with_name(cache.name + ".abc123.tmp"), cache.with_name(cache.name + ".def456.tmp")
    old.write_bytes(b"half a cache")
    recent.write_bytes(b"being written")
    os.utime(old, (1, 1))
    load_split(root, "tiny_imagenet", "test", progress=False)
    assert sorted(path.name for path in cache.parent.iterdir()) == sorted([cache.name, recent.name])
