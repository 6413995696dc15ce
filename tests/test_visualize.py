"""Tests for the pictures: overlays, confidence/difficult maps, feature maps, gallery, curves, PictureWriter."""

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
    FeatureMapHook,
    MeanFeatureMap,
    PictureWriter,
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
        lambda: PictureWriter("x", feature_maps=True),
        lambda: PictureWriter("x", refiner=DifficultPixelRefine(softmax=True)),
        lambda: FeatureMapHook(tiny_net(), "no_such_module"),
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
    writer = PictureWriter(tmp_path, reverse_indexing=False, refiner=DifficultPixelRefine(priorities=(1, 3), fallback=0))
    pics = writer.write(IMAGE[None], prob, label, name="/data/img 1.tif")
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
    writer = PictureWriter(tmp_path / "out", confidence=False, difficult=False, refined=False)
    pics = writer.write(image, logits, name=image.meta["filename_or_obj"])
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
    writer = PictureWriter(tmp_path, reverse_indexing=False, class_names=names,
                           refiner=DifficultPixelRefine(priorities=1, fallback=0))
    pics = writer.write(IMAGE[None], prob, np.full((1, H, W), num_classes - 1), name="a.png")
    last = np.full((H, W), num_classes - 1)
    np.testing.assert_array_equal(
        read(tmp_path / pics["overlay"]), overlay_labels(IMAGE, last, colors=class_palette(num_classes))
    )
    writer.completed()
    np.testing.assert_array_equal(read(tmp_path / "legend.png"), legend_image(names, class_palette(num_classes)))
    with pytest.raises(ValueError, match="colours"):
        PictureWriter(tmp_path, class_names=names, class_colors=CLASS_COLORS)


def test_writer_one_channel_prediction(tmp_path):
    labels = np.where(LEFT, 1, 0)[None].astype(np.float32)
    pics = PictureWriter(tmp_path, confidence=False, difficult=False, refined=False, reverse_indexing=False).write(
        IMAGE[None], labels
    )
    assert pics["overlay"] == "image_0000/overlay.png"
    np.testing.assert_array_equal(read(tmp_path / pics["overlay"]), overlay_labels(IMAGE, LEFT.astype(int)))
    with pytest.raises(ValueError, match="one channel"):
        PictureWriter(tmp_path, reverse_indexing=False).write(IMAGE[None], labels)


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
        wrapped = MeanFeatureMap(net, "final_conv")
        fm = wrapped(x)
        after = net(x)
    torch.testing.assert_close(during, before, rtol=0, atol=0)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert len(net.final_conv._forward_hooks) == 0
    assert fm.shape == (2, 1, 16, 32)
    torch.testing.assert_close(fm, captured["x"].mean(dim=1, keepdim=True))


def test_feature_map_colours_blue_to_red():
    rgb = feature_map_to_rgb(np.array([[-3.0, 0.0], [5.0, 1.0]]))
    jet = colormaps["jet"]
    np.testing.assert_array_equal(rgb[0, 0], np.rint(np.array(jet(0.0)[:3]) * 255))  # min: dark blue
    np.testing.assert_array_equal(rgb[1, 0], np.rint(np.array(jet(1.0)[:3]) * 255))  # max: dark red
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[1, 0, 0] > rgb[1, 0, 2]


def test_writer_feature_maps_through_inferer(tmp_path):
    from monai.inferers import SlidingWindowInferer

    net = tiny_net()
    image = torch.rand(1, 48, 32)  # MONAI layout (C, W, H): pictures are 32 x 48
    writer = PictureWriter(
        tmp_path, overlay=False, confidence=False, difficult=False, refined=False, feature_maps=True,
        network=net, inferer=SlidingWindowInferer(roi_size=(32, 32), overlap=0.5), feature_module="final_conv",
    )
    with torch.no_grad():
        pred = net(image[None])[0]
    pics = writer.write(image, pred)
    features = read(tmp_path / pics["features"])
    assert features.shape == (32, 48, 3)
    jet = np.rint(np.array([colormaps["jet"](v)[:3] for v in (0.0, 1.0)]) * 255)
    for colour in jet:  # the normalised map reaches both ends of blue -> red
        assert np.all(features == colour, axis=-1).any()


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
    from monai.transforms import AsDiscreted, Compose, CopyItemsd, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    rng = np.random.default_rng(0)
    data = []
    for i in range(2):  # non-square: 16 rows x 32 columns
        Image.fromarray(rng.integers(0, 255, (16, 32), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, NUM_CLASSES, (16, 32), dtype=np.uint8)).save(tmp_path / f"lab{i}.png")
        data.append({"image": str(tmp_path / f"img{i}.png"), "label": str(tmp_path / f"lab{i}.png")})
    pre = Compose([LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"]), ScaleIntensityd("image")])
    post = Compose([CopyItemsd(keys="pred", names="logits"), AsDiscreted(keys="pred", argmax=True)])
    out_dir = tmp_path / "pictures"
    writer = PictureWriter(out_dir, pred_key="logits", softmax=True, feature_maps=True, network=tiny_net(),
                           feature_module="final_conv")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(data, pre), batch_size=2),
        network=writer.feature_net.module, postprocessing=post, val_handlers=[writer],
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
