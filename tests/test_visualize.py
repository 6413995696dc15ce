"""Tests for the pictures: overlays, confidence/difficult maps, feature maps (FeatureMapCapture), gallery, curves,
PictureWriter."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from scripts.data.classes import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES, class_palette
from scripts.transforms import DifficultPixelRefine
from scripts.visualize import (
    FeatureMapCapture,
    FeatureMapHook,
    PictureWriter,
    channel_mean,
    confidence_to_rgb,
    difficult_to_grey,
    feature_map_to_rgb,
    grey_image,
    label_to_rgb,
    legend_image,
    overlay_labels,
    write_gallery,
)
from scripts.visualize.curves import load_csv_scalars, load_tensorboard_scalars, main, plot_training_curves

H, W = 4, 6
IMAGE = np.arange(H * W, dtype=np.float32).reshape(H, W) * 10.0  # 0..230, asymmetric
GREY = np.rint(IMAGE * 255.0 / IMAGE.max())  # what the pictures show of it
LEFT = np.zeros((H, W), bool)
LEFT[:, : W // 2] = True  # prediction: membrane (1) on the left half, intracellular (0) on the right


def logits_left_membrane() -> np.ndarray:
    logits = np.zeros((NUM_CLASSES, H, W), np.float32)
    logits[1][LEFT] = 4.0
    logits[0][~LEFT] = 4.0
    return logits


def read(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def tiny_net() -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, features=(4, 4, 4, 4, 4, 4)).eval()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.rows = [], 0

    def handle_starttag(self, tag, attrs):
        self.rows += tag == "tr"
        self.links += [v for k, v in attrs if k in ("src", "href")]


# ---------------------------------------------------------------- overlay, legend


def test_overlay_blend_documented_colours():
    labels = np.where(LEFT, 1, 0)
    out = overlay_labels(IMAGE, labels)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    expected = np.where(
        LEFT[..., None], 0.5 * GREY[..., None] + 0.5 * np.array(CLASS_COLORS[1]), 0.5 * GREY[..., None] + 0.5 * np.array(CLASS_COLORS[0])
    )
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))
    np.testing.assert_array_equal(overlay_labels(IMAGE, labels, alpha=1.0), label_to_rgb(labels))
    np.testing.assert_array_equal(overlay_labels(IMAGE[None], labels, alpha=0.0), np.repeat(GREY[..., None], 3, -1))


def test_legend_has_one_swatch_per_class():
    legend = legend_image(CLASS_NAMES)  # colours: class_palette(5) = CLASS_COLORS
    for colour in CLASS_COLORS:
        assert np.all(legend == np.array(colour, np.uint8), axis=-1).sum() >= 100  # a 16x16 swatch, minus outline


@pytest.mark.parametrize(
    "call",
    [
        lambda: overlay_labels(IMAGE, np.zeros((H, W), int), alpha=1.5),
        lambda: overlay_labels(IMAGE, np.zeros((W, H), int)),
        lambda: label_to_rgb(np.full((2, 2), NUM_CLASSES)),
        lambda: legend_image(("a", "b"), CLASS_COLORS),
        lambda: confidence_to_rgb(np.ones((2, 2)), num_classes=1),
        lambda: confidence_to_rgb(np.ones((2, 2)), cmap="no-such-map"),
        lambda: FeatureMapHook(tiny_net(), "no_such_module"),
        lambda: FeatureMapCapture(tiny_net(), "no_such_module"),
        lambda: FeatureMapCapture(capture="both"),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- confidence, difficult


def test_confidence_scale_and_difficult_mask():
    conf = np.array([[1.0, 0.25], [0.625, 0.25]])
    rgb = confidence_to_rgb(conf, num_classes=4)  # 1/4 -> colormap start, 1 -> end, 0.625 -> middle
    inferno = colormaps["inferno"]
    np.testing.assert_array_equal(rgb[0, 0], np.rint(np.array(inferno(1.0)[:3]) * 255))
    np.testing.assert_array_equal(rgb[0, 1], np.rint(np.array(inferno(0.0)[:3]) * 255))
    np.testing.assert_array_equal(rgb[1, 0], np.rint(np.array(inferno(0.5)[:3]) * 255))
    np.testing.assert_array_equal(difficult_to_grey(conf < 0.5), [[0, 255], [0, 255]])


# ---------------------------------------------------------------- PictureWriter.write


def test_writer_pictures_sizes_and_colours(tmp_path):
    # hand-made probabilities: one class at 0.9 except three pixels at 0.4 -> mean 0.875, those three are difficult
    prob = np.full((NUM_CLASSES, H, W), 0.025, np.float32)
    prob[0] = 0.9
    low = [(0, 0), (2, 5), (3, 1)]
    for r, c in low:
        prob[:, r, c] = 0.15
        prob[1, r, c] = 0.4
    difficult = np.zeros((H, W), bool)
    difficult[tuple(zip(*low))] = True
    label = np.where(LEFT, 1, 0)[None]
    refined, confidence, mask = DifficultPixelRefine(priorities=(1, 3), fallback=0)(prob, return_maps=True)
    writer = PictureWriter(tmp_path, reverse_indexing=False)
    pics = writer.write(IMAGE[None], prob, label, name="/data/img 1.tif", confidence=confidence, difficult=mask,
                        refined=refined)
    assert set(pics) == {"input", "label", "overlay", "confidence", "difficult", "refined"}
    for rel in pics.values():
        assert rel.startswith("img_1/")
        assert read(tmp_path / rel).shape[:2] == (H, W)
    np.testing.assert_array_equal(read(tmp_path / pics["input"]), GREY)
    np.testing.assert_array_equal(read(tmp_path / pics["difficult"]), np.where(difficult, 255, 0))
    np.testing.assert_array_equal(read(tmp_path / pics["label"]), overlay_labels(IMAGE, label[0]))
    # arg-max: class 1 at the difficult pixels, 0 elsewhere; refined: no confident membrane seed -> fallback 0
    np.testing.assert_array_equal(read(tmp_path / pics["overlay"]), overlay_labels(IMAGE, difficult.astype(int)))
    np.testing.assert_array_equal(read(tmp_path / pics["refined"]), overlay_labels(IMAGE, np.zeros((H, W), int)))
    np.testing.assert_array_equal(
        read(tmp_path / pics["confidence"]), confidence_to_rgb(prob.max(0), num_classes=NUM_CLASSES)
    )


def test_writer_reads_monai_loadimage_in_file_orientation(tmp_path):
    from monai.transforms import EnsureChannelFirst, LoadImage

    Image.fromarray(IMAGE.astype(np.uint8)).save(tmp_path / "asym.png")
    image = EnsureChannelFirst()(LoadImage(image_only=True)(tmp_path / "asym.png"))
    assert tuple(image.shape) == (1, W, H)  # MONAI's reverse indexing: (C, W, H)
    logits = torch.as_tensor(logits_left_membrane()).transpose(1, 2)  # the network's output in the same layout
    writer = PictureWriter(tmp_path / "out")
    pics = writer.write(image, logits, name=image.meta["filename_or_obj"])  # no maps given: input and overlay only
    assert pics == {"input": "asym/input.png", "overlay": "asym/overlay.png"}
    np.testing.assert_array_equal(read(tmp_path / "out" / pics["input"]), GREY)
    overlay = read(tmp_path / "out" / pics["overlay"])
    assert overlay.shape == (H, W, 3)
    left = np.rint(0.5 * GREY[0, 0] + 0.5 * np.array(CLASS_COLORS[1]))  # top-left pixel: membrane tint
    right = np.rint(0.5 * GREY[0, W - 1] + 0.5 * np.array(CLASS_COLORS[0]))
    np.testing.assert_array_equal(overlay[0, 0], left)
    np.testing.assert_array_equal(overlay[0, W - 1], right)
    np.testing.assert_array_equal(overlay, overlay_labels(IMAGE, LEFT.astype(int)))


def test_class_palette_any_count():
    assert class_palette(3) == CLASS_COLORS[:3]
    assert class_palette(5) == CLASS_COLORS
    many = class_palette(12)
    assert many[:5] == CLASS_COLORS and len(set(many)) == 12
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in many)
    with pytest.raises(ValueError):
        class_palette(0)


@pytest.mark.parametrize("num_classes", [3, 7])
def test_writer_other_class_counts(tmp_path, num_classes):
    names = [f"class{i}" for i in range(num_classes)]
    prob = np.full((num_classes, H, W), 0.1 / (num_classes - 1), np.float32)
    prob[num_classes - 1] = 0.9
    writer = PictureWriter(tmp_path, reverse_indexing=False, class_names=names)
    pics = writer.write(IMAGE[None], prob, np.full((1, H, W), num_classes - 1), name="a.png")
    last = np.full((H, W), num_classes - 1)
    np.testing.assert_array_equal(
        read(tmp_path / pics["overlay"]), overlay_labels(IMAGE, last, colors=class_palette(num_classes))
    )
    writer.completed()
    np.testing.assert_array_equal(read(tmp_path / "legend.png"), legend_image(names, class_palette(num_classes)))
    with pytest.raises(ValueError, match="colours"):
        PictureWriter(tmp_path, class_names=names, class_colors=CLASS_COLORS)


def test_writer_label_map_prediction(tmp_path):
    """The prediction as inference.json's postprocessing leaves it: an arg-max label map, (1, H, W) or squeezed."""
    labels = np.where(LEFT, 1, 0)[None].astype(np.float32)
    writer = PictureWriter(tmp_path, reverse_indexing=False)
    pics = writer.write(IMAGE[None], labels)
    assert pics == {"input": "image_0000/input.png", "overlay": "image_0000/overlay.png"}
    np.testing.assert_array_equal(read(tmp_path / pics["overlay"]), overlay_labels(IMAGE, LEFT.astype(int)))
    squeezed = writer.write(IMAGE[None], torch.as_tensor(labels[0], dtype=torch.uint8), name="b.png")
    np.testing.assert_array_equal(read(tmp_path / squeezed["overlay"]), overlay_labels(IMAGE, LEFT.astype(int)))
    with pytest.raises(ValueError, match="same spatial size"):
        writer.write(IMAGE[None], labels, features=np.zeros((1, W, H)))


