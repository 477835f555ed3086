"""One exported bundle served for inference only, with no workspace: the deployment case.

``python main.py serve --bundle exports/RUN`` checks the bundle (signature, every file's
SHA-256, the ONNX graph against its card) once, then answers:

    GET  /api/v1/model                        the model card: classes, metrics, verdict,
                                              preprocessing, the out-of-distribution gate
    POST /api/v1/predict?kind=...[&allow_ood=true]
                                              the body is one file (as the workspace server);
                                              each item's answer, "upload-1", "upload-2"...
    GET  /api/v1/health                       {"status": "ok"} once the model is loaded

Concurrent requests' images are scored as one batch (web.batching). Uploads go to a
private folder of the server's own (mode 0700, removed when it stops) and
are deleted once read; nothing else is written. Off the loopback address every request
needs the token given in the environment variable MEDANOMALY_TOKEN.
"""

from __future__ import annotations

import hmac
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.predict import (Model, find_items, load_readers, model_from_bundle, prepare_items, route_items,
                         score_batch, settle)
from core.errors import WorkbenchError
from web.batching import Batcher
from web.guard import guard, is_loopback
from web.uploads import UPLOAD_LIMIT, received, said_of_the_upload

API = "/api/v1"
TOKEN_VARIABLE = "MEDANOMALY_TOKEN"


def create_bundle_app(model: Model, *, token: str | None = None, upload_limit: int = UPLOAD_LIMIT) -> FastAPI:
    """The inference API of ``model`` (app.predict.model_from_bundle); ``token``: required of every request."""
    import numpy as np

    shape = (1, model.channels, model.image_size, model.image_size)
    model.run_batch(np.zeros(shape, np.float32))  # the session made and checked once, before any request
    load_readers()  # before requests import them in several threads at once
    folder = Path(tempfile.mkdtemp(prefix="medanomaly-uploads-"))  # mode 0700

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title=f"MedAnomaly Workbench model {model.run}", version="1", openapi_url=f"{API}/openapi.json",
                  docs_url=f"{API}/docs", redoc_url=None, lifespan=lifespan)
    app.state.uploads = folder
    authorized = guard(app, require_token=token is not None,
                       token_matches=lambda given: hmac.compare_digest(given.encode(), (token or "").encode()),
                       how_to_get_one=f"the token this server was started with, in {TOKEN_VARIABLE}")
    secured = [Depends(authorized)]
    card = model.bundle.card if model.bundle else {}

    @app.get(f"{API}/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": model.run}

    @app.get(f"{API}/model", dependencies=secured)
    def model_card() -> dict[str, Any]:
        return card

    batcher = Batcher(lambda batch: score_batch(model, batch))

    @app.post(f"{API}/predict", dependencies=secured)
    async def predict_upload(request: Request, kind: str, allow_ood: bool = False) -> dict[str, Any]:
        def prepared(given: Path) -> tuple[list[Any], list[str], list[Any]]:  # read and prepare, in a worker
            items = find_items(given)
            ids = [f"upload-{k + 1}" for k in range(len(items))]
            results, by_model = route_items(items, ids, [model], chosen=True, allow_ood=allow_ood)
            return results, ids, prepare_items(by_model.get(model.run, []), model, results)

        async with received(request, kind, folder, upload_limit) as given:
            try:
                results, ids, ready = await run_in_threadpool(prepared, given)
                if ready:  # scored with the other requests' images that wait (web.batching)
                    outputs, distances = await batcher.score(np.concatenate([x for _, _, x in ready]))
                    settle(ready, model, outputs, distances, results, ids, allow_ood)
            except WorkbenchError as err:
                raise HTTPException(422, said_of_the_upload(str(err), folder)) from err
        return {"predictions": [{k: v for k, v in asdict(p).items() if k != "name"} for p in results],
                "verdict": model.verdict.text, "outside": sum(1 for p in results if p.outside)}

    app.state.batcher = batcher
    return app


def serve_bundle(path: Path, host: str = "127.0.0.1", port: int = 8765, *, trust_unsigned: bool = False,
                 keys_from: Path | None = None, log_level: str = "warning") -> None:
    """Serve bundle ``path`` until stopped. Off the loopback address MEDANOMALY_TOKEN must be set.

    Raises:
        WorkbenchError: no token off loopback; ExportError: the bundle fails its checks.
    """
    import uvicorn

    from web.server import check_port

    check_port(host, port)
    token = os.environ.get(TOKEN_VARIABLE) or None
    if not is_loopback(host) and not token:
        raise WorkbenchError(f"Serving on {host} needs an access token: set {TOKEN_VARIABLE} (a long random "
                             "string) and send it as 'Authorization: Bearer TOKEN'.")
    model = model_from_bundle(Path(path), keys_from=keys_from, trust_unsigned=trust_unsigned)
    app = create_bundle_app(model, token=token if not is_loopback(host) else None)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
