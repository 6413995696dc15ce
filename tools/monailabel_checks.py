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

logger = logging.getLogger(__name__)

__all__ = ["MONAILABEL_TRAIN_KEYS", "RequestChecks", "TrainRequestCheck", "image_problem", "with_checks"]

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
        return super().infer(request, datastore)

    def init_datastore(self):
        store = super().init_datastore()
        from monailabel.datastore.local import LocalDatastore

        if isinstance(store, LocalDatastore):
            store.add_image = functools.partial(_checked_add_image, store.add_image)
        return store

    def on_init_complete(self):
        super().on_init_complete()
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
