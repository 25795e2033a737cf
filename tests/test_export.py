import pytest
import torch

from lightning_dd.data import DatasetInfo
from lightning_dd.errors import FileFormatError
from lightning_dd.export import load_distilled, save_distilled, save_grid_png

INFO = DatasetInfo("digits", 10, 1, (8, 8), (0.3,), (0.4,), tuple(str(i) for i in range(10)), False)


def test_round_trip(tmp_path):
    images, labels = torch.rand(20, 1, 8, 8), torch.arange(10).repeat_interleave(2)
    path = save_distilled(tmp_path / "out" / "set.pt", images, labels, 2, INFO, {"ipc": 2, "net": {"width": 8}})
    loaded = load_distilled(path)
    assert torch.equal(loaded.images, images) and torch.equal(loaded.labels, labels)
    assert loaded.factor == 2 and loaded.info == INFO and loaded.config == {"ipc": 2, "net": {"width": 8}} and loaded.ipc == 2
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


def test_png_grid(tmp_path):
    from PIL import Image

    path = save_grid_png(tmp_path / "grid.png", torch.rand(20, 1, 8, 8), ipc=2)
    with Image.open(path) as img:
        assert img.size == (2 * 9 + 1, 10 * 9 + 1)
