"""Networks record the configuration that built them; build_network rebuilds an identical network from it."""

import json

import pytest
import torch

from scripts.networks import DoubleUNet, EnsembleUNet, UNet, XNet, build_network, network_config

CASES = [
    (UNet, {"features": [4, 8, 16], "padding": "valid", "batch_norm": True, "dropout": 0.1}),
    (XNet, {"features": [4, 8, 16], "skip": "crossed", "out_channels": 3}),
    (DoubleUNet, {"features": [4, 8], "in_channels": 3}),
    (EnsembleUNet, {"features": [4, 8], "batch_norm": True}),
]


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_round_trip(cls, kwargs):
    net = cls(spatial_dims=2, **kwargs)
    cfg = network_config(net)
    assert cfg["_target_"] == f"scripts.networks.{cls.__name__}"
    for key, value in kwargs.items():
        assert cfg[key] == value
    assert json.loads(json.dumps(cfg)) == cfg  # plain types only
    rebuilt = build_network(cfg)
    assert type(rebuilt) is cls
    own, other = net.state_dict(), rebuilt.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in other.items()}
    assert network_config(rebuilt) == cfg


def test_tuple_features_become_a_list():
    assert network_config(UNet(features=(4, 8)))["features"] == [4, 8]


def test_errors():
    with pytest.raises(TypeError, match="records no `init_args`"):
        network_config(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="_target_"):
        build_network({"features": [4, 8]})
    with pytest.raises(ValueError, match="not a network"):
        build_network({"_target_": "scripts.networks.network_config"})


def test_model_info_round_trip_and_mismatch(tmp_path):
    from ignite.handlers import Checkpoint

    from scripts.networks import ModelInfo

    net = UNet(features=[4, 8, 16], batch_norm=True)
    info = ModelInfo(net, class_names=["a", "b"], intensity_max=255, patch_size=(64, 64))
    path = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "model_info": info.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model_info"]["network"]["features"] == [4, 8, 16]
    assert ckpt["model_info"]["class_names"] == ["a", "b"] and ckpt["model_info"]["patch_size"] == [64, 64]

    same = UNet(features=[4, 8, 16], batch_norm=True)
    same_info = ModelInfo(same)
    Checkpoint.load_objects({"model_info": same_info, "model": same}, ckpt)
    assert same_info.loaded["intensity_max"] == 255
    for a, b in zip(net.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)

    other = UNet(features=[4, 8, 32], batch_norm=True, padding="valid")
    with pytest.raises(ValueError, match=r"features: \[4, 8, 16\] \(saved\) vs \[4, 8, 32\] \(now\).*padding"):
        Checkpoint.load_objects({"model_info": ModelInfo(other, source=str(path)), "model": other}, ckpt)


def test_other_networks_record_their_class_and_load_from_their_config(tmp_path):
    """A network outside scripts.networks (MONAI's BasicUNet in an experiment): model_info records its class only;
    consumers build it from their own config and load strictly; another class is refused by ModelInfo."""
    from monai.networks.nets import BasicUNet

    from scripts.networks import ModelInfo, describe_network, is_buildable, network_from_checkpoint

    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    info = ModelInfo(net).state_dict()
    assert info["network"] == {"_target_": "monai.networks.nets.basic_unet.BasicUNet"}
    assert not is_buildable(info["network"]) and is_buildable(describe_network(UNet(features=[4, 8])))
    path = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "model_info": info}, path)
    other = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    loaded = network_from_checkpoint(str(path), default=other)
    assert loaded is other
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="_target_"):
        ModelInfo(UNet(features=[4, 8])).load_state_dict(info)


def test_recorded_networks_are_rebuilt_from_their_model_info(tmp_path):
    """A network of another library built through recorded_network (the BasicUNet experiment) records its config:
    network_from_checkpoint rebuilds it whatever the config's default network (evaluate.json's is networks#xnet)."""
    from monai.networks.nets import BasicUNet

    from scripts.networks import ModelInfo, XNet, is_buildable, network_from_checkpoint, recorded_network

    net = recorded_network("BasicUNet", spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    assert isinstance(net, BasicUNet)
    info = ModelInfo(net).state_dict()
    assert info["network"] == {"_target_": "scripts.networks.recorded_network", "target": "BasicUNet",
                               "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]}
    assert is_buildable(info["network"])
    path = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "model_info": info}, path)
    loaded = network_from_checkpoint(str(path), default=XNet(features=[4, 8]))
    assert isinstance(loaded, BasicUNet) and loaded.state_dict().keys() == net.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(TypeError, match="not a plain value"):
        recorded_network("BasicUNet", spatial_dims=2, act=torch.nn.ReLU())