# ---------------------------------------------------------------- feature maps


def test_feature_hook_leaves_output_unchanged_and_is_removed():
    net = tiny_net()
    x = torch.rand(2, 1, 16, 32)
    with torch.no_grad():
        before = net(x)
        captured = {}
        handle = net.final_conv.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
        during = net(x)
        handle.remove()
        with FeatureMapHook(net, "final_conv") as hook:
            hooked = net(x)
        after = net(x)
    torch.testing.assert_close(during, before, rtol=0, atol=0)
    torch.testing.assert_close(hooked, before, rtol=0, atol=0)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert len(net.final_conv._forward_hooks) == 0
    fm = channel_mean([hook.features["final_conv"]], x.shape[2:])
    assert fm.shape == (2, 1, 16, 32)
    torch.testing.assert_close(fm, captured["x"].mean(dim=1, keepdim=True))


def test_feature_map_colours_blue_to_red():
    rgb = feature_map_to_rgb(np.array([[-3.0, 0.0], [5.0, 1.0]]))
    jet = colormaps["jet"]
    np.testing.assert_array_equal(rgb[0, 0], np.rint(np.array(jet(0.0)[:3]) * 255))  # min: dark blue
    np.testing.assert_array_equal(rgb[1, 0], np.rint(np.array(jet(1.0)[:3]) * 255))  # max: dark red
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[1, 0, 0] > rgb[1, 0, 2]


