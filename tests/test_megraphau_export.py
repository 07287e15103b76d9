"""The images of a ME-GraphAU / MDHR export suit their training loaders as they are.

The rule (docs/data.md, "Coming from ME-GraphAU / MDHR"): every exported image is 256 x 256,
because ME-GraphAU's training loader draws the 224 crop's offset from the stored image's size
and crops after resizing to 256 (a 128 px SynthFACS image stops it at once); and every file's
content is the format its name says (JPEG bytes in .jpg, PNG in .png). Checked here on smoke
SynthFACS sets (128 px PNGs, rewritten) and on real-layout fixtures prepared at 256 px (BP4D
JPEGs linked as they are, DISFA JPEGs rewritten as the PNGs ME-GraphAU's names promise).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from real_fixtures import BUILDERS

from hiva_lib.data.prepare import prepare_dataset
from hiva_lib.data.real.megraphau import export_megraphau

THEIR_SIZE = (256, 256)
SIGNATURE = {".jpg": b"\xff\xd8\xff", ".png": b"\x89PNG\r\n\x1a\n"}
PIL_FORMAT = {".jpg": "JPEG", ".png": "PNG"}


def _listed(lists: Path, word: str = "img_path") -> list[str]:
    """Every image the test path lists name (each row is in one test list)."""
    return [p for f in sorted(lists.glob(f"*_test_{word}_fold*.txt"))
            for p in f.read_text().split()]


def _check_fits(image_dir: Path, listed: list[str]) -> None:
    """Exactly the listed images, each 256 x 256 in the format its name says."""
    files = sorted(str(p.relative_to(image_dir)) for p in image_dir.rglob("*") if p.is_file())
    assert files == sorted(listed)
    for name in listed:
        path = image_dir / name
        suffix = path.suffix.lower()
        assert path.read_bytes()[:8].startswith(SIGNATURE[suffix]), name
        with Image.open(path) as im:
            assert (im.format, im.size) == (PIL_FORMAT[suffix], THEIR_SIZE), name


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    for name in ("synth-bp4d", "synth-disfa"):
        prepare_dataset(name, root, smoke=True, progress=False)
    return root


@pytest.mark.parametrize("dataset", ["synth-bp4d", "synth-disfa"])
@pytest.mark.parametrize("list_format", ["megraphau", "mdhr"])
def test_synthfacs_export_images_fit_their_loaders(synth_root, tmp_path, dataset, list_format):
    """SynthFACS' 128 px PNGs are exported as 256 px JPEGs under the .jpg names of the lists,
    the pixels those of a bilinear resize of ours (within JPEG quality 95)."""
    data = prepare_dataset(dataset, synth_root, smoke=True, progress=False)
    assert data.meta["image_size"] == 128  # the prepared set and its data version stay
    out = export_megraphau(data, tmp_path / "export", list_format, progress=False)
    mdhr = list_format == "mdhr"
    image_dir = out / ("img_o" if mdhr and dataset == "synth-disfa" else "img")
    word = "path" if mdhr and dataset == "synth-disfa" else "img_path"
    listed = _listed(out if mdhr else out / "list", word)
    assert len(listed) == len(data.index)
    _check_fits(image_dir, listed)
    for row in data.index.itertuples():  # synth names: <subject>/<sequence>/<frame>.jpg
        name = f"{row.subject}/{row.sequence}/{row.frame}.jpg"
        with Image.open(data.root / row.image) as im:
            want = np.asarray(im.convert("RGB").resize(THEIR_SIZE, Image.BILINEAR), np.float64)
        got = np.asarray(Image.open(image_dir / name).convert("RGB"), np.float64)
        assert np.abs(got - want).mean() < 3, name  # JPEG q95, 4:2:0 chroma


def test_real_exports_link_what_fits_and_rewrite_the_rest(tmp_path):
    """Prepared at 256 px (the default): BP4D's JPEG crops are linked under .jpg names as they
    are; DISFA's JPEG crops become PNG files under ME-GraphAU's SN001/0.png names (MDHR:
    SN001/SN001_0.png), pixel for pixel; at 32 px every image is written again at 256."""
    for name in ("bp4d", "disfa"):
        BUILDERS[name](tmp_path / "raw" / name)
    bp4d = prepare_dataset("bp4d", tmp_path / "p256", raw_root=tmp_path / "raw" / "bp4d",
                           align="skip", progress=False)
    out = export_megraphau(bp4d, tmp_path / "BP4D", progress=False)
    listed = _listed(out / "list")
    _check_fits(out / "img", listed)
    for row in bp4d.index.itertuples():
        exported = out / "img" / f"{row.subject}/{row.sequence}/{row.frame}.jpg"
        assert exported.is_symlink()
        assert exported.read_bytes() == (bp4d.root / row.image).read_bytes()
    disfa = prepare_dataset("disfa", tmp_path / "p256", raw_root=tmp_path / "raw" / "disfa",
                            align="skip", progress=False)
    for list_format, folder, pattern in (("megraphau", "img", "{s}/{f}.png"),
                                         ("mdhr", "img_o", "{s}/{s}_{f}.png")):
        out = export_megraphau(disfa, tmp_path / f"DISFA-{list_format}", list_format,
                               progress=False)
        lists = out / "list" if list_format == "megraphau" else out
        _check_fits(out / folder, _listed(lists, "img_path" if folder == "img" else "path"))
        for row in disfa.index.itertuples():
            exported = out / folder / pattern.format(s=row.subject, f=row.frame)
            assert not exported.is_symlink()
            np.testing.assert_array_equal(cv2.imread(str(exported)),
                                          cv2.imread(str(disfa.root / row.image)))
    small = prepare_dataset("bp4d", tmp_path / "p32", raw_root=tmp_path / "raw" / "bp4d",
                            align="skip", image_size=32, progress=False)
    out = export_megraphau(small, tmp_path / "BP4D-32", progress=False)
    _check_fits(out / "img", _listed(out / "list"))
    assert not any(p.is_symlink() for p in (out / "img").rglob("*.jpg"))


def test_synthfacs_refuses_a_size_it_cannot_honour(tmp_path, smoke_data_root):
    """image_size=256 for a SynthFACS preset is one error before anything is written (it is
    rendered at 128 px only), never silently ignored; 'auto', None and 128 are its size."""
    for size in (256, 224, 64):
        with pytest.raises(ValueError, match=rf"image_size={size}\): SynthFACS is rendered at "
                                             r"128 px only.*image_size='auto'.*256 x 256"):
            prepare_dataset("synth-disfa", tmp_path, image_size=size, smoke=True)
    assert list(tmp_path.iterdir()) == []
    for size in ("auto", None, 128):  # reused: the same set
        data = prepare_dataset("synth-disfa", smoke_data_root, image_size=size, smoke=True,
                               progress=False)
        assert data.meta["image_size"] == 128
    with pytest.raises(ValueError, match=r"image_size='big': pass 'auto'"):
        prepare_dataset("bp4d", tmp_path, raw_root=tmp_path, image_size="big")


# --- notebook 01: replacing an export is its own switch ------------------------------------

NOTEBOOK_01 = Path(__file__).resolve().parents[1] / "notebooks" / "01_prepare_data.ipynb"


def _run_notebook_01(**params) -> None:
    """Notebook 01's code cells in order, ``params`` set after its parameters cell (as
    papermill injects them), in this process: seconds at smoke size."""
    import json

    namespace: dict = {}
    for cell in json.loads(NOTEBOOK_01.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec("".join(cell["source"]), namespace)  # noqa: S102 - the notebook's own code
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            namespace.update(params)


def test_notebook_01_replaces_an_export_only_with_overwrite_export(tmp_path):
    from hiva_lib.data.prepared import DatasetError

    export = tmp_path / "export"
    params = dict(dataset="synth-disfa", smoke=True, data_root=str(tmp_path / "data"),
                  figures_root=str(tmp_path / "figures"), megraphau_export_dir=str(export))
    _run_notebook_01(**params)
    index = tmp_path / "data" / "synth-disfa" / "index.csv"
    prepared_at = index.stat().st_mtime_ns
    (export / "stale.txt").write_text("from an earlier export")

    for flags in ({}, {"overwrite": True}):  # the data set's switch leaves the export alone
        with pytest.raises(DatasetError, match="overwrite_export"):
            _run_notebook_01(**params, **flags)
        assert (export / "stale.txt").exists()
    prepared_again_at = index.stat().st_mtime_ns
    assert prepared_again_at != prepared_at  # overwrite=True did prepare the data set again

    _run_notebook_01(**params, overwrite_export=True)
    assert not (export / "stale.txt").exists() and (export / "list").is_dir()
    assert index.stat().st_mtime_ns == prepared_again_at  # the data set was reused as it was
