"""What a tiny ``lightning-dd fit`` writes to TensorBoard, read back with TensorBoard's own reader."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torch

from lightning_dd.cli import run_cli
from lightning_dd.export import image_grid

from helpers import CLI_TINY as TINY  # the tiny configuration of the CLI tests

SCALARS = [
    "distill/match_loss",
    "distill/outer_loss",
    "distill/seconds_per_outer",
    "eval/acc_mean",
    "eval/acc_std",
    "eval/random_subset_acc_mean",
    "eval/full_set_acc_mean",
]


def test_fit_writes_scalars_images_and_hparams(tmp_path):
    args = [
        "fit",
        f"--trainer.default_root_dir={tmp_path}",
        f"--model.pool.cache_dir={tmp_path / 'pools'}",
        "--trainer.log_every_n_steps=1",
        *TINY,
    ]
    run_cli(args)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(
        str(log_dir),
        size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0, "audio": 0, "compressedHistograms": 0},
    )
    events.Reload()
    tags = events.Tags()

    for tag in SCALARS:
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert len(events.Scalars("distill/outer_loss")) == 2  # one value per outer iteration
    assert len(events.Scalars("eval/acc_mean")) == 2  # after outer 1 and at the end
    assert all(0.0 <= e.value <= 100.0 for e in events.Scalars("eval/acc_mean"))
    assert all(e.value >= 0.0 for e in events.Scalars("distill/seconds_per_outer"))

    assert "synthetic/images" in tags["images"], tags["images"]
    image = events.Images("synthetic/images")[-1]
    # the same layout as distilled.png: the grid of 10 stored 8x8 images (ipc 1), enlarged to be readable
    grid = image_grid(torch.zeros(10, 1, 8, 8), ipc=1)
    assert (image.height, image.width) == tuple(grid.shape[1:]) and image.width > 8

    # The hparams plugin (TensorBoard's HPARAMS tab): session start info with the run's settings.
    plugin_tags = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin_tags, (tags, plugin_tags)
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data
    assert content.plugin_name == "hparams" and b"outer_iterations" in content.content