class SecondPass(torch.nn.Module):
    """The feature-map picture as v0.7.1 computed it: a second pass through the inferer of a network whose output
    is the channel mean of the hooked features (the reference for :class:`FeatureMapCapture`)."""

    def __init__(self, network, names):
        super().__init__()
        self.module, self.names = network, names

    def forward(self, x):
        with FeatureMapHook(self.module, self.names) as hook:
            out = self.module(x)
        return channel_mean([hook.features[n] for n in self.names], out.shape[2:])


def evaluate(net, inferer, handlers, data, post=None):
    from monai.engines import SupervisedEvaluator

    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=net, inferer=inferer,
                                    val_handlers=handlers, postprocessing=post, decollate=False)
    evaluator.run()
    return evaluator.state.output


@pytest.mark.parametrize("inferer_name", ["overlap_tile", "sliding_window"])
def test_feature_capture_equals_a_second_pass_and_leaves_the_prediction_alone(inferer_name):
    """One pass: the captured map equals the second pass v0.7.1 made through the same inferer, tile by tile (several
    tiles here), and the prediction equals the network's alone, metadata included (same layout: exactly)."""
    from monai.data import MetaTensor
    from monai.inferers import SlidingWindowInferer

    from scripts.inferers import OverlapTileInferer
    from scripts.networks import UNet, XNet

    torch.manual_seed(0)
    nets = {"overlap_tile": XNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, features=(4, 8, 8)).eval(),
            "sliding_window": UNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, features=(4, 8, 8)).eval()}
    inferers = {"overlap_tile": OverlapTileInferer(roi_size=16, sw_batch_size=3),
                "sliding_window": SlidingWindowInferer(roi_size=(32, 32), overlap=0.5, mode="gaussian")}
    net, inferer = nets[inferer_name], inferers[inferer_name]
    image = MetaTensor(torch.rand(2, 1, 48, 40), meta={"filename_or_obj": ["a.png", "b.png"]})
    image.is_batch = True
    data = [{"image": image, "label": torch.zeros(2, 1, 48, 40)}]
    plain = evaluate(net, inferer, [], data)
    captured = evaluate(net, inferer, [FeatureMapCapture()], data)
    with torch.no_grad():
        reference = inferer(image, SecondPass(net, ["head1", "head2"] if inferer_name == "overlap_tile" else ["head"]))
    assert captured["features"].shape == (2, 1, 48, 40) and captured["pred"].shape == (2, NUM_CLASSES, 48, 40)
    assert torch.equal(captured["features"], torch.as_tensor(reference))
    assert torch.equal(torch.as_tensor(captured["pred"]), torch.as_tensor(plain["pred"]))
    assert captured["pred"].meta["filename_or_obj"] == plain["pred"].meta["filename_or_obj"]
    assert captured["pred"].is_batch == plain["pred"].is_batch
    assert all(not m._forward_hooks for m in net.modules()), "the hooks must be removed after the forward pass"


