"""Helpers for the MONAI Label tests: a trained model, the app copy, a studies folder, the sample app, the server.

Everything here runs on the CPU, offline, in seconds. The model is TRAINED (one tiny epoch through train.json
with ``features`` 4..16, not the configs' default width) in a source bundle; the app copy is made by the manual's
own step (``tools/monailabel_app.py``), and its configs get no width override: only the training schedule and the
tile size are shrunk (a user's session settings), so the network comes from ``model.pt``'s ``model_info``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle"
MODEL_NAME = "cellseg_xnet"

#: The width the model is trained with (the configs' default is 32..512): never written into the app copy.
TRAINED_FEATURES = [4, 8, 16]
#: Tile size written into the copy's configs (both inference.json and train.json): 64x64 tiles for 64x64 images.
TINY_TILES = {"patch_size": [64, 64]}
TINY_TRAIN = {
    "epochs": 1,
    "batch_size": 2,
    "val_batch_size": 2,
    "cache_workers": 0,
    "show_progress": False,
}

#: Datastore extensions for the server: MONAI Label's defaults list *.tif but not *.tiff.
DATASTORE_EXT = '["*.png", "*.jpg", "*.tif", "*.tiff"]'


def class_names() -> dict[str, int]:
    """``{name: id}`` from metadata.json's output ``channel_def``, as MONAI Label reports labels."""
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    pred = next(iter(meta["network_data_format"]["outputs"].values()))
    return {v.lower(): int(k) for k, v in pred["channel_def"].items()}


def _patch(path: Path, values: dict) -> None:
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config, indent=4) + "\n")


def train_source_bundle(dst: Path) -> Path:
    """A source bundle (copies of ``bundle/configs`` and ``bundle/scripts``) with a ``models/model.pt`` trained
    for one tiny epoch through train.json with ``features`` :data:`TRAINED_FEATURES`."""
    dst = Path(dst)
    shutil.copytree(BUNDLE / "configs", dst / "configs")
    shutil.copytree(BUNDLE / "scripts", dst / "scripts", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(BUNDLE / "LICENSE", dst / "LICENSE")
    overrides = {"bundle_root": str(dst), "features": TRAINED_FEATURES, **TINY_TILES, **TINY_TRAIN,
                 "synthetic": {"num_train": 4, "num_val": 2, "num_test": 1, "size": 64, "seed": 0}}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(dst / "configs" / "train.json")]
    for k, v in overrides.items():
        cmd += [f"--{k}", v if isinstance(v, str) else repr(v)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, cwd=dst, capture_output=True, text=True, timeout=600, env=env)
    model = dst / "models" / "model.pt"
    if proc.returncode != 0 or not model.is_file():
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ensure_model_info(model, TRAINED_FEATURES)
    for resumable in (dst / "models").glob("checkpoint_epoch=*.pt"):
        ensure_model_info(resumable, TRAINED_FEATURES)
    return dst


