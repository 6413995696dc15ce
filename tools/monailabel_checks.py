"""Requests a MONAI Label server cannot serve get an HTTP 4xx with a one-line reason, before anything is changed.

``tools/monailabel_app.py`` copies this file into the app as ``lib/cellseg_checks.py`` and appends two lines to the
app's ``main.py`` (``MyApp = with_checks(MyApp)``). MONAI Label 0.8.5 answers these with a bare HTTP 500
"Internal Server Error" (or accepts them):

- ``/infer/<model>``: no such model (404); ``?image=<id>``: no such image in the datastore (404); an uploaded file
  MONAI cannot read as an image, e.g. a ``.txt`` file or a corrupt PNG (415);
- ``PUT /datastore/`` (``upload_image``): an ending the datastore does not list (``MONAI_LABEL_DATASTORE_FILE_EXT``),
  or a file MONAI cannot read as an image (415);
- ``POST /train/<model>`` and ``POST /train/``: no such trainer (404), an unknown parameter such as ``bogus_key``, or
  ``"pretrained": false``, on which MONAI Label 0.8.5 fails (422); the reason names the known parameters.

And a bundle model serves what its ``models/model.pt`` holds (:meth:`RequestChecks.follow_model`, before ``/infer``
and ``/info``): its class names (``model_info``) are the labels, and when the file changes (a ``/train``, which may
have other classes or another width) the network, the transforms and the labels are read again from it. MONAI
Label 0.8.5 reads the labels from ``metadata.json`` at start and reloads only the weights into the network it built
then (a model of other classes would not load into it).

Each answer is FastAPI's ``HTTPException`` (``{"detail": "<reason>"}``), the mechanism the bundle's model errors use
for their 422 (``scripts.networks.checkpoint.ModelError``). The checks run before the request changes anything: an
upload is refused before it is copied into the studies folder, a ``/train`` before its task is created (no
subprocess, nothing archived). The hooks are the app's own methods (``infer``, ``init_datastore``,
``on_init_complete``); ``/train`` starts a subprocess without calling the app with its parameters, so its check is an
ASGI middleware (:class:`TrainRequestCheck`) that ``on_init_complete`` adds to the running server.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import sys
from urllib.parse import unquote

from fastapi import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

__all__ = ["MONAILABEL_TRAIN_KEYS", "RequestChecks", "TrainRequestCheck", "image_problem", "model_labels",
           "with_checks"]

#: ``/train`` request keys that MONAI Label itself adds or reads besides the trainer's ``config()`` options (allowed;
#: a refusal names only the ``config()`` options, the parameters a user sets).
MONAILABEL_TRAIN_KEYS = ("model", "client_id", "bundle_path", "force_multi_gpu", "tracking_run_name")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def image_problem(path: str, shown_as: str) -> str | None:
    """Why MONAI's ``LoadImage`` (what the bundle's inference and training use) cannot read ``path``, in one line
    naming it ``shown_as``; ``None`` when it can."""
    from monai.transforms import LoadImage

    try:
        LoadImage(image_only=True)(path)
    except Exception as e:  # any reader failure: the file is not an image this server can use
        return _one_line(str(e).replace(path, shown_as)) or type(e).__name__
    return None


def _extensions() -> list[str]:
    """The file endings the datastore lists (``MONAI_LABEL_DATASTORE_FILE_EXT``), e.g. ``[".png", ".tif"]``."""
    from monailabel.config import settings

    return [e.lstrip("*") for e in settings.MONAI_LABEL_DATASTORE_FILE_EXT]


def _suffix(path: str) -> str:
    """The endings of a file name from its first dot (MONAI Label's temporary files keep the upload's, e.g. ``.txt``,
    ``.nii.gz``), or ``"no extension"``."""
    name = os.path.basename(path)
    return name[name.index("."):] if "." in name else "no extension"


def _refuse(status: int, detail: str) -> HTTPException:
    logger.warning("refused (HTTP %d): %s", status, detail)
    return HTTPException(status_code=status, detail=detail)


class RequestChecks:
    """Mixin for the app class: the checks of the module docstring (see :func:`with_checks`)."""

    def infer(self, request, datastore=None):
        model, image = request.get("model"), request.get("image")
        if model not in self._infers:
            raise _refuse(404, f"no model '{model}' on this server; its models: {', '.join(sorted(self._infers))}.")
        if isinstance(image, str) and image:
            if os.path.isfile(image):  # an upload (a temporary file) or a session's image; read once more, here
                problem = image_problem(image, "the uploaded file")
                if problem:
                    suffix, extensions = _suffix(image), _extensions()
                    reason = (f"the uploaded {suffix} file cannot be read as an image ({problem})"
                              if suffix in extensions else f"the uploaded file ({suffix}) is not an image")
                    raise _refuse(415, f"{reason}; send one of {', '.join(extensions)}.")
            elif not os.path.exists(image):  # an image id (a folder is a DICOM series: MONAI Label's own)
                from monailabel.datastore.local import LocalDatastore

                store = datastore if datastore else self.datastore()
                if isinstance(store, LocalDatastore) and not os.path.isfile(store.get_image_uri(image) or ""):
                    raise _refuse(404, f"no image '{image}' in the datastore; GET /datastore/?output=all lists the "
                                       "image ids, or upload it first (PUT /datastore/).")
        self.follow_model(model)
        return super().infer(request, datastore)

    def info(self):
        for name in list(self._infers):
            try:
                self.follow_model(name)
            except Exception as e:  # that model's /infer answers with the reason; /info still answers
                logger.warning("%s: %s", name, _one_line(getattr(e, "detail", None) or e))
        return super().info()

    def follow_model(self, name: str) -> None:
        """Make the bundle model ``name`` serve its ``models/model.pt`` as it is now (see the module docstring).

        Raises:
            the bundle's model error (HTTP 422, its one-line reason) when the changed file cannot be served; the next
            request tries again.
        """
        from monailabel.tasks.infer.bundle import BundleInferTask

        task = self._infers.get(name)
        path = os.path.join(getattr(task, "bundle_path", ""), "models", "model.pt")
        if not isinstance(task, BundleInferTask) or not os.path.isfile(path):
            return  # not a bundle, or no model.pt now (moved to archive/ by a /train): the network in memory serves
        stat = os.stat(path)
        stamp, served = (stat.st_mtime_ns, stat.st_size), self.__dict__.setdefault("_served_models", {})
        if served.get(name) == stamp:
            return
        if name in served:  # changed since it was served: build the network and the transforms from it again
            _reload_bundle_task(task)
            logger.info("%s: %s changed; serving the network it records", name, path)
        labels = model_labels(path, deepedit=str(getattr(task.type, "value", task.type)).lower() == "deepedit")
        if labels is not None:
            task.labels = labels
        served[name] = stamp

    def init_datastore(self):
        store = super().init_datastore()
        from monailabel.datastore.local import LocalDatastore

        if isinstance(store, LocalDatastore):
            store.add_image = functools.partial(_checked_add_image, store.add_image)
        return store

    def on_init_complete(self):
        super().on_init_complete()
        for name in list(self._infers):  # the labels of the model.pt each bundle's network was just built from
            self.follow_model(name)
        server = sys.modules.get("monailabel.app")  # the running server's module (absent in a training subprocess)
        if server is not None:
            from monailabel.config import settings

            _add_middleware(server.app, TrainRequestCheck, check=self.check_train_request,
                            prefix=settings.MONAI_LABEL_API_STR)

    def check_train_request(self, model: str | None, params: dict | None) -> None:
        """Refuse a ``/train/<model>`` (``model`` given) or ``/train/`` (``{model: params}``) request."""
        if model is None:
            for name, value in (params or {}).items():
                if name == "client_id":
                    continue
                if name not in self._trainers:
                    raise _refuse(422, f"POST /train/ takes {{<trainer>: {{params}}}}; no trainer '{name}' on this "
                                       f"server; its trainers: {', '.join(sorted(self._trainers))}.")
                self._check_train_params(name, value if isinstance(value, dict) else {})
            return
        if model not in self._trainers:
            raise _refuse(404, f"no trainer '{model}' on this server; its trainers: "
                               f"{', '.join(sorted(self._trainers))}.")
        self._check_train_params(model, params or {})

    def _check_train_params(self, model: str, params: dict) -> None:
        known = sorted(self._trainers[model].config())
        unknown = sorted(k for k in params if k not in known and k not in MONAILABEL_TRAIN_KEYS)
        if unknown:
            hints = [f"did you mean '{m[0]}'?" for k in unknown for m in [difflib.get_close_matches(k, known, 1)] if m]
            raise _refuse(422, f"unknown /train parameter(s) for '{model}': {', '.join(unknown)}"
                               f"{' (' + ', '.join(hints) + ')' if hints else ''}; known: {', '.join(known)}.")
        if params.get("pretrained", True) is False:
            raise _refuse(422, f"'pretrained': false fails in MONAI Label 0.8.5; to train '{model}' from scratch, "
                               "delete the copy's models/model.pt and leave 'pretrained' out.")


def model_labels(path: str, deepedit: bool = False) -> dict[str, int] | None:
    """MONAI Label's labels (``{name: class id}``, lower case, without "background" as its ``BundleInferTask`` makes
    them from ``metadata.json``) of the class names in the ``model_info`` of the checkpoint ``path``; ``None`` when
    it records none or cannot be read (the labels stay as they are)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or half-written file: the network's own load says what is wrong
        logger.warning("%s: no labels read (%s)", path, _one_line(str(e)))
        return None
    info = checkpoint.get("model_info") if isinstance(checkpoint, dict) else None
    names = info.get("class_names") if isinstance(info, dict) else None
    if not names:
        return None
    return {str(n).lower(): i for i, n in enumerate(names) if deepedit or str(n).lower() != "background"}


