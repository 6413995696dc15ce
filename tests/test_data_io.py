from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from scripts.data import file_stem, image_extension, list_images, load_datalist, read_image, to_uint8, write_png

GREY = (np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 7).astype(np.uint8)
RGB = np.stack([GREY, 255 - GREY, GREY // 2], -1)


@pytest.mark.parametrize("array", [GREY, RGB], ids=["grey", "rgb"])
def test_png_round_trip(tmp_path, array):
    path = write_png(tmp_path / "sub" / "a.png", array)
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_png_uint16_and_bool(tmp_path):
    a16 = np.array([[0, 1000], [65535, 7]], np.uint16)
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "a.png", a16)), a16)
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "b.png", mask)), [[1, 0], [0, 1]])


def test_png_rgba_palette_and_1bit(tmp_path):
    Image.fromarray(np.dstack([RGB, np.full(GREY.shape, 9, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), RGB)
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), [[0, 1], [2, 1]])  # palette indices
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1").save(tmp_path / "bit.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bit.png"), [[0, 255], [255, 0]])


def test_tiff_grey_rgb_and_planar(tmp_path):
    tifffile.imwrite(tmp_path / "g.tif", GREY)
    tifffile.imwrite(tmp_path / "c.tiff", RGB)
    tifffile.imwrite(tmp_path / "cf.tif", np.moveaxis(RGB, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "s.tif", GREY[None, None])  # singleton axes are squeezed
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif"), GREY)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tiff"), RGB)
    np.testing.assert_array_equal(read_image(tmp_path / "cf.tif"), RGB)  # one page of 3 planar samples: RGB
    np.testing.assert_array_equal(read_image(tmp_path / "s.tif"), GREY)
    # three grey pages are three sections, not an RGB image (the TIFF's structure decides, not the array's shape)
    tifffile.imwrite(tmp_path / "pages.tif", np.moveaxis(RGB, -1, 0), photometric="minisblack")
    with pytest.raises(ValueError, match=r"pages\.tif: a stack of 3 sections"):
        read_image(tmp_path / "pages.tif")


def test_nifti_is_transposed_to_rows_columns(tmp_path):
    # NIfTI stores (x, y): the image GREY (rows y, columns x) is stored as GREY.T
    nib.save(nib.Nifti1Image(GREY.T.astype(np.int16), np.eye(4)), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti1Image(GREY.T[..., None].astype(np.float32), np.eye(4)), str(tmp_path / "b.nii"))
    out = read_image(tmp_path / "a.nii.gz")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, GREY)
    np.testing.assert_array_equal(read_image(tmp_path / "b.nii"), GREY)


@pytest.mark.parametrize(
    "name,writer",
    [
        ("stack.tif", lambda p: tifffile.imwrite(p, np.zeros((5, 8, 8), np.uint8))),
        ("vol.nii.gz", lambda p: nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), np.eye(4)), str(p))),
        ("multi.tif", lambda p: tifffile.imwrite(p, np.zeros((8, 8, 7), np.uint8), photometric="minisblack")),
    ],
)
def test_rejects_volumes_and_stacks(tmp_path, name, writer):
    """read_image reads one 2D image; a stack's message names the route that splits it into sections."""
    writer(tmp_path / name)
    with pytest.raises(ValueError, match=name + r": a stack of \d+ sections .*not one 2D image.*prepare folders"):
        read_image(tmp_path / name)


def test_rejects_multichannel_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "seven.tif", np.zeros((8, 8, 7), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ValueError, match=r"seven\.tif: expected a 2D image.*multi-channel image"):
        read_image(tmp_path / "seven.tif")


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"a\.bmp: unsupported image file extension"):
        read_image(tmp_path / "a.bmp")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"bad\.png: cannot read this \.png file"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"bad\.tif: cannot read"):
        read_image(tmp_path / "bad.tif")


def test_write_png_errors(tmp_path):
    with pytest.raises(ValueError, match="writes .png files only"):
        write_png(tmp_path / "a.tif", GREY)
    with pytest.raises(ValueError, match=r"expected a \(H, W\) or \(H, W, 3\) array, got shape \(2, 2, 2\)"):
        write_png(tmp_path / "a.png", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="convert it first"):
        write_png(tmp_path / "a.png", np.array([[0.5, 300.0]]))
    with pytest.raises(ValueError, match="convert it first"):
        write_png(tmp_path / "a.png", np.array([[-1, 3]]))


@pytest.mark.parametrize(
    "array,expected",
    [
        (np.array([[3, 250]], np.uint8), [[3, 250]]),
        (np.array([[True, False]]), [[255, 0]]),
        (np.array([[0, 200]], np.int32), [[0, 200]]),  # already in 0..255: cast, not rescaled
        (np.array([[0, 1000, 2000]], np.uint16), [[0, 128, 255]]),  # 1000 * 255 / 2000 = 127.5 -> 128
        (np.array([[-1.0, 0.0, 1.0]]), [[0, 128, 255]]),
        (np.array([[5.0, 5.0]]), [[0, 0]]),
    ],
)
def test_to_uint8(array, expected):
    out = to_uint8(array)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_to_uint8_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([[0.0, np.nan]]))


@pytest.mark.parametrize(
    "name,ext,stem",
    [("a.nii.gz", ".nii.gz", "a"), ("B.PNG", ".png", "B"), ("c.d.tiff", ".tiff", "c.d"), ("e.txt", None, "e"),
     ("f.OME.tif", ".ome.tif", "f")],
)
def test_extension_and_stem(name, ext, stem):
    assert image_extension(name) == ext
    assert file_stem(name) == stem


def test_list_images_and_load_datalist(tmp_path, synthetic_dataset):
    write_png(tmp_path / "b.png", GREY)
    tifffile.imwrite(tmp_path / "a.tif", GREY)
    (tmp_path / "notes.txt").write_text("x")
    items = list_images(tmp_path)
    assert [p["image"] for p in items] == [str((tmp_path / n).resolve()) for n in ("a.tif", "b.png")]
    assert list_images(tmp_path / "b.png") == [{"image": str((tmp_path / "b.png").resolve())}]
    testing = list_images(synthetic_dataset, key="testing")
    assert len(testing) == 2 and testing[0]["image"].endswith("images/test_000.png")
    assert len(load_datalist(synthetic_dataset, "training")) == 4
    keys = r"\['testing', 'testing_sections', 'training', 'training_sections', 'validation', 'validation_sections'\]"
    with pytest.raises(ValueError, match=r"no list under key 'nope'.*" + keys):
        load_datalist(synthetic_dataset, "nope")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .png"):
        list_images(tmp_path / "empty")
    empty = tmp_path / "empty.json"
    empty.write_text('{"training": []}')
    with pytest.raises(ValueError, match="the list 'training' is empty"):
        load_datalist(empty, "training")
