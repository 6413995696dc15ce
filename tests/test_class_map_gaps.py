"""`prepare folders --class-map` refuses class indices with a gap, naming the unused indices and a renumbering."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "class_map, missing, fix",
    [
        ("0:0,128:1,255:5", "2, 3, 4", "0:0,128:1,255:2"),
        ("128:1,255:2", "0", "128:0,255:1"),
    ],
)
def test_a_gap_in_the_class_indices_is_refused_with_a_renumbering(class_map, missing, fix):
    from scripts.data import parse_class_map

    with pytest.raises(ValueError) as err:
        parse_class_map(class_map)
    assert f"leaves class index(es) {missing} without a label value" in str(err.value)
    assert f'--class-map "{fix}"' in str(err.value)
    assert parse_class_map(fix)  # the suggested map is accepted


def test_several_values_may_share_a_class():
    from scripts.data import parse_class_map

    assert parse_class_map("0:0,64:0,128:1,255:1") == {0: 0, 64: 0, 128: 1, 255: 1}


def test_the_command_line_refuses_it_in_one_line(tmp_path, capsys):
    from scripts.data.prepare import main

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    status = main(["folders", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                   "--out", str(tmp_path / "out"), "--class-map", "0:0,128:1,255:5"])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any("leaves class index(es) 2, 3, 4" in line for line in err), err
    assert not (tmp_path / "out").exists()