def test_feature_capture_skips_the_memory_probe():
    """The overlap-tile inferer's memory probe runs inside the first forward pass; the capture must not change it
    (else the tiling plan, and so the prediction, could depend on the pictures)."""
    from scripts.inferers import OverlapTileInferer
    from scripts.networks import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, features=(4, 8, 8)).eval()
    data = [{"image": torch.rand(1, 1, 300, 260), "label": torch.zeros(1, 1, 300, 260)}]
    with_capture, without = OverlapTileInferer(memory_budget_mb=64), OverlapTileInferer(memory_budget_mb=64)
    out = evaluate(net, with_capture, [FeatureMapCapture()], data)
    evaluate(net, without, [], data)
    assert "features" in out
    assert list(with_capture._planner._probe_cache.values()) == list(without._planner._probe_cache.values())
    assert with_capture.geometry(net, (300, 260), 1) == without.geometry(net, (300, 260), 1)


def test_pictures_without_feature_maps_for_a_torchscript_network(tmp_path, caplog):
    """A TorchScript module takes no forward hooks: one warning, and every picture but features.png."""
    from scripts.networks import UNet

    torch.manual_seed(0)
    net = torch.jit.script(UNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, features=(4, 8, 8)).eval())
    data = [{"image": torch.rand(1, 1, 32, 24), "label": torch.zeros(1, 1, 32, 24)}]
    writer = PictureWriter(tmp_path, reverse_indexing=False)
    with caplog.at_level("WARNING"):
        out = evaluate(net, None, [FeatureMapCapture(), writer], data)
    assert "takes no forward hooks" in caplog.text and "features" not in out
    assert set(writer.rows[0][1]) == {"input", "overlay", "label"}


# ---------------------------------------------------------------- gallery, evaluator


def check_gallery(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text())
    assert parser.links
    for link in parser.links:
        assert not link.startswith(("/", "file:", "http")), link
        assert (index.parent / link).is_file(), link
    return parser


def test_gallery_links_exist(tmp_path):
    (tmp_path / "a").mkdir()
    write_png = Image.fromarray(np.zeros((2, 3), np.uint8))
    write_png.save(tmp_path / "a" / "input.png")
    index = write_gallery(tmp_path, [("a", {"input": "a/input.png"}), ("b", {})])
    parser = check_gallery(index)
    assert parser.rows == 3  # header + 2 images
    assert parser.links == ["a/input.png", "a/input.png"]  # link + thumbnail
    with pytest.raises(ValueError, match="outside"):
        write_gallery(tmp_path / "a", [("a", {"input": tmp_path / "x.png"})])


