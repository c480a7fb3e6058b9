"""samples/demo.py and samples/demo.ipynb: detect on a folder of photos, save pictures + JSON.

The weights are a stand-in for mask_rcnn_coco.h5 written by our own model (81 classes,
tiny configuration, random values; see tests/_samples_helpers.py) since the real file is
not available here: the tests check the flow and the files written, not the detections.

The notebook is executed headless with nbclient when nbclient and ipykernel are installed;
otherwise its code cells are run in order with ``exec`` in one namespace (same code, no
kernel).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

from _samples_helpers import ROOT, TINY, run_main, tiny_set_args, write_standin_coco_weights
from helpers import DATA

from samples import demo
from samples.common import COCO_CLASS_NAMES

NOTEBOOK = os.path.join(ROOT, "samples", "demo.ipynb")
PHOTOS = ["000000128372.jpg", "000000404249.jpg"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_coco_weights(str(tmp_path_factory.mktemp("w") / "mask_rcnn_coco.h5"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(os.path.join(DATA, "coco_val2017_mini", "images", name), folder / name)
    (folder / "readme.txt").write_text("not an image")
    return folder


def check_outputs(out, class_names):
    stems = [p[:-4] for p in PHOTOS]
    assert sorted(os.listdir(out)) == sorted([f"{s}.png" for s in stems] + [f"{s}.json" for s in stems]
                                             + ["coco_results.json", "images.json"])
    total = 0
    for s in stems:
        record = json.loads((out / f"{s}.json").read_text())
        assert record["image"].endswith(s + ".jpg")
        for inst in record["instances"]:
            assert inst["class_name"] == class_names[inst["class_id"]]
        total += len(record["instances"])
    results = json.loads((out / "coco_results.json").read_text())
    assert len(results) == total
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert r["image_id"] in (1, 2) and 1 <= r["category_id"] < len(class_names)


def test_demo_writes_pictures_and_json_for_every_image(standin, photos, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_main(demo.main, ["--images", str(photos), "--weights", standin,
                                             "--out", str(out), *tiny_set_args()])
    assert code == 0, err
    assert f"Wrote 2 pictures, their JSON and coco_results.json to {out}" in stdout
    check_outputs(out, COCO_CLASS_NAMES)


def test_demo_with_own_class_names_skips_the_coco_heads(standin, photos, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_main(demo.main, ["--images", str(photos), "--weights", standin,
                                             "--classes", "car,sign board", "--out", str(out),
                                             "--limit", "1", *tiny_set_args()])
    assert code == 0, err
    assert "class-specific heads excluded: the file has 81 classes, the model 3" in stdout
    index = json.loads((out / "images.json").read_text())
    assert len(index) == 1


def test_demo_help_explains_the_flags():
    code, out, _ = run_main(demo.main, ["--help"])
    assert code == 0
    for flag in ("--images DIR", "--weights", "--out DIR", "--config", "--classes", "--set KEY=VALUE"):
        assert flag in out


def test_demo_errors_are_clear(photos, tmp_path):
    code, _, err = run_main(demo.main, ["--images", str(photos), "--config", "nonsense"])
    assert code == 2 and "--config 'nonsense'" in err
    code, _, err = run_main(demo.main, ["--images", str(tmp_path)])
    assert code == 2 and "holds no image" in err
    code, _, err = run_main(demo.main, [])
    assert code == 2 and "--images" in err


def test_config_and_names_for_each_sample():
    cfg, names = demo.config_and_names("coco")
    assert (cfg.NUM_CLASSES, cfg.BATCH_SIZE, names[1], names[-1]) == (81, 1, "person", "toothbrush")
    cfg, names = demo.config_and_names("lisc")
    assert names == ["BG", "basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    cfg, names = demo.config_and_names("cat")
    assert (cfg.NUM_CLASSES, names) == (2, ["BG", "cat"])
    cfg, names = demo.config_and_names("coco", classes=["laptop", "keyboard"])
    assert (cfg.NUM_CLASSES, names) == (3, ["BG", "laptop", "keyboard"])


def test_config_json_file_is_accepted(tmp_path):
    cfg, _ = demo.config_and_names("cat")
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    again, names = demo.config_and_names(str(path), classes=["cat"])
    assert (again.NUM_CLASSES, again.IMAGE_MAX_DIM, names) == (2, 512, ["BG", "cat"])


def _run_notebook_with_exec(env):
    """Fallback: the notebook's code cells in order, in one namespace."""
    with open(NOTEBOOK) as f:
        nb = json.load(f)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        namespace = {"__name__": "__main__"}
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), NOTEBOOK, "exec"), namespace)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return namespace


def test_notebook_runs_headless(standin, photos, tmp_path):
    with open(NOTEBOOK) as f:
        nb = json.load(f)
    assert nb["nbformat"] == 4 and sum(c["cell_type"] == "code" for c in nb["cells"]) == 5
    assert all(c.get("outputs") == [] for c in nb["cells"] if c["cell_type"] == "code")  # stored clean
    out = tmp_path / "nb_out"
    env = {"MRCNN_ROOT": ROOT, "DEMO_IMAGES": str(photos), "DEMO_WEIGHTS": standin,
           "DEMO_OUT": str(out), "DEMO_CONFIG_OVERRIDES": json.dumps(TINY), "MPLBACKEND": "Agg"}
    if importlib.util.find_spec("nbclient") and importlib.util.find_spec("ipykernel"):
        import nbclient
        import nbformat
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        nbformat.validate(notebook)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits the environment
        try:
            nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                    resources={"metadata": {"path": os.path.join(ROOT, "samples")}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                       for o in c.outputs)
        assert "written to" in text
    else:
        namespace = _run_notebook_with_exec(env)
        assert len(namespace["result"]["images"]) == 2
    check_outputs(out, COCO_CLASS_NAMES)