def _reload_bundle_task(task) -> None:
    """Read ``task``'s (a ``BundleInferTask``) inference config again and build its ``network_def`` from it, with the
    bundle's own ``scripts`` (as the task does at start); its cached networks and transforms are dropped."""
    from monailabel.utils.others.class_utils import unload_module

    sys.path.insert(0, task.bundle_path)
    unload_module("scripts")
    try:
        config = task._load_bundle_config(task.bundle_path, task.bundle_config_path)
        config.config["use_click"] = task.bundle_config.config.get("use_click", False)
        if task.dropout > 0:
            config["network_def"]["dropout"] = task.dropout
        network = config.get_parsed_content(task.const.key_network_def(), instantiate=True)
    except Exception as e:  # MONAI wraps the bundle's error ("Failed to instantiate component"): answer with it
        cause = e
        while cause is not None and not isinstance(cause, StarletteHTTPException):  # the bundle's ModelError is one
            cause = cause.__cause__ or cause.__context__
        raise (cause or e) from None
    finally:
        sys.path.remove(task.bundle_path)
    task.bundle_config, task.network = config, network
    task._networks.clear()


def _checked_add_image(add_image, image_id, image_filename, image_info):
    """The datastore's ``add_image``, after checking that the upload is an image the datastore lists."""
    extensions = _extensions()
    if not any(image_filename.endswith(e) for e in extensions):
        raise _refuse(415, f"upload of '{image_id}' refused: {_suffix(image_filename)} is not an image file the "
                           f"datastore takes; accepted: {', '.join(extensions)} (MONAI_LABEL_DATASTORE_FILE_EXT).")
    problem = image_problem(image_filename, "the uploaded file")
    if problem:
        raise _refuse(415, f"upload of '{image_id}' refused: the file is not a readable image: {problem}")
    return add_image(image_id, image_filename, image_info)


