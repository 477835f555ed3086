"""The REST API on the same core as the menus and the command line (FastAPI).

``python main.py serve`` serves it on 127.0.0.1:8765 by default. On the loopback address
anyone logged in to the machine may use it, as they may use the workspace's files;
served on any other address, every request needs the workspace's access token
(``Authorization: Bearer TOKEN``): made on first use, shown once, and kept in the
workspace only as its SHA-256.

Under ``/api/v1`` (the OpenAPI schema at ``/api/v1/openapi.json``):

    GET  /datasets, /datasets/{name}      organized datasets: names, counts, detected facts
    GET  /runs, /runs/{name}              training runs: phase, status, metrics, history
    POST /jobs/train                      start a training (the Train menu's defaults)
    GET  /jobs, /jobs/{id}                jobs of this server: state, last events
    GET  /jobs/{id}/events?after=N        their events after the N-th
    GET  /jobs/{id}/stream                the same as server-sent events, until the job ends
    POST /jobs/{id}/cancel                stop at the next safe point (a training: after its epoch)
    POST /jobs/export                     export a run as a signed, verified bundle (a job)
    GET  /runs/{name}/bundle.zip          download its bundle, zipped
    GET  /system                          CPU, GPU, memory, disk, package versions
    POST /predict[?run=RUN][&allow_ood=true]
                                          a multipart form with one file (DICOM, a zipped series,
                                          PNG/JPEG/TIFF, NIfTI, NRRD, MHA), or the file as the body
                                          with ?kind=dcm|png|jpg|nii|nii.gz|zip...; the answer per
                                          item, as predict writes it
    GET  /backups, POST /jobs/backup, POST /jobs/restore
                                          the workspace's backups; make one, restore one (a job)

The browser dashboard (web.pages) is served by the same process at /.

Every name goes through the workspace's name rules (app.names); errors are one line of
JSON (``{"detail": ...}``) with what to do, never a traceback; nothing identifying is
returned (dataset and run metadata hold pseudonyms and counts only).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.jobs import Job, Jobs
from app.workspace import Workspace
from core.errors import BackupError, BusyError, DatasetError, InvalidNameError, UnknownNameError, WorkbenchError
from web.guard import guard, is_loopback
from web.tokens import token_matches
from web.uploads import UPLOAD_LIMIT, received, received_form, said_of_the_upload

API = "/api/v1"


class TrainRequest(BaseModel):
    dataset: str = Field(description="an organized dataset's name")
    phase: str = Field("supervised", description="supervised, transfer, vae, hybrid or cube3d")
    run: str | None = Field(None, description="the run's name (default: made from the dataset and phase)")
    backbone: str | None = Field(None, pattern=r"^[a-z0-9_.]{1,64}$", description="a timm model name (supervised, transfer)")
    epochs: int | None = Field(None, ge=1, le=1000)
    image_size: int | None = Field(None, ge=8, le=1024)
    batch_size: int | None = Field(None, ge=1, le=4096)
    minutes: float | None = Field(None, gt=0, le=24 * 60, description="a time budget instead of fixed epochs")


class BackupRequest(BaseModel):
    raw: bool = Field(False, description="also the raw files and the private map to them (they can identify patients)")


class RestoreRequest(BaseModel):
    name: str = Field(description="an archive's name in the workspace's backups/ (GET /backups)")


class ExportRequest(BaseModel):
    run: str = Field(description="a finished run's name")
    int8: bool = Field(False, description="also an INT8 copy (refused if it loses more than 0.02 AUROC)")


def _job_view(job: Job[Any], events: int = 5) -> dict[str, Any]:
    return {"id": job.id, "name": job.name, "state": job.state, "error": job.error,
            "events": [asdict(e) for e in job.events()[-events:]]}


def create_app(ws: Workspace, *, require_token: bool = False, jobs: Jobs | None = None,
               upload_limit: int = UPLOAD_LIMIT) -> FastAPI:
    """The API over workspace ``ws``; ``require_token``: every request needs the bearer token."""
    from app.predict import load_readers

    load_readers()  # before requests import them in several threads at once
    jobs = jobs or Jobs()
    app = FastAPI(title="MedAnomaly Workbench API", version="1", openapi_url=f"{API}/openapi.json",
                  docs_url=f"{API}/docs", redoc_url=None)

    authorized = guard(app, require_token=require_token, token_matches=lambda given: token_matches(ws, given),
                       how_to_get_one="python main.py serve --new-token makes one")

    from web.pages import add_pages, wants_page

    error_page = add_pages(app, ws, jobs, secured=[Depends(authorized)], upload_limit=upload_limit)

    @app.exception_handler(WorkbenchError)
    async def workbench_error(request: Request, err: WorkbenchError) -> Any:
        if isinstance(err, (InvalidNameError, UnknownNameError)):
            status = 400
        elif isinstance(err, DatasetError) and str(err).startswith(("No organized dataset named",
                                                                     "No training run named")):
            status = 404
        elif isinstance(err, BusyError):
            status = 409
        elif isinstance(err, BackupError) and str(err).startswith("No backup named"):
            status = 404
        else:
            status = 422
        if wants_page(request):
            return error_page(request, status, str(err).splitlines()[0])
        return JSONResponse({"detail": str(err).splitlines()[0]}, status_code=status)

    secured = [Depends(authorized)]

    @app.get(f"{API}/datasets", dependencies=secured)
    def datasets() -> list[dict[str, Any]]:
        found = []
        for name in ws.organized_datasets():
            meta = ws.dataset_metadata(name)
            found.append({"name": name, "items": meta.get("counts", {}).get("items"),
                          "classes": meta.get("classes", []), "version": meta.get("version", "")})
        return found

    @app.get(f"{API}/datasets/{{name}}", dependencies=secured)
    def dataset(name: str) -> dict[str, Any]:
        return {"name": name, **ws.dataset_metadata(name)}

    @app.get(f"{API}/runs", dependencies=secured)
    def runs() -> list[dict[str, Any]]:
        keep = ("run", "phase", "dataset", "status", "created", "finished", "metrics", "trial_of")
        return [{k: m[k] for k in keep if k in m} for m in ws.runs()]

    @app.get(f"{API}/runs/{{name}}", dependencies=secured)
    def run(name: str) -> dict[str, Any]:
        return ws.run_metadata(name)

    @app.post(f"{API}/jobs/train", status_code=202, dependencies=secured)
    def start_training(asked: TrainRequest) -> dict[str, Any]:
        from app.names import check_name
        from app.training import new_run_name, train
        from models import get_phase_class

        ws.dataset_metadata(asked.dataset)  # names checked, and a clear 404 before any job starts
        get_phase_class(asked.phase)
        name = check_name(asked.run, "run name") if asked.run else new_run_name(asked.dataset, asked.phase)
        settings = {k: v for k, v in (("epochs", asked.epochs), ("image_size", asked.image_size),
                                      ("batch_size", asked.batch_size), ("backbone", asked.backbone)) if v is not None}
        budget = {"time_limit_s": asked.minutes * 60, "max_epochs": 100} if asked.minutes else {}
        job = Job("train", lambda job: train(ws, asked.dataset, asked.phase, run=name, progress=job.progress,
                                             should_stop=job.should_stop, **budget, **settings), graceful=True)
        jobs.submit(job)
        return {**_job_view(job), "run": name}

    @app.post(f"{API}/jobs/export", status_code=202, dependencies=secured)
    def start_export(asked: ExportRequest) -> dict[str, Any]:
        from app.bundle import export_bundle

        meta = ws.run_metadata(asked.run)  # names checked, and a clear 404 before any job starts
        if meta.get("status") != "complete":
            raise HTTPException(409, f"Run {asked.run!r} is {meta.get('status')}: only a finished run is exported.")
        job = Job("export", lambda job: export_bundle(ws, asked.run, int8=asked.int8, progress=job.progress))
        jobs.submit(job)
        return _job_view(job)

    @app.get(f"{API}/backups", dependencies=secured)
    def backups() -> list[dict[str, Any]]:
        from app.backup import list_backups

        return list_backups(ws)

    @app.post(f"{API}/jobs/backup", status_code=202, dependencies=secured)
    def start_backup(asked: BackupRequest) -> dict[str, Any]:
        from app.backup import backup

        job = Job("backup", lambda job: backup(ws, raw=asked.raw, progress=job.progress))
        jobs.submit(job)
        return _job_view(job)

    @app.post(f"{API}/jobs/restore", status_code=202, dependencies=secured)
    def start_restore(asked: RestoreRequest) -> dict[str, Any]:
        from app.backup import backup_path, restore

        archive = backup_path(ws, asked.name)  # a bare archive name in backups/, and a clear 4xx before any job
        job = Job("restore", lambda job: restore(ws, archive, progress=job.progress))
        jobs.submit(job)
        return _job_view(job)

    @app.get(f"{API}/runs/{{name}}/bundle.zip", dependencies=secured)
    def download_bundle(name: str) -> StreamingResponse:
        import io
        import zipfile

        ws.run_metadata(name)
        folder = ws.export_dir(name)
        if not (folder / "metadata.json").exists():
            raise HTTPException(404, f"Run {name!r} has no bundle yet: export it first (POST {API}/jobs/export).")
        buffer = io.BytesIO()
        with ws.lock("export", name, wait_s=30.0), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(p for p in folder.iterdir() if p.is_file()):  # read whole: never half a new export
                archive.write(file, f"{name}/{file.name}")
        buffer.seek(0)
        return StreamingResponse(buffer, media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{name}-bundle.zip"'})

    @app.get(f"{API}/system", dependencies=secured)
    def system() -> dict[str, Any]:
        from app.status import system_facts

        return system_facts(ws)

    @app.get(f"{API}/jobs", dependencies=secured)
    def all_jobs() -> list[dict[str, Any]]:
        return [_job_view(job, events=1) for job in jobs.all()]

    def _job(job_id: str) -> Job[Any]:
        try:
            return jobs.get(job_id)
        except WorkbenchError as err:
            raise HTTPException(404, str(err)) from err

    @app.get(f"{API}/jobs/{{job_id}}", dependencies=secured)
    def one_job(job_id: str) -> dict[str, Any]:
        return _job_view(_job(job_id))

    @app.get(f"{API}/jobs/{{job_id}}/events", dependencies=secured)
    def job_events(job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return [asdict(e) for e in _job(job_id).events(after)]

    @app.get(f"{API}/jobs/{{job_id}}/stream", dependencies=secured)
    async def job_stream(request: Request, job_id: str, after: int = 0) -> StreamingResponse:
        job = _job(job_id)
        resumed = request.headers.get("last-event-id", "")  # a browser reconnecting goes on where it was

        async def events() -> AsyncIterator[str]:
            seen = max(after, int(resumed) if resumed.isdigit() else 0)
            while True:
                for event in job.events(seen):
                    seen = event.seq
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(asdict(event))}\n\n"
                if job.state not in ("pending", "running") and not job.events(seen):
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post(f"{API}/jobs/{{job_id}}/cancel", status_code=202, dependencies=secured)
    def cancel(job_id: str) -> dict[str, Any]:
        job = _job(job_id)
        job.cancel()
        return _job_view(job)

    @app.post(f"{API}/predict", dependencies=secured)
    async def predict_upload(request: Request, kind: str | None = None, run: str | None = None,
                             allow_ood: bool = False) -> dict[str, Any]:
        """One uploaded file, predicted as ``main.py predict`` would: a multipart form with one
        file field (its kind read from the file name's ending), or the file as the raw body with
        ``kind``. It is written inside the workspace under a generated name (web.uploads), read,
        and deleted; only the predictions stay, by item id."""
        from app.predict import predict

        under = ws.data_dir / "uploads"
        multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
        if not multipart and not kind:
            raise HTTPException(400, "Send the file as a multipart form, or as the body with ?kind=dcm|png|jpg|"
                                     "nii|nii.gz|zip...")
        upload = received_form(request, under, upload_limit) if multipart else received(request, kind or "", under,
                                                                                       upload_limit)
        async with upload as given:
            path = given[0] if multipart else given
            try:
                result = await run_in_threadpool(lambda: predict(ws, path, run=run, allow_ood=allow_ood,
                                                                 overlays=False))
            except WorkbenchError as err:
                status = 404 if str(err).startswith("No training run named") else 422
                raise HTTPException(status, said_of_the_upload(str(err), under)) from err
        answers = [{k: v for k, v in asdict(p).items() if k != "name"} for p in result.predictions]
        return {"predictions": answers, "verdicts": result.verdicts, "outside": result.outside,
                "saved": ws.relative(result.json)}

    return app


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port out of range or already taken (uvicorn would exit the process)."""
    import socket

    if not 0 < port < 65536:
        raise WorkbenchError(f"The port must be between 1 and 65535, not {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise WorkbenchError(f"Cannot listen on {host}:{port} ({err.strerror or err}): another program uses "
                                 "it, or the address is not this machine's. Choose another port (--port).") from err


def serve(ws: Workspace, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Serve the API until Ctrl-C (uvicorn). Off the loopback address the token is required.

    Raises:
        WorkbenchError: the port is taken or out of range.
    """
    import uvicorn

    check_port(host, port)

    app = create_app(ws, require_token=not is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
