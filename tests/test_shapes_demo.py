"""samples/shapes/demo.py (the README's first command), shortened: it trains, prints mAP@0.5
on held-out shapes, and writes detection pictures. The full-length run is reported in the
issue note, not timed here."""
import os
import re

from samples.shapes import demo


def test_demo_trains_evaluates_and_draws(tmp_path, capsys):
    out, logs = tmp_path / "pictures", tmp_path / "logs"
    code = demo.main(["--epochs", "1", "--steps", "3", "--train-images", "12", "--val-images", "3",
                      "--pictures", "2", "--out", str(out), "--logs", str(logs)])
    assert code == 0
    text = capsys.readouterr().out
    m = re.search(r"mAP@0\.5 on 3 held-out images: ([0-9.]+)", text)
    assert m and 0.0 <= float(m.group(1)) <= 1.0
    assert sorted(os.listdir(out)) == ["shapes_000.png", "shapes_001.png"]
    for name in os.listdir(out):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    checkpoint = re.search(r"Checkpoint: (\S+)", text).group(1)
    assert checkpoint.endswith("mask_rcnn_shapes_demo_0001.h5") and os.path.isfile(checkpoint)