class TrainRequestCheck:
    """ASGI middleware: a ``POST /train/`` or ``POST /train/<model>`` whose JSON body ``check(model, params)`` refuses
    is answered with its ``HTTPException`` (``{"detail": ...}``) and never reaches MONAI Label; every other request
    passes through untouched (a body that is not JSON is left to the endpoint's own answer)."""

    def __init__(self, app, check, prefix: str = ""):
        self.app, self.check, self.prefix = app, check, f"{prefix}/train/"

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path
        model = path[len(self.prefix):]
        if scope["type"] != "http" or scope.get("method") != "POST" or not path.startswith(self.prefix) or "/" in model:
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        try:
            params = json.loads(body) if body.strip() else None
        except ValueError:
            params = None
        try:
            self.check(unquote(model) or None, params if isinstance(params, dict) else None)
        except HTTPException as e:
            from starlette.responses import JSONResponse

            return await JSONResponse({"detail": e.detail}, status_code=e.status_code)(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _add_middleware(app, middleware_class, **options) -> None:
    """Add an ASGI middleware to a running Starlette/FastAPI ``app`` (once), inside its CORS middleware.

    Starlette builds the middleware stack at the first event, the server's start, which is before MONAI Label loads
    the app's ``main.py``; ``add_middleware`` refuses a started app, so the stack is rebuilt with it, as that first
    event builds it (``user_middleware``, ``build_middleware_stack``).
    """
    from starlette.middleware import Middleware

    if any(m.cls is middleware_class for m in app.user_middleware):
        return
    app.user_middleware.append(Middleware(middleware_class, **options))
    app.middleware_stack = app.build_middleware_stack()


def with_checks(app_class):
    """``app_class`` (the app's ``MyApp``) with :class:`RequestChecks` first in its bases.

    MONAI Label serves the class in ``main.py`` that names ``MONAILabelApp`` among its direct bases, so the returned
    class lists it too (after ``app_class``, which keeps its methods); ``main.py`` rebinds ``MyApp`` to it.
    """
    from monailabel.interfaces.app import MONAILabelApp

    return type(app_class.__name__, (RequestChecks, app_class, MONAILabelApp),
                {"__module__": app_class.__module__, "__doc__": app_class.__doc__})
