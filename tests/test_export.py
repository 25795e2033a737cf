import pytest
import torch

from lightning_dd.data import DatasetInfo
from lightning_dd.utils.errors import FileFormatError
from lightning_dd.export import load_distilled, save_distilled, save_grid_png

INFO = DatasetInfo("digits", 10, 1, (8, 8), (0.3,), (0.4,), tuple(str(i) for i in range(10)), False)


def test_round_trip(tmp_path):
    images, labels = torch.rand(20, 1, 8, 8), torch.arange(10).repeat_interleave(2)
    path = save_distilled(tmp_path / "out" / "set.pt", images, labels, 2, INFO, {"ipc": 2, "net": {"width": 8}})
    loaded = load_distilled(path)
    assert torch.equal(loaded.images, images) and torch.equal(loaded.labels, labels)
    assert (
        loaded.factor == 2
        and loaded.info == INFO
        and loaded.config == {"ipc": 2, "net": {"width": 8}}
        and loaded.ipc == 2
    )
    decoded, decoded_labels = loaded.decoded()
    assert decoded.shape == (80, 1, 8, 8) and decoded_labels.shape == (80,)
    assert not list(tmp_path.glob("out/.*tmp"))  # no temporary files left behind


def test_bad_files_are_one_sentence(tmp_path):
    with pytest.raises(FileFormatError, match="no distilled set at"):
        load_distilled(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(FileFormatError, match="not a readable lightning-dd distilled set"):
        load_distilled(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(FileFormatError, match="is not a lightning-dd distilled set"):
        load_distilled(tmp_path / "foreign.pt")
    good = save_distilled(tmp_path / "good.pt", torch.rand(10, 1, 8, 8), torch.arange(10), 1, INFO)
    blob = torch.load(good, weights_only=True)
    blob["version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(FileFormatError, match="format version 99"):
        load_distilled(tmp_path / "future.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(FileFormatError, match="truncated or foreign"):
        load_distilled(truncated)


def test_png_grid_is_readable(tmp_path):
    """8x8 images are enlarged 8x (nearest) and laid out in whole classes, about square."""
    from PIL import Image

    images = torch.rand(20, 1, 8, 8)
    path = save_grid_png(tmp_path / "grid.png", images, ipc=2)
    # 10 classes of 2: round(sqrt(10 / 2)) = 2 classes per row -> 4 columns, 5 rows of 64-pixel images, 2-pixel padding
    with Image.open(path) as img:
        assert img.size == (4 * 66 + 2, 5 * 66 + 2)
        pixels = torch.from_numpy(__import__("numpy").asarray(img.convert("L"), dtype="float32")) / 255
    # Image 5 (class 2, first image) sits in row 1, column 1; each source pixel is an 8x8 block of one value.
    top, left = 2 + 1 * 66, 2 + 1 * 66
    block = pixels[top : top + 64, left : left + 64]
    expected = images[5, 0].repeat_interleave(8, 0).repeat_interleave(8, 1)
    assert (block - expected).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    "count, ipc, size, columns, scale",
    [
        (10, 1, 8, 3, 8),  # digits IPC 1: 3 per row (4 rows), 64-pixel images, not a 10x91 strip
        (10, 1, 32, 3, 2),  # an IPC-1 set of 32x32 images: no longer one 32-pixel column
        (100, 10, 28, 10, 3),  # IPC 10 of 10 classes: one row per class
        (100, 1, 32, 10, 2),  # CIFAR-100 IPC 1: 10 x 10
        (10, 1, 128, 3, 1),  # large images are not enlarged
    ],
)
def test_grid_layout(count, ipc, size, columns, scale):
    from lightning_dd.export import GRID_PADDING, image_grid

    grid = image_grid(torch.rand(count, 3, size, size), ipc)
    rows = -(-count // columns)
    side = size * scale + GRID_PADDING
    assert tuple(grid.shape) == (3, rows * side + GRID_PADDING, columns * side + GRID_PADDING)


def test_huge_grids_are_not_enlarged_beyond_the_limit():
    from lightning_dd.export import GRID_MAX_SIDE, image_grid

    grid = image_grid(torch.rand(100 * 50, 1, 8, 8), ipc=50)  # 100 classes x 50: 50 columns, 100 rows
    assert max(grid.shape[1:]) <= GRID_MAX_SIDE and grid.shape[2] >= 50 * 8


def test_files_follow_the_umask(tmp_path):
    """Atomic writes end with the modes a plain open() gives under the umask (not mkstemp's 0600)."""
    import os
    import stat

    from lightning_dd.utils.atomic import atomic_open

    for umask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        previous = os.umask(umask)
        try:
            pt = save_distilled(tmp_path / f"set-{umask:o}.pt", torch.rand(10, 1, 8, 8), torch.arange(10), 1, INFO)
            png = save_grid_png(tmp_path / f"grid-{umask:o}.png", torch.rand(10, 1, 8, 8), ipc=1)
            with atomic_open(tmp_path / f"results-{umask:o}.json", "w") as handle:
                handle.write("{}")
            plain = tmp_path / f"plain-{umask:o}"
            plain.write_text("x")  # what the umask gives an ordinary file, as an independent reference
        finally:
            os.umask(previous)
        assert stat.S_IMODE(plain.stat().st_mode) == expected
        for path in (pt, png, tmp_path / f"results-{umask:o}.json"):
            assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