def test_picture_writer_in_supervised_evaluator(tmp_path):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.transforms import Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    from scripts.transforms import DifficultPixelRefined

    rng = np.random.default_rng(0)
    data = []
    for i in range(2):  # non-square: 16 rows x 32 columns
        Image.fromarray(rng.integers(0, 255, (16, 32), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, NUM_CLASSES, (16, 32), dtype=np.uint8)).save(tmp_path / f"lab{i}.png")
        data.append({"image": str(tmp_path / f"img{i}.png"), "label": str(tmp_path / f"lab{i}.png")})
    pre = Compose([LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"]), ScaleIntensityd("image")])
    post = Compose([  # as in inference.json: the maps are computed once, before the arg-max
        Activationsd(keys="pred", softmax=True),
        DifficultPixelRefined(keys="pred", refined_keys="refined", confidence_keys="confidence",
                              difficult_keys="difficult", priorities=(1, 3), fallback=0),
        AsDiscreted(keys="pred", argmax=True),
    ])
    out_dir = tmp_path / "pictures"
    writer = PictureWriter(out_dir)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(data, pre), batch_size=2),
        network=tiny_net(), postprocessing=post, val_handlers=[FeatureMapCapture(), writer],
    )
    evaluator.run()
    evaluator.run()  # a second run starts a fresh gallery
    parser = check_gallery(out_dir / "index.html")
    assert parser.rows == 3
    for i in range(2):
        for kind in ("input", "label", "overlay", "confidence", "difficult", "refined", "features"):
            assert read(out_dir / f"img{i}" / f"{kind}.png").shape[:2] == (16, 32), kind
        # file orientation, through LoadImaged's (C, W, H): pictures match the files
        image, label = read(tmp_path / f"img{i}.png"), read(tmp_path / f"lab{i}.png")
        np.testing.assert_array_equal(read(out_dir / f"img{i}" / "input.png"), grey_image(image))
        np.testing.assert_array_equal(read(out_dir / f"img{i}" / "label.png"), overlay_labels(image, label))
    assert (out_dir / "legend.png").is_file()


# ---------------------------------------------------------------- curves


def write_tb_log(logdir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    train, val = SummaryWriter(str(logdir)), SummaryWriter(str(logdir))
    for it in range(1, 13):  # 3 epochs x 4 iterations, like the trainer's TensorBoardStatsHandler
        train.add_scalar("train_loss", 1.0 / it, it)
    for epoch in range(1, 4):  # like the evaluator's: metric per trainer epoch
        val.add_scalar("val_mean_iou", 0.2 * epoch, epoch)
    train.close()
    val.close()


def test_curves_from_tensorboard_and_csv(tmp_path):
    write_tb_log(tmp_path / "logs")
    scalars = load_tensorboard_scalars(tmp_path / "logs")
    assert set(scalars) == {"train_loss", "val_mean_iou"}
    np.testing.assert_array_equal(scalars["train_loss"][0], np.arange(1, 13))
    np.testing.assert_allclose(scalars["val_mean_iou"][1], [0.2, 0.4, 0.6], rtol=1e-6)
    out = main(["--logdir", str(tmp_path / "logs"), "--out", str(tmp_path / "curves.png")])
    assert read(out).shape[:2] == (320, 900)  # 2 panels: figsize (9, 3.2) at 100 dpi
    (tmp_path / "h.csv").write_text("epoch,train_loss,val_mean_iou\n1,0.5,0.1\n2,0.25,\n3,0.125,0.3\n")
    csv_scalars = load_csv_scalars(tmp_path / "h.csv")
    np.testing.assert_array_equal(csv_scalars["val_mean_iou"][0], [1, 3])
    out = plot_training_curves(csv_scalars, tmp_path / "c.png", tags=["val_mean_iou"])
    assert read(out).shape[:2] == (320, 450)
    with pytest.raises(ValueError, match="available tags"):
        plot_training_curves(csv_scalars, tmp_path / "c.png", tags=["nope"])
    with pytest.raises(FileNotFoundError):
        load_tensorboard_scalars(tmp_path / "empty")
