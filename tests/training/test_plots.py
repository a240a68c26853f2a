"""The report figures: a learning-curve plot shows every epoch, even a run of one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.plots import learning_curves_figure, plot_learning_curves

ONE_EPOCH = {"loss": [0.4], "val_loss": [0.3], "accuracy": [0.88], "val_accuracy": [0.91]}


def test_one_epoch_learning_curves_mark_their_single_point() -> None:
    figure = learning_curves_figure(ONE_EPOCH)
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert len(lines) == 4
    for line in lines:
        assert line.get_marker() not in ("", "None", None)  # a lone point is drawn as a marker
        assert list(line.get_xdata()) == [1]
    assert list(figure.axes[0].get_xticks()) == [1]


def test_learning_curves_png_has_a_point_per_epoch(tmp_path: Path) -> None:
    history = {
        key: list(np.linspace(values[0], values[0] / 2, 3)) for key, values in ONE_EPOCH.items()
    }
    path = tmp_path / "curves.png"
    plot_learning_curves(history, path)
    with Image.open(path) as picture:
        assert picture.size == (800, 500)
    lines = learning_curves_figure(history).axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[1, 2, 3], [1, 2, 3]]