def ensure_model_info(path: Path, features: list[int]) -> None:
    """Training wrote the checkpoint with ``model_info`` recording the width it was trained with."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(ckpt.get("model_info"), dict), f"{path} carries no model_info: {sorted(ckpt)}"
    assert ckpt["model_info"]["network"]["features"] == list(features)


def make_app_copy(source: Path, app: Path, name: str = MODEL_NAME, with_model: bool = True,
                  class_names: list[str] | None = None, shipped_model: str | None = None) -> Path:
    """The manual's step 2: ``python tools/monailabel_app.py --app <app> --name <name> --bundle <source>
    [--class_names ...] [--shipped_model ...]``, then the session settings a user would give (tiny schedule and
    tiles, no width)."""
    import importlib.util

    app = Path(app)
    if not (app / "main.py").is_file():  # the in-process tests need no real app, only its model folder
        app.mkdir(parents=True, exist_ok=True)
        (app / "main.py").write_text("# placeholder: tests/monailabel run the tasks in process\n")
    spec = importlib.util.spec_from_file_location("monailabel_app", REPO / "tools" / "monailabel_app.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dst = tool.make_app_copy(app, name, Path(source), class_names=class_names, shipped_model=shipped_model)
    if not with_model:
        (dst / "models" / "model.pt").unlink()
    _patch(dst / "configs" / "inference.json", TINY_TILES)
    _patch(dst / "configs" / "train.json", {**TINY_TILES, **TINY_TRAIN})
    return dst


def build_network(bundle_dir: Path):
    """The copy's ``network_def`` from inference.json, built with the copy's own ``scripts`` package."""
    from monai.bundle import ConfigParser

    with bundle_scripts(bundle_dir):
        parser = ConfigParser()
        parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle_dir)
        return parser.get_parsed_content("network_def", instantiate=True)


class bundle_scripts:
    """Context: import ``scripts`` from ``bundle_dir`` (as MONAI Label does), restoring ``sys.path`` afterwards."""

    def __init__(self, bundle_dir: Path):
        self.path = str(bundle_dir)

    def __enter__(self):
        sys.path.insert(0, self.path)
        _unload_scripts()

    def __exit__(self, *exc):
        sys.path.remove(self.path)
        _unload_scripts()


def _unload_scripts() -> None:
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


def load_weights(path: Path) -> dict:
    """The network state dict in a model.pt: bare (ignite's one-object checkpoint) or under ``"model"``."""
    import torch

    ckpt = torch.load(path, map_location="cpu")
    return ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt


def synthetic_pair(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic EM-like ``(image, label)`` pair, ``uint8 (H, W)``, from the bundle's generator."""
    with bundle_scripts(BUNDLE):
        from scripts.data import make_sample

        return make_sample(shape, seed=seed)


def write_image(path: Path, array: np.ndarray) -> Path:
    """Write a 2D ``uint8`` array as PNG or TIFF by the file's extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    else:
        from PIL import Image

        Image.fromarray(array).save(path)
    return path


def read_image(path_or_bytes) -> np.ndarray:
    """Read a 2D label image (PNG or TIFF, from a path or bytes) as an ``(H, W)`` array."""
    import io

    from PIL import Image

    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        import tifffile

        return np.asarray(tifffile.imread(io.BytesIO(data)))
    return np.asarray(Image.open(io.BytesIO(data)))


def make_studies(root: Path, labelled: int = 5, size: int = 64, label_map=None) -> dict[str, tuple[int, int]]:
    """A MONAI Label studies folder: ``labelled`` PNG images with final labels, plus unlabelled images of other
    shapes and formats (a non-square PNG, a .tif and a .tiff). ``label_map``: the label value each of the bundle's
    classes becomes (e.g. ``[0, 1, 0, 0, 0]``: membrane vs the rest). Returns ``{image file name: (H, W)}``."""
    root = Path(root)
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(labelled):
        image, label = synthetic_pair((size, size), seed=100 + i)
        if label_map is not None:
            label = np.asarray(label_map, dtype=np.uint8)[label]
        write_image(root / f"cells_{i:02d}.png", image)
        write_image(root / "labels" / "final" / f"cells_{i:02d}.png", label)
        shapes[f"cells_{i:02d}.png"] = image.shape
    for name, shape, seed in (("wide.png", (64, 96), 200), ("tall.tif", (96, 64), 201), ("square.tiff", (80, 80), 202)):
        image, _ = synthetic_pair(shape, seed=seed)
        write_image(root / name, image)
        shapes[name] = image.shape
    return shapes


def download_app(python: str, out_dir: Path, env: dict | None = None) -> Path:
    """``monailabel apps --download --name monaibundle --output out_dir`` (copies the app from the wheel, offline)."""
    cmd = [python, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    app = Path(out_dir) / "monaibundle"
    if proc.returncode != 0 or not (app / "main.py").is_file():
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(python: str, app: Path, studies: Path, port: int, model: str = MODEL_NAME) -> list[str]:
    """The documented ``monailabel start_server`` line (as ``python -m monailabel.main``: same entry point)."""
    return [
        python, "-m", "monailabel.main", "start_server",
        "--app", str(app),
        "--studies", str(studies),
        "--conf", "models", model,
        "--conf", "zoo_source", "local",
        "--conf", "sam2", "false",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


class Server:
    """A ``monailabel start_server`` process in its own process group, with a log file and small HTTP helpers."""

    def __init__(self, cmd: list[str], env: dict, log_path: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/info/", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        raise AssertionError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 300):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def get_json(self, path: str, timeout: float = 60):
        status, _, data = self.request("GET", path, timeout=timeout)
        assert status == 200, f"GET {path}: HTTP {status}: {data[:2000]!r}\n{self.log_tail()}"
        return json.loads(data)

    def post_json(self, path: str, payload: dict, timeout: float = 300):
        body = json.dumps(payload).encode()
        status, _, data = self.request("POST", path, body, {"Content-Type": "application/json"}, timeout=timeout)
        assert status == 200, f"POST {path}: HTTP {status}: {data[:2000]!r}\n{self.log_tail()}"
        return json.loads(data)

    def post_file(self, path: str, field: str, filename: str, content: bytes, timeout: float = 300):
        boundary = "----cellsegtest" + os.urandom(8).hex()
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", path, body, headers, timeout=timeout)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the whole process group (server and any training subprocess), SIGKILL after ``grace`` s."""
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            # whatever is left in the group (e.g. a training subprocess that ignored SIGTERM)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        finally:
            self._log.close()


@contextlib.contextmanager
def serve_app_copy(root: Path, source: Path, startup_timeout: float, more_models: dict | None = None, label_map=None):
    """A real ``monailabel start_server`` on 127.0.0.1 serving the app copy of ``source`` (``make_app_copy``) with
    a studies folder (``make_studies``, its ``label_map``), under ``root``; ``more_models``: ``{name: options}``,
    more copies of ``source`` served too, made with those options of the tool (``class_names``,
    ``shipped_model``). Yields the :class:`Server` (``bundle``, ``bundles`` (by model name), ``studies`` and
    ``shapes`` set) and stops it whatever happens."""
    root = Path(root)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               MONAI_LABEL_DATASTORE_FILE_EXT=DATASTORE_EXT, MONAI_LABEL_SESSION_PATH=str(root / "sessions"))
    app = download_app(sys.executable, root / "apps", env)
    bundles = {MODEL_NAME: make_app_copy(source, app)}
    for name, options in (more_models or {}).items():
        bundles[name] = make_app_copy(source, app, name, **options)
    studies = root / "studies"
    shapes = make_studies(studies, label_map=label_map)
    port = free_port()
    srv = Server(server_command(sys.executable, app, studies, port, ",".join(bundles)), env, root / "server.log", port)
    try:
        srv.wait_ready(startup_timeout)
        srv.bundle, srv.bundles, srv.studies, srv.shapes = bundles[MODEL_NAME], bundles, studies, shapes
        yield srv
    finally:
        srv.stop()
