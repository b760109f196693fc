"""Tests for CIFAR loading, --download and TensorLoader (METHODS.md §2.1), on small pickle fixtures."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from datafree import data
from datafree.data import DATASETS, DatasetError, TensorLoader, download, load_split
from datafree.errors import UsageError
from tests.cifar_fixtures import BREAKAGES, FOLDERS, break_cifar, fixture_arrays, write_cifar, write_pickle

DATASET_NAMES = ("cifar10", "cifar100")


# ----------------------------------------------------------------------------- constants
def test_dataset_constants_match_section_2_1() -> None:
    cifar10, cifar100 = DATASETS["cifar10"], DATASETS["cifar100"]
    assert (cifar10.num_classes, cifar100.num_classes) == (10, 100)
    assert cifar10.mean == (0.4914, 0.4822, 0.4465) and cifar10.std == (0.2023, 0.1994, 0.2010)
    assert cifar100.mean == (0.5071, 0.4867, 0.4408) and cifar100.std == (0.2675, 0.2565, 0.2761)
    assert cifar10.folder == "cifar-10-batches-py" and cifar100.folder == "cifar-100-python"
    assert cifar10.train_files == tuple(f"data_batch_{i}" for i in range(1, 6)) and cifar10.test_files == ("test_batch",)
    assert (cifar10.label_key, cifar100.label_key) == ("labels", "fine_labels")
    assert cifar10.archive_md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar100.archive_md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert cifar10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar100.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cifar10.num_classes = 11  # type: ignore[misc]


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("key_type", ["str", "bytes"])
def test_load_split_returns_exactly_what_the_files_hold(tmp_path: Path, dataset: str, key_type: str) -> None:
    root = write_cifar(tmp_path, dataset, n_train=53, n_test=21, key_type=key_type, seed=3)
    for split, count in (("train", 53), ("test", 21)):
        images, labels = load_split(root, dataset, split)
        expected_data, expected_labels = fixture_arrays(dataset, split, count, seed=3)
        assert images.dtype == torch.uint8 and images.shape == (count, 3, 32, 32)
        assert labels.dtype == torch.int64 and labels.shape == (count,)
        assert torch.equal(images, torch.from_numpy(expected_data).view(count, 3, 32, 32))
        assert torch.equal(labels, torch.from_numpy(expected_labels))


@pytest.mark.parametrize("key_type", ["str", "bytes"])
def test_rows_are_channel_planes(tmp_path: Path, key_type: str) -> None:
    """A row is 1024 red values, then 1024 green, then 1024 blue, each plane row-major."""
    root = write_cifar(tmp_path, "cifar10", n_train=10, n_test=2)
    rows, columns = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    known = np.concatenate([np.full(1024, 7), rows.reshape(-1), (columns * 8).reshape(-1)]).astype(np.uint8)
    batch = np.stack([known, np.zeros(3072, np.uint8)])
    write_pickle(root / FOLDERS["cifar10"] / "test_batch", {"data": batch, "labels": [9, 0]}, key_type)
    images, labels = load_split(root, "cifar10", "test")
    assert labels.tolist() == [9, 0]
    assert torch.all(images[0, 0] == 7)
    assert torch.equal(images[0, 1], torch.arange(32, dtype=torch.uint8)[:, None].expand(32, 32))
    assert torch.equal(images[0, 2], (torch.arange(32, dtype=torch.uint8) * 8)[None, :].expand(32, 32))
    assert torch.all(images[1] == 0)


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_learnable_fixture_classes_are_separable(tmp_path: Path, dataset: str) -> None:
    """Nearest class centroid (train) classifies the test split almost perfectly: an easy task."""
    root = write_cifar(tmp_path, dataset, n_train=300, n_test=100)
    train_images, train_labels = load_split(root, dataset, "train")
    test_images, test_labels = load_split(root, dataset, "test")
    classes = DATASETS[dataset].num_classes
    train_flat, test_flat = train_images.flatten(1).float(), test_images.flatten(1).float()
    centroids = torch.zeros(classes, train_flat.shape[1]).index_add_(0, train_labels, train_flat)
    centroids /= torch.bincount(train_labels, minlength=classes).clamp(min=1)[:, None]
    predictions = torch.cdist(test_flat, centroids).argmin(dim=1)
    assert (predictions == test_labels).float().mean() >= 0.95
    noise_images, _ = load_split(write_cifar(tmp_path / "noise", dataset, 20, 10, learnable=False), dataset, "test")
    assert noise_images.float().std() > 60  # learnable=False: uniform noise, no class pattern


def _check_message(error: DatasetError, dataset: str, root: Path) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message
    assert "--download" in message and "--data_root" in message
    assert message.startswith(dataset + ":")
    assert f"{root / FOLDERS[dataset]}/{DATASETS[dataset].files_pattern}" in message
    return message


@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("how", BREAKAGES)
def test_broken_layouts_raise_one_line_dataset_error(tmp_path: Path, dataset: str, how: str) -> None:
    root = write_cifar(tmp_path, dataset, n_train=20, n_test=10)

    failing_split = break_cifar(root, dataset, how)
    with pytest.raises(DatasetError) as caught:
        load_split(root, dataset, failing_split)
    message = _check_message(caught.value, dataset, root)
    expected_words = {"missing_folder": "does not exist", "missing_file": "is missing",
                      "truncated_file": "truncated", "bad_shape": "shape", "missing_key": DATASETS[dataset].label_key,
                      "bad_label": "outside"}
    assert expected_words[how] in message
    if how == "missing_file":  # the other split is intact
        assert load_split(root, dataset, "test")[0].shape[0] == 10


def test_missing_root_and_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_split(tmp_path / "nowhere", "cifar100", "train")
    _check_message(caught.value, "cifar100", tmp_path / "nowhere")
    assert isinstance(caught.value, UsageError)


def test_unknown_dataset_lists_valid_names_and_bad_split_is_value_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar10, cifar100") as caught:
        load_split(tmp_path, "svhn", "train")
    assert "svhn" in str(caught.value)
    write_cifar(tmp_path, "cifar10", n_train=5, n_test=5)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split(tmp_path, "cifar10", "val")


def test_integer_data_of_other_dtype_is_accepted_but_out_of_range_is_not(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, "cifar10", n_train=5, n_test=3)
    test_file = root / FOLDERS["cifar10"] / "test_batch"
    write_pickle(test_file, {"data": np.full((2, 3072), 200, np.int64), "labels": [1, 2]})
    assert torch.all(load_split(root, "cifar10", "test")[0] == 200)
    write_pickle(test_file, {"data": np.full((2, 3072), 300, np.int64), "labels": [1, 2]})
    with pytest.raises(DatasetError, match="dtype"):
        load_split(root, "cifar10", "test")
    write_pickle(test_file, {"data": np.zeros((2, 3072), np.uint8), "labels": [1]})
    with pytest.raises(DatasetError, match="labels"):
        load_split(root, "cifar10", "test")


# ----------------------------------------------------------------------------- download
def _make_archive(tmp_path: Path, dataset: str, members_from: Path | None = None) -> tuple[Path, str]:
    """A tar.gz of a fixture layout, like the official archive; returns (path, md5)."""
    staging = members_from or write_cifar(tmp_path / "staging", dataset, n_train=15, n_test=6, seed=5)
    archive = tmp_path / "served" / DATASETS[dataset].archive_filename
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / FOLDERS[dataset], arcname=FOLDERS[dataset])
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def _serve(monkeypatch: pytest.MonkeyPatch, archive: Path) -> list[str]:
    """Route urllib.request.urlopen to the local archive; returns the list of requested URLs."""
    requested: list[str] = []

    class Response(io.BytesIO):
        headers = {"Content-Length": str(archive.stat().st_size)}

    def fake_urlopen(url: str, *args: object, **kwargs: object) -> Response:
        requested.append(url)
        return Response(archive.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_download_verifies_and_extracts_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          dataset: str) -> None:
    archive, md5 = _make_archive(tmp_path, dataset)
    monkeypatch.setitem(DATASETS, dataset, dataclasses.replace(DATASETS[dataset], archive_md5=md5))
    requested = _serve(monkeypatch, archive)
    root = tmp_path / "data"
    folder = download(root, dataset, progress=False)
    assert requested == [DATASETS[dataset].url]
    assert folder == root / FOLDERS[dataset]
    assert (root / archive.name).read_bytes() == archive.read_bytes()
    assert sorted(path.name for path in root.iterdir()) == sorted([archive.name, FOLDERS[dataset]])  # no temp file
    images, labels = load_split(root, dataset, "test")
    assert torch.equal(images, load_split(tmp_path / "staging", dataset, "test")[0])
    # Layout complete: a second call fetches nothing.
    download(root, dataset, progress=False)
    assert len(requested) == 1


def test_download_reuses_verified_archive_and_reads_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, md5 = _make_archive(tmp_path, "cifar10")
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(DATASETS["cifar10"], archive_md5=md5))
    # A mirror URL through the real urllib (file://).
    first_root = tmp_path / "first"
    download(first_root, "cifar10", progress=False, url=archive.as_uri())
    assert load_split(first_root, "cifar10", "train")[0].shape == (15, 3, 32, 32)
    # Archive already present with the right MD5: no network access at all.
    second_root = tmp_path / "second"
    second_root.mkdir()
    (second_root / archive.name).write_bytes(archive.read_bytes())
    requested = _serve(monkeypatch, archive)
    download(second_root, "cifar10", progress=False)
    assert requested == []
    assert load_split(second_root, "cifar10", "test")[0].shape == (6, 3, 32, 32)


def test_download_md5_mismatch_raises_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = _make_archive(tmp_path, "cifar100")
    _serve(monkeypatch, archive)  # the real (official) MD5 cannot match the fixture archive
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        download(root, "cifar100", progress=False)
    message = str(caught.value)
    assert "MD5" in message and DATASETS["cifar100"].archive_md5 in message and "\n" not in message
    assert list(root.iterdir()) == []


def test_download_network_failure_is_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DatasetError, match="could not download .*no route to host"):
        download(tmp_path, "cifar10", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_path_traversal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "served" / DATASETS["cifar10"].archive_filename
    archive.parent.mkdir()
    payload = b"not a dataset"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(DATASETS["cifar10"], archive_md5=md5))
    _serve(monkeypatch, archive)
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="unsafe member"):
        download(root, "cifar10", progress=False)
    assert not (tmp_path / "escaped.txt").exists()


def test_data_modules_never_import_torchvision() -> None:
    import re

    from datafree import augment
    from datafree.synthesis import pool

    for module in (data, augment, pool):
        assert not re.search(r"^\s*(import|from)\s+torchvision", Path(module.__file__).read_text(), re.MULTILINE)


# ----------------------------------------------------------------------------- TensorLoader
def _indexed_split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image n is the constant n + 1 (so 0 is only ever padding); its label is n."""
    images = (torch.arange(count, dtype=torch.uint8) + 1).view(count, 1, 1, 1).expand(count, 3, 32, 32).contiguous()
    return images, torch.arange(count)


