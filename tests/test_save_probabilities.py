"""Tests of scripts.transforms.SaveProbabilityMaps(d): file name, page order, orientation, bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor

from scripts.transforms import SaveProbabilityMaps, SaveProbabilityMapsd, read_probability_map


def _prob(c: int = 3, w: int = 4, h: int = 2) -> torch.Tensor:
    # (C, W, H) as MONAI's readers give a 2D image; channel c holds values c*100 + x*10 + y
    x = torch.arange(w).view(w, 1) * 10
    y = torch.arange(h).view(1, h)
    return torch.stack([c_ * 100 + x + y for c_ in range(c)]).float()


def test_pages_line_up_with_the_file(tmp_path):
    prob = _prob()
    SaveProbabilityMaps(str(tmp_path), class_names=["a", "b", "c"], dtype="float32")(prob, filename="/data/sec.01.tif")
    out = tifffile.imread(tmp_path / "sec.01_prob.tif")  # stem keeps inner dots, drops only the extension
    assert out.dtype == np.float32 and out.shape == (3, 2, 4)  # (C, H, W) in file order
    assert out[2, 1, 3] == 200 + 30 + 1  # channel 2, row y=1, column x=3


def test_nifti_double_extension_and_untransposed(tmp_path):
    arr = np.random.default_rng(0).random((2, 5, 6)).astype(np.float32)
    SaveProbabilityMaps(str(tmp_path), transposed=False, postfix="_p", dtype="float32")(arr, filename="img.nii.gz")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "img_p.tif"), arr)


def test_dictionary_wrapper_takes_the_name_from_the_image(tmp_path):
    image = MetaTensor(torch.zeros(1, 4, 2), meta={"filename_or_obj": "/x/cells_7.png"})
    data = {"image": image, "prob": _prob(2)}
    out = SaveProbabilityMapsd(keys="prob", output_dir=str(tmp_path))(data)
    assert out["prob"] is data["prob"]
    assert tifffile.imread(tmp_path / "cells_7_prob.tif").shape == (2, 2, 4)


@pytest.mark.parametrize(
    "prob, names", [(torch.zeros(1, 2, 3, 4), None), (torch.zeros(2, 3, 4), ["only one"])]
)
def test_bad_input(tmp_path, prob, names):
    with pytest.raises(ValueError):
        SaveProbabilityMaps(str(tmp_path), class_names=names)(prob, filename="a.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dtype, step", [("uint8", 1 / 255), ("uint16", 1 / 65535)])
def test_quantised_storage_is_compressed_and_reads_back(tmp_path, dtype, step):
    """The default uint8 (and uint16) maps read back within half a quantisation step, zlib compressed, much smaller
    than float32; the reader returns float32 probabilities in file order."""
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(5, 96, 64)).astype(np.float32))
    prob = logits.softmax(0)
    SaveProbabilityMaps(str(tmp_path), dtype=dtype, postfix="_q")(prob, filename="a.png")
    SaveProbabilityMaps(str(tmp_path), dtype="float32", postfix="_f")(prob, filename="a.png")
    back = read_probability_map(tmp_path / "a_q.tif")
    assert back.dtype == np.float32 and back.shape == (5, 64, 96)
    assert np.abs(back - prob.numpy().transpose(0, 2, 1)).max() <= step / 2 + 1e-7
    assert np.array_equal(read_probability_map(tmp_path / "a_f.tif"), prob.numpy().transpose(0, 2, 1))
    with tifffile.TiffFile(tmp_path / "a_q.tif") as tif:
        assert tif.pages[0].compression == 8 and tif.series[0].dtype == np.dtype(dtype)  # 8: deflate (zlib)
    ratio = (tmp_path / "a_q.tif").stat().st_size / (tmp_path / "a_f.tif").stat().st_size
    assert ratio < (0.5 if dtype == "uint8" else 0.75)  # random probabilities: the worst case for compression


def test_output_name_metadata_names_the_file(tmp_path):
    """The inference pre-flight's unique name (``output_name`` metadata) wins over the file's stem."""
    image = MetaTensor(torch.zeros(1, 4, 2), meta={"filename_or_obj": "/x/cells.tif", "output_name": "cells_tif"})
    SaveProbabilityMapsd(keys="prob", output_dir=str(tmp_path))({"image": image, "prob": _prob(2) / 1000})
    assert [p.name for p in tmp_path.iterdir()] == ["cells_tif_prob.tif"]


def test_bad_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        SaveProbabilityMaps(str(tmp_path), dtype="float16")
