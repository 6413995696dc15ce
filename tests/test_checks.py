"""scripts.checks: the one wording of "a positive int" and "one of" that the library's constructors share."""

from __future__ import annotations

from enum import Enum

import numpy as np
import pytest

from scripts.checks import check_option, check_positive_int, is_int, is_positive_number
from scripts.losses import KappaLoss, compute_class_weights
from scripts.networks import UNet, XNet


class Mode(Enum):
    SAME = "same"
    VALID = "valid"


def test_check_positive_int():
    assert check_positive_int("n", 3) == 3
    assert check_positive_int("n", np.int64(2)) == 2  # a NumPy int is an int
    assert check_positive_int("n", None, allow_none=True) is None
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=rf"^n must be a positive int, got {bad!r}\.$"):
            check_positive_int("n", bad)
    with pytest.raises(ValueError, match=r"^n must be a positive int or None, got 0\.$"):
        check_positive_int("n", 0, allow_none=True)


def test_check_option():
    assert check_option("padding", "valid", ("same", "valid")) == "valid"
    assert check_option("padding", "valid", Mode) is Mode.VALID
    with pytest.raises(ValueError, match=r"^padding must be one of \('same', 'valid'\), got 'full'\.$"):
        check_option("padding", "full", ("same", "valid"))
    with pytest.raises(ValueError, match=r"^padding must be one of \('same', 'valid'\), got 'full'\.$"):
        check_option("padding", "full", Mode)
    with pytest.raises(ValueError, match=r"must be one of .*got \[1\]"):  # unhashable: the same message
        check_option("padding", [1], ("same", "valid"))


def test_predicates():
    assert is_int(0) and is_int(np.int32(5), 1) and not is_int(0, 1) and not is_int(True) and not is_int(1.0)
    assert is_positive_number(0.5) and not is_positive_number(0) and not is_positive_number(float("inf"))
    assert not is_positive_number(True)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: UNet(2, 0, 2, features=(4, 8)), "in_channels must be a positive int, got 0"),
        (lambda: UNet(2, 1, 2, features=(4, 8), padding="full"), "padding must be one of"),
        (lambda: XNet(2, 1, 2, features=(4, 8), skip="none!"), "skip must be one of"),
        (lambda: KappaLoss(variant="x"), "variant must be one of"),
        (lambda: compute_class_weights([np.zeros((2, 2), int)], 0), "num_classes must be a positive int, got 0"),
        (lambda: compute_class_weights([np.zeros((2, 2), int)], 2, mode="x"), "mode must be one of"),
    ],
)
def test_call_sites_use_the_shared_wording(build, match):
    with pytest.raises(ValueError, match=match):
        build()