def test_loader_without_shuffle_normalises_in_order(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, "cifar100", n_train=10, n_test=23)
    images, labels = load_split(root, "cifar100", "test")
    info = DATASETS["cifar100"]
    loader = TensorLoader(images, labels, batch_size=10, mean=info.mean, std=info.std)
    assert len(loader) == 3
    batches = list(loader)
    assert [batch[0].shape[0] for batch in batches] == [10, 10, 3]
    output = torch.cat([batch[0] for batch in batches])
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    assert output.dtype == torch.float32 and output.shape == (23, 3, 32, 32)
    torch.testing.assert_close(output, (images.float() / 255 - mean) / std)
    assert torch.equal(torch.cat([batch[1] for batch in batches]), labels)
    dropping = TensorLoader(images, labels, batch_size=10, drop_last=True)
    assert len(dropping) == 2 and [b[0].shape[0] for b in dropping] == [10, 10]
    torch.testing.assert_close(next(iter(dropping))[0], images[:10].float() / 255)  # no mean/std: [0, 1]


def test_loader_shuffle_covers_every_sample_once_and_keeps_labels_aligned() -> None:
    images, labels = _indexed_split(50)
    generator = torch.Generator().manual_seed(0)
    loader = TensorLoader(images, labels, batch_size=16, shuffle=True, generator=generator)
    orders = []
    for _ in range(2):
        seen = []
        for batch_images, batch_labels in loader:
            values = torch.round(batch_images[:, 0, 0, 0] * 255).long() - 1
            assert torch.equal(values, batch_labels)
            seen.append(batch_labels)
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(50))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])          # a new order each pass
    assert not torch.equal(orders[0], torch.arange(50))
    replay = TensorLoader(images, labels, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([b[1] for b in replay]), orders[0])


def test_loader_augments_per_sample_and_supports_channels_last() -> None:
    images, labels = _indexed_split(64)
    loader = TensorLoader(images, labels, batch_size=64, augment=True, generator=torch.Generator().manual_seed(1),
                          channels_last=True, device="cpu")
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.is_contiguous(memory_format=torch.channels_last)
    pixels = torch.round(batch_images * 255).long()
    assert torch.equal(pixels.amax(dim=(1, 2, 3)) - 1, batch_labels)  # content kept, only crop/flip
    padded_fraction = (pixels == 0).float().mean(dim=(1, 2, 3))
    assert padded_fraction.max() > 0 and padded_fraction.min() < padded_fraction.max()  # offsets differ
    assert loader.state_dict() == {}
    loader.load_state_dict({})
    with pytest.raises(ValueError):
        TensorLoader(images.float(), labels, batch_size=4)
