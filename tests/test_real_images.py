"""How real face crops are stored and decoded: prepared at 256 px by default
(the loader's resize size for the 224 crop, so nothing is resized at load), stored as JPEG
whatever the source (DISFA's ME-GraphAU PNGs too), decoded by OpenCV with the same pixels as
the former PIL decoder (SynthFACS PNGs bit for bit)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from real_fixtures import make_disfa, make_megraphau

from hiva_lib.data.loader import FrameDataset, load_size_for, read_image
from hiva_lib.data.prepare import prepare_dataset
from hiva_lib.data.prepared import JPEG_QUALITY, DatasetError, load_prepared
from hiva_lib.data.real.megraphau import import_megraphau_lists


def pil_tensor(path, size: int) -> torch.Tensor:
    """The loader's former decoder, written out here: PIL decode, RGB, bilinear resize."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("size", [128, 91, 64])  # as rendered; cpu-small's and test-tiny's
def test_synthfacs_pngs_decode_to_the_same_tensors_as_pil(smoke_data_root, size):
    """Every SynthFACS PNG gives the former PIL tensors bit for bit, resized or not, through
    read_image and through FrameDataset (cached and uncached)."""
    data = load_prepared(smoke_data_root / "synth-disfa")
    rows = np.arange(len(data.index))
    assert data.image_path(0).suffix == ".png" and len(rows) == 48
    uncached = FrameDataset(data, rows, size)
    for i in rows:
        want = pil_tensor(data.image_path(int(i)), size)
        got = read_image(data.image_path(int(i)), size)
        assert got.dtype == torch.uint8 and got.shape == (3, size, size)
        assert torch.equal(got, want), data.image_path(int(i))
        assert torch.equal(uncached[int(i)][0], want)


def test_jpeg_decodes_to_the_same_pixels_as_pil_and_is_not_resized_at_256(tmp_path):
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (9, 9), 3)
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), smooth, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert load_size_for(224) == 256
    got = read_image(path, 256)
    assert torch.equal(got, pil_tensor(path, 256))
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # no resize at 256
    assert torch.equal(got.permute(1, 2, 0), torch.from_numpy(rgb))
    assert torch.equal(read_image(path, 200), pil_tensor(path, 200))


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"broken\.jpg: unreadable image.*Prepare the data set"):
        read_image(bad, 32)
    with pytest.raises(DatasetError, match=r"absent\.png: unreadable image"):
        read_image(tmp_path / "absent.png", 32)


def test_raw_disfa_is_prepared_at_256_px_as_jpeg_by_default(tmp_path):
    """No image_size given: 256 x 256 JPEG crops (DISFA's videos, like BP4D's frames)."""
    raw = tmp_path / "raw"
    make_disfa(raw)
    data = prepare_dataset("disfa", tmp_path / "prepared", raw_root=raw, align="skip",
                           progress=False)
    assert data.meta["image_size"] == 256 == data.meta["preparation"]["image_size"]
    for i in range(len(data.index)):
        path = data.image_path(i)
        assert path.suffix == ".jpg" and path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
        assert cv2.imread(str(path)).shape == (256, 256, 3)
    with pytest.raises(DatasetError, match=r"image_size=256 there, 224 asked"):
        prepare_dataset("disfa", tmp_path / "prepared", raw_root=raw, align="skip",
                        image_size=224, progress=False)


@pytest.mark.parametrize("image_size", [None, 8])
def test_megraphau_disfa_pngs_are_stored_as_jpeg_and_bp4d_jpegs_linked(tmp_path, image_size):
    """An import stores DISFA's PNGs as JPEG (quality JPEG_QUALITY: the pixels of an
    independent re-encoding) and links BP4D's JPEGs that need no resize, byte for byte."""
    for dataset in ("disfa", "bp4d"):
        list_dir, _ = make_megraphau(tmp_path / "given" / dataset, dataset)
        data = import_megraphau_lists(list_dir, None, dataset, tmp_path / "prepared",
                                      image_size=image_size, progress=False)
        image_root = list_dir.parent / "img"
        for rel in data.index["image"]:
            ours = data.root / rel
            assert ours.suffix == ".jpg" and ours.read_bytes()[:3] == b"\xff\xd8\xff"
            stem = rel.removeprefix("images/")[: -len(".jpg")]
            if dataset == "bp4d":
                assert ours.read_bytes() == (image_root / f"{stem}.jpg").read_bytes()
                continue
            src = cv2.imread(str(image_root / f"{stem}.png"))
            ok, enc = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            assert ok and np.array_equal(cv2.imread(str(ours)), cv2.imdecode(enc, 1))
