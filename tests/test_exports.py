"""Exports and bundle checks through ``monai.bundle``: TorchScript (``ckpt_export``) and ONNX (``onnx_export``) of
every network ``inference.json`` offers, each compared with the eager model in eval mode, ``verify_net_in_out``
(2D, same and valid padding) and ``verify_metadata`` against the MONAI metadata schema.

The functions are called in-process (they are what ``python -m monai.bundle <command>`` runs, with the same
arguments) so that the whole module costs seconds; ``tests/test_packaging.py`` runs ``ckpt_export`` and ``run``
through the command line. Networks are tiny (features 4, 8, 16: two poolings).

ONNX: MONAI's ``onnx_export`` is used with ``use_trace=True`` and ``converter_kwargs={"dynamo": False,
"opset_version": 17, ...}``. torch >= 2.9 defaults to the dynamo exporter, which needs ``onnxscript``; and the
networks cannot go through the scripted ONNX path. The graph is exported with dynamic batch and spatial axes: the
same-padding networks' internal pad-to-a-multiple step records its pad amounts from the input's size when traced
(``scripts.networks.blocks.pad_to_multiple``), so the ONNX model takes other sizes than the traced one, also sizes
off the pooling grid (checked below against the eager model).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, onnx_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata

from bundle_runner import CONFIGS, REPO

#: Expected noise: torch 2.13 deprecates TorchScript and the legacy (traced) ONNX exporter; the trace warnings are the
#: padding's size tests (pad or not, reflect or replicate), which the traced graph fixes as at the traced size.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
]

INFERENCE = str(CONFIGS / "inference.json")
METADATA = str(CONFIGS / "metadata.json")
SCHEMA = REPO / "tools" / "schemas" / "meta_schema_20240725.json"  # shipped (MONAI's, Apache-2.0)
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
FEATURES = [4, 8, 16]
OPSET = 17

#: (network key in inference.json's ``networks``, padding); Double/Ensemble U-Net are same-padding only.
CASES = [("unet", "same"), ("xnet", "same"), ("double_unet", "same"), ("ensemble_unet", "same"),
         ("unet", "valid"), ("xnet", "valid")]
IDS = [f"{n}-{p}" for n, p in CASES]
#: Tile sizes for the exports: any multiple of 4 in same mode; valid mode takes 44 + 4k with two poolings.
TILE = {"same": 64, "valid": 48}


def overrides(network: str, padding: str) -> dict:
    """Config overrides selecting a tiny network, as passed on the command line (``--network_def ...``)."""
    return {"network_def": f"@networks#{network}", "features": FEATURES, "padding": padding}


def build_network(network: str, padding: str) -> torch.nn.Module:
    """The network ``inference.json`` builds with these overrides, with non-trivial weights and BatchNorm
    statistics (so that eval mode differs from training mode), in eval mode."""
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(overrides(network, padding))
    net = parser.get_parsed_content("network_def")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def trained(request, tmp_path_factory):
    """``(network, padding, eager model, folder holding models/model.pt)``: model.pt is a bare state dict, as
    the key-metric ``CheckpointSaver`` of train.json writes it (see the test below)."""
    network, padding = request.param
    root = tmp_path_factory.mktemp(f"{network}_{padding}")
    (root / "models").mkdir()
    net = build_network(network, padding)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return network, padding, net, root


def test_key_metric_checkpoint_is_a_bare_state_dict(tmp_path):
    """train.json's best-model ``CheckpointSaver`` (``save_dict={"model": network}``, ``key_metric_filename
    "model.pt"``) stores the bare state dict, so ``ckpt_export`` needs no ``--key_in_ckpt``; the resumable
    ``checkpoint_epoch=N.pt`` is nested and needs ``--key_in_ckpt model``."""
    from ignite.engine import Engine, Events
    from monai.handlers import CheckpointSaver

    net = build_network("unet", "same")
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics["val_mean_iou"] = 0.5
        e.state.key_metric_name = "val_mean_iou"  # what SupervisedEvaluator sets for its key metric

    CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt").attach(engine)
    CheckpointSaver(str(tmp_path), {"model": net, "optimizer": torch.optim.SGD(net.parameters(), 0.1)},
                    file_prefix="", save_interval=1, epoch_level=True, n_saved=1).attach(engine)
    engine.run([0], max_epochs=1)
    best = torch.load(tmp_path / "model.pt", map_location="cpu")
    assert set(best) == set(net.state_dict()), "model.pt should be the network's bare state dict"

    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
    for ckpt, key in ((tmp_path / "model.pt", None), (tmp_path / "checkpoint_epoch=1.pt", "model")):
        ts = tmp_path / f"{ckpt.stem}.ts"
        ckpt_export("network_def", filepath=str(ts), ckpt_file=str(ckpt), meta_file=METADATA, config_file=INFERENCE,
                    key_in_ckpt=key, **overrides("unet", "same"))
        torch.testing.assert_close(torch.jit.load(str(ts))(x), expected)


def test_torchscript_export_matches_eager(trained):
    network, padding, net, root = trained
    ts_file = root / "models" / "model.ts"
    ckpt_export("network_def", filepath=str(ts_file), ckpt_file=str(root / "models" / "model.pt"),
                meta_file=METADATA, config_file=INFERENCE, **overrides(network, padding))
    ts, meta, extra = load_net_with_metadata(str(ts_file), more_extra_files=["inference.json"])
    assert meta["version"] == json.loads((CONFIGS / "metadata.json").read_text())["version"]
    assert json.loads(extra["inference.json"])["networks"].keys() >= {"unet", "xnet", "double_unet", "ensemble_unet"}
    assert not ts.training
    # scripted, not traced: any valid size works, including (same mode) sizes the network pads internally
    sizes = [(70, 90), (64, 64)] if padding == "same" else [(48, 48), (44, 52)]
    for h, w in sizes:
        x = torch.rand(2, 1, h, w)
        with torch.no_grad():
            expected, got = net(x), ts(x)
        assert isinstance(got, torch.Tensor), "eval mode returns one tensor, also for X-Net / Double U-Net"
        assert got.shape == expected.shape == (2, 5, net.output_size(h), net.output_size(w))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_eager(trained):
    import onnx
    import onnxruntime as ort

    network, padding, net, root = trained
    tile = TILE[padding]
    onnx_file = root / "models" / "model.onnx"
    onnx_export(
        "network_def", filepath=str(onnx_file), ckpt_file=str(root / "models" / "model.pt"), meta_file=METADATA,
        config_file=INFERENCE, use_trace=True, input_shape=[1, 1, tile, tile],
        converter_kwargs={"dynamo": False, "opset_version": OPSET, "input_names": ["image"], "output_names": ["pred"],
                          "dynamic_axes": {"image": {0: "batch", 2: "y", 3: "x"}, "pred": {0: "batch", 2: "y", 3: "x"}}},
        **overrides(network, padding))
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}.get("", None) == OPSET
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"] and [o.name for o in sess.get_outputs()] == ["pred"]
    # another batch size than the export's, other sizes: same mode also off the pooling grid (padded internally)
    sizes = [(tile, tile), (70, 90), (36, 64)] if padding == "same" else [(tile, tile), (44, 52)]
    for batch, (h, w) in enumerate(sizes, start=2):
        x = torch.rand(batch, 1, h, w)
        with torch.no_grad():
            expected = net(x).numpy()
        (got,) = sess.run(None, {"image": x.numpy()})
        assert got.shape == expected.shape == (batch, 5, net.output_size(h), net.output_size(w))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("network", "padding"), CASES, ids=IDS)
def test_verify_net_in_out(network, padding):
    """Metadata's input ``16*n``: n = 1 (16 x 16) in same mode; in valid mode a valid size is needed (44 + 4k
    with two poolings): ``n=3`` (48) works, or override the metadata's spatial shape."""
    kwargs = overrides(network, padding)
    if padding == "same":
        verify_net_in_out("network_def", meta_file=METADATA, config_file=INFERENCE, device="cpu", **kwargs)
    else:
        verify_net_in_out("network_def", meta_file=METADATA, config_file=INFERENCE, device="cpu", n=3, **kwargs)
        shape_key = "_meta_#network_data_format#inputs#image#spatial_shape"
        verify_net_in_out("network_def", meta_file=METADATA, config_file=INFERENCE, device="cpu",
                          **{**kwargs, shape_key: [44, 52]})
        with pytest.raises(ValueError, match="not a valid input size"):
            verify_net_in_out("network_def", meta_file=METADATA, config_file=INFERENCE, device="cpu", n=1, **kwargs)


def test_verify_net_in_out_catches_wrong_channels():
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out("network_def", meta_file=METADATA, config_file=INFERENCE, device="cpu",
                          **{**overrides("unet", "same"), "num_classes": 3})


@pytest.fixture
def schema():
    """The schema shipped in tools/schemas, unchanged (its md5 is the one the manual's command checks)."""
    import hashlib

    assert hashlib.md5(SCHEMA.read_bytes()).hexdigest() == SCHEMA_MD5
    return SCHEMA


def test_verify_metadata(schema):
    verify_metadata(meta_file=METADATA, filepath=str(schema), hash_val=SCHEMA_MD5)


def test_verify_metadata_catches_missing_field(schema, tmp_path):
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    local = tmp_path / schema.name
    shutil.copy(schema, local)
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(bad), filepath=str(local), hash_val=SCHEMA_MD5)
