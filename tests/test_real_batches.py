"""Real batches: class balance, label alignment, randomness from the caller's generator only."""

from __future__ import annotations

import torch

_TABLES: dict[int, dict[bytes, set[int]]] = {}


def index_of_rows(train, batch: torch.Tensor) -> list[set[int]]:
    """For every normalised image of ``batch``, the training indices holding exactly that image."""
    table = _TABLES.get(id(train))
    if table is None:
        table = _TABLES[id(train)] = {}
        for i, img in enumerate(train.images):
            table.setdefault(img.numpy().tobytes(), set()).add(i)
    mean = torch.tensor(train.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(train.info.std).view(1, -1, 1, 1)
    pixels = (batch * std + mean) * 255  # undo the normalisation by hand
    assert (pixels - pixels.round()).abs().max() < 1e-3, "not normalised uint8 training images"
    return [table.get(p.round().to(torch.uint8).numpy().tobytes(), set()) for p in pixels]


def test_class_balanced_batch_holds_distinct_images_of_each_row_class(digits):
    train = digits.train_data
    batch = train.class_balanced_batch(12, torch.Generator().manual_seed(0))
    assert batch.shape == (10, 12, 1, 8, 8)
    for c in range(10):
        matches = index_of_rows(train, batch[c])
        assert all(any(int(train.labels[i]) == c for i in m) for m in matches), c
        picked = [min(i for i in m if int(train.labels[i]) == c) for m in matches]
        assert len(set(picked)) == 12 or len({tuple(sorted(m)) for m in matches}) == 12  # no image twice


def test_class_balanced_batches_are_random_and_cover_the_class(digits):
    train = digits.train_data
    g = torch.Generator().manual_seed(1)
    first, second = train.class_balanced_batch(8, g), train.class_balanced_batch(8, g)
    assert not torch.equal(first, second)  # consecutive draws differ
    seen = set()
    g = torch.Generator().manual_seed(2)
    for _ in range(40):
        for m in index_of_rows(train, train.class_balanced_batch(8, g)[3]):
            seen |= m
    class_size = int((train.labels == 3).sum())
    assert len(seen & set(torch.nonzero(train.labels == 3).flatten().tolist())) > 0.8 * class_size


def test_batches_depend_on_the_given_generator_only(digits):
    train = digits.train_data
    torch.manual_seed(0)
    a = train.class_balanced_batch(8, torch.Generator().manual_seed(4))
    xa, ya = train.random_batch(30, torch.Generator().manual_seed(4))
    torch.manual_seed(1)  # another global seed changes nothing
    b = train.class_balanced_batch(8, torch.Generator().manual_seed(4))
    xb, yb = train.random_batch(30, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(xa, xb) and torch.equal(ya, yb)
    c = train.class_balanced_batch(8, torch.Generator().manual_seed(5))
    assert not torch.equal(a, c)


def test_class_balanced_batch_is_capped_by_the_smallest_class(digits):
    train = digits.train_data
    smallest = min(train.class_counts())
    batch = train.class_balanced_batch(smallest + 50, torch.Generator().manual_seed(0))
    assert batch.shape[:2] == (10, smallest)


def test_random_batch_labels_belong_to_their_images(digits):
    train = digits.train_data
    x, y = train.random_batch(200, torch.Generator().manual_seed(3))
    assert x.shape == (200, 1, 8, 8) and y.shape == (200,)
    matches = index_of_rows(train, x)
    assert all(any(int(train.labels[i]) == int(label) for i in m) for m, label in zip(matches, y))
    firsts = [min(m) for m in matches]
    assert firsts != sorted(firsts)  # shuffled, not the first images in order
    assert torch.bincount(y, minlength=10).min() >= 8  # every class shows up


def test_random_batch_is_a_uniform_sample_without_replacement(digits):
    train = digits.train_data
    g = torch.Generator().manual_seed(6)
    hits = torch.zeros(len(train))
    for _ in range(60):
        idx = torch.tensor([min(m) for m in index_of_rows(train, train.random_batch(100, g)[0])])
        assert idx.unique().numel() >= 99  # (digits holds a few duplicate images)
        hits[idx] += 1
    # 6000 picks over ~1440 images: each image about 4 times, none never
    assert float((hits == 0).float().mean()) < 0.05


def test_random_subset_is_class_balanced_and_distinct(digits):
    train = digits.train_data
    idx = train.random_subset_indices(5, torch.Generator().manual_seed(0))
    assert idx.unique().numel() == 50
    assert torch.equal(torch.bincount(train.labels[idx], minlength=10), torch.full((10,), 5))
    other = train.random_subset_indices(5, torch.Generator().manual_seed(1))
    assert not torch.equal(idx, other)


def test_normaliser_by_hand():
    from lightning_dd.data.real import Normalizer

    norm = Normalizer((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.tensor([[[[1.0]], [[0.5]], [[1.0]]]])
    torch.testing.assert_close(norm(x), torch.tensor([[[[1.0]], [[1.0]], [[0.5]]]]))
    torch.testing.assert_close(
        norm.uint8(torch.tensor([[[[255]], [[0]], [[51]]]], dtype=torch.uint8)),
        torch.tensor([[[[1.0]], [[-1.0]], [[0.1]]]]),
    )
