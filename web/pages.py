"""The browser dashboard: server-rendered pages (Jinja2) with HTMX, on the same core as the API.

    /                     the workspace: datasets, runs with their verdicts, workflows, jobs
    /datasets/NAME        counts and plot, what was detected per folder, corrections
    /train                start a training (the Train menu's defaults); /jobs/ID watches it live
    /runs/NAME            its report: metrics with 95% intervals, plots, Grad-CAM, calibration;
                          evaluate, export, download the bundle
    /checkpoints          runs: resume a stopped one, delete one (typing its name to confirm)
    /predict              upload a file; the verdict, the OOD flag, the overlay
    /backups              back up, restore (typing the archive's name to confirm)
    /system               CPU, GPU, memory, disk, package versions

Every form carries the server's CSRF token (a secret made at start, never stored); posts
without it are refused. Live pages follow the job's server-sent events (the API's
/jobs/ID/stream) and fetch a fresh panel on each, so the page shows what the job reports.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app.jobs import Job, Jobs
from app.workspace import Workspace
from core.errors import WorkbenchError
from web.charts import epoch_charts

HERE = Path(__file__).parent
PLOT_NAME = re.compile(r"^[a-z0-9_]{1,64}\.png$")
FOLDER_NAME = re.compile(r"^[0-9A-Za-z_.-]{1,80}$")


def monitor_name(history: list[dict[str, Any]]) -> str:
    """Which validation number ``monitor`` is, read from the records ("val_auc" -> "val auc")."""
    if not history:
        return "validation metric"
    last = history[-1]
    named = [k for k, v in last.items() if k.startswith("val_") and v == last.get("monitor")]
    return named[0].replace("_", " ") if named else "validation metric"


def epoch_records(ws: Workspace, job: Job[Any] | None, run: str | None) -> list[dict[str, Any]]:
    """The run's epochs so far: its metadata's history (resumed epochs included), else the job's events."""
    if run:
        try:
            history = ws.run_metadata(run).get("history") or []
            if history:
                return history
        except WorkbenchError:
            pass
    if job is None:
        return []
    return [{"epoch": e.done, **e.info} for e in job.events() if e.kind == "progress" and e.task == "Epochs"]


def wants_page(request: Request) -> bool:
    """Whether an error should be answered as a page (a browser on the dashboard) rather than JSON."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def add_pages(app: FastAPI, ws: Workspace, jobs: Jobs, secured: list[Any], upload_limit: int) -> Any:
    """Mount the dashboard's pages and static files on ``app``; return the error page's maker
    ``(request, status, message) -> response``."""
    from fastapi.staticfiles import StaticFiles

    from app.evaluate import mirror_sentence
    from app.laterality import flips_sentence
    from core.metrics import metric_label

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["metric"] = metric_label
    templates.env.filters["mirror_sentence"] = mirror_sentence
    templates.env.filters["flips_sentence"] = flips_sentence
    csrf = secrets.token_urlsafe(32)
    job_runs: dict[str, str] = {}  # job id -> the run it trains (for the live chart and the resume button)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, template: str, status_code: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"csrf": csrf, **context}, status_code=status_code,
                                          headers=headers)

    def checked(token: str) -> None:
        if not hmac.compare_digest(token or "", csrf):
            raise HTTPException(403, "This form is out of date (the server restarted?): reload the page and "
                                     "send it again.")

    def start(job: Job[Any], run: str | None = None) -> RedirectResponse:
        jobs.submit(job)
        if run:
            job_runs[job.id] = run
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    from starlette.exceptions import HTTPException as AnyHTTPException  # the router's 404s and 405s too

    @app.exception_handler(AnyHTTPException)
    async def http_error(request: Request, err: AnyHTTPException) -> Response:
        from fastapi.exception_handlers import http_exception_handler

        if not wants_page(request):
            return await http_exception_handler(request, err)
        if err.status_code == 401:
            return RedirectResponse("/login", status_code=303)
        return page(request, "error.html", status_code=err.status_code, message=str(err.detail))

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html")

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, token: str = Form(...)) -> Response:
        from web.guard import TOKEN_COOKIE
        from web.tokens import token_matches

        if not token_matches(ws, token.strip()):
            return page(request, "login.html", status_code=401, wrong=True)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")
        return answer

    @app.get("/", response_class=HTMLResponse, dependencies=secured)
    def overview(request: Request) -> HTMLResponse:
        from app.status import workspace_status

        return page(request, "overview.html", status=workspace_status(ws), jobs=list(reversed(jobs.all())),
                    job_runs=job_runs)

    @app.get("/datasets/{name}", response_class=HTMLResponse, dependencies=secured)
    def dataset(request: Request, name: str) -> HTMLResponse:
        from app.organize.dataset_tools import dataset_statistics
        from app.organize.review import review_groups

        meta = ws.dataset_metadata(name)
        stats = dataset_statistics(ws, name)
        return page(request, "dataset.html", name=name, meta=meta, stats=stats, groups=review_groups(ws, name),
                    fields=("modality", "region", "label"))

    @app.get("/datasets/{name}/statistics.png", dependencies=secured)
    def dataset_plot(name: str) -> FileResponse:
        path = ws.organized_path(name) / "statistics.png"
        if not path.is_file():
            raise HTTPException(404, "No statistics plot yet.")
        return FileResponse(path, media_type="image/png")

    @app.post("/datasets/{name}/correct", dependencies=secured)
    def correct(name: str, folder: str = Form(...), field: str = Form(...), value: str = Form(...),
                csrf_token: str = Form("")) -> RedirectResponse:
        from app.organize import review
        from app.organize.organizer import organize

        checked(csrf_token)
        meta = ws.dataset_metadata(name)
        review.add_correction(ws, name, folder, field, value.strip())
        return start(Job("organize", lambda job: organize(ws, ws.private.source(meta["source_dataset"]), name,
                                                           seed=meta.get("seed", 0), replace=True,
                                                           progress=job.progress)))

    @app.get("/train", response_class=HTMLResponse, dependencies=secured)
    def train_form(request: Request, dataset: str | None = None) -> HTMLResponse:
        from app.readiness import phase_problem
        from app.settings import Settings
        from models import list_phases

        datasets = ws.organized_datasets()
        chosen = dataset if dataset in datasets else (datasets[0] if datasets else None)
        phases = []
        if chosen:
            done = {m["phase"] for m in ws.runs() if m["dataset"] == chosen and m["status"] == "complete"}
            for spec in list_phases():
                missing = [c for c in spec.components if c not in done]
                problem = f"train {', '.join(missing)} first" if missing else phase_problem(ws, chosen, spec.name)
                phases.append({"name": spec.name, "title": spec.title, "problem": problem})
        fast = Settings.load(ws).fast
        return page(request, "train.html", datasets=datasets, chosen=chosen, phases=phases,
                    defaults={"image_size": 64 if fast else 128, "epochs": 15 if fast else 30,
                              "minutes": 3 if fast else 10})

    @app.post("/train", dependencies=secured)
    def start_training(dataset: str = Form(...), phase: str = Form("supervised"), run: str = Form(""),
                       backbone: str = Form(""), image_size: int | None = Form(None), epochs: int | None = Form(None),
                       minutes: float | None = Form(None), recipe: str = Form("fixed"),
                       csrf_token: str = Form("")) -> RedirectResponse:
        from app.names import check_name
        from app.settings import Settings
        from app.training import new_run_name, train
        from models import get_phase_class

        checked(csrf_token)
        ws.dataset_metadata(dataset)
        cls = get_phase_class(phase)
        resume = bool(run)
        name = check_name(run, "run name") if resume else new_run_name(dataset, phase)
        if resume:
            return start(Job("train", lambda job: train(ws, dataset, phase, run=name, progress=job.progress,
                                                        should_stop=job.should_stop), graceful=True), name)
        settings = {"seed": Settings.load(ws).seed}
        if backbone.strip() and "backbone" in cls.Config.__dataclass_fields__:
            if not re.fullmatch(r"[a-z0-9_.]{1,64}", backbone.strip()):
                raise HTTPException(400, f"{backbone!r} is not a timm model name (letters, digits, '_' and '.').")
            settings["backbone"] = backbone.strip()
        for key, value, low, high in (("image_size", image_size, 16, 1024), ("epochs", epochs, 1, 1000)):
            if value is not None:
                if not low <= value <= high:
                    raise HTTPException(400, f"{key.replace('_', ' ')} must be between {low} and {high}.")
                settings[key] = value
        if minutes is not None and not 0 < minutes <= 24 * 60:
            raise HTTPException(400, "Minutes must be more than 0 and at most a day (1440).")
        if cls.spec.searchable and recipe == "auto":
            from app.recipes import search_and_train

            return start(Job("train", lambda job: search_and_train(
                ws, dataset, (minutes or 10.0) * 60, run=name, progress=job.progress, should_stop=job.should_stop,
                seed=settings["seed"]), graceful=True), name)
        budget = {"time_limit_s": minutes * 60, "max_epochs": 100} if minutes else {}
        return start(Job("train", lambda job: train(ws, dataset, phase, run=name, progress=job.progress,
                                                    should_stop=job.should_stop, **budget, **settings),
                         graceful=True), name)

    def job_context(job_id: str) -> dict[str, Any]:
        try:
            job = jobs.get(job_id)
        except WorkbenchError as err:
            raise HTTPException(404, str(err)) from err
        run = job_runs.get(job.id)
        records = epoch_records(ws, job, run) if job.name == "train" else []
        last = next((e for e in reversed(job.events()) if e.kind == "progress"), None)
        meta = None
        if run:
            try:
                meta = ws.run_metadata(run)
            except WorkbenchError:
                meta = None
        return {"job": job, "run": run, "meta": meta, "last": last, "records": records,
                "charts": epoch_charts(records, monitor_name(records)) if job.name == "train" else [],
                "live": job.state in ("pending", "running"), "seen": len(job.events())}

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, dependencies=secured)
    def watch(request: Request, job_id: str) -> HTMLResponse:
        return page(request, "job.html", **job_context(job_id))

    @app.get("/jobs/{job_id}/watch", response_class=HTMLResponse, dependencies=secured)
    def watch_block(request: Request, job_id: str) -> HTMLResponse:
        return page(request, "job_watch.html", **job_context(job_id))

    @app.get("/jobs/{job_id}/panel", response_class=HTMLResponse, dependencies=secured)
    def panel(request: Request, job_id: str) -> HTMLResponse:
        return page(request, "job_panel.html", **job_context(job_id))

    @app.post("/jobs/{job_id}/stop", response_class=HTMLResponse, dependencies=secured)
    def stop(request: Request, job_id: str, csrf_token: str = Form("")) -> HTMLResponse:
        checked(csrf_token)
        context = job_context(job_id)
        context["job"].cancel()
        return page(request, "job_panel.html", **{**context, "stopping": True})

    @app.get("/runs/{name}", response_class=HTMLResponse, dependencies=secured)
    def run_page(request: Request, name: str) -> HTMLResponse:
        from app.training import run_status
        from app.verdict import model_verdict

        meta = ws.run_metadata(name)
        folder = ws.run_dir(name) / "evaluation"
        plots = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
        history = meta.get("history") or []
        bundle = ws.export_dir(name)
        card = (bundle / "README.md").read_text(encoding="utf-8") if (bundle / "README.md").is_file() else ""
        return page(request, "run.html", name=name, meta=meta, status=run_status(ws, meta),
                    verdict=model_verdict(meta), test=(meta.get("evaluation") or {}).get("test") or {},
                    plots=plots, charts=epoch_charts(history, monitor_name(history)),
                    exported=(bundle / "metadata.json").is_file(), card=card)

    @app.get("/runs/{name}/plots/{file}", dependencies=secured)
    def run_plot(name: str, file: str) -> FileResponse:
        if not PLOT_NAME.match(file):
            raise HTTPException(400, "Not a plot's name.")
        path = ws.run_dir(name) / "evaluation" / file
        if not path.is_file():
            raise HTTPException(404, f"Run {name!r} has no plot {file}.")
        return FileResponse(path, media_type="image/png")

    @app.post("/runs/{name}/evaluate", dependencies=secured)
    def evaluate(name: str, csrf_token: str = Form("")) -> RedirectResponse:
        from app.evaluate import evaluate_run

        checked(csrf_token)
        ws.run_metadata(name)
        return start(Job("evaluate", lambda job: evaluate_run(ws, name, "test", progress=job.progress)), name)

    @app.post("/runs/{name}/export", dependencies=secured)
    def export(name: str, csrf_token: str = Form("")) -> RedirectResponse:
        from app.bundle import export_bundle

        checked(csrf_token)
        if ws.run_metadata(name).get("status") != "complete":
            raise HTTPException(409, f"Run {name!r} has not finished: only a finished run is exported.")
        return start(Job("export", lambda job: export_bundle(ws, name, progress=job.progress)), name)

    @app.get("/checkpoints", response_class=HTMLResponse, dependencies=secured)
    def checkpoints(request: Request) -> HTMLResponse:
        from app.training import run_status

        runs = []
        for meta in reversed(ws.runs()):
            folder = ws.run_dir(meta["run"])
            size = sum(p.stat().st_size for p in folder.glob("*.pt"))
            runs.append({**meta, "state": run_status(ws, meta), "size_mb": size / 1e6,
                         "files": sorted(p.name for p in folder.glob("*.pt"))})
        return page(request, "checkpoints.html", runs=runs)

    @app.post("/runs/{name}/delete", dependencies=secured)
    def delete(name: str, confirm: str = Form(""), csrf_token: str = Form("")) -> RedirectResponse:
        from app.checkpoints import delete_run

        checked(csrf_token)
        if confirm.strip() != name:
            raise HTTPException(400, f"Type the run's name ({name}) to confirm the deletion; nothing was deleted.")
        delete_run(ws, name)
        return RedirectResponse("/checkpoints", status_code=303)

    @app.get("/predict", response_class=HTMLResponse, dependencies=secured)
    def predict_form(request: Request) -> HTMLResponse:
        from app.predict import candidate_runs

        return page(request, "predict.html", runs=candidate_runs(ws), limit_mb=upload_limit / 1e6)

    @app.post("/predict", response_class=HTMLResponse, dependencies=secured)
    async def predict_upload(request: Request) -> HTMLResponse:
        from app.predict import candidate_runs, predict
        from web.uploads import received_form, said_of_the_upload

        under = ws.data_dir / "uploads"
        async with received_form(request, under, upload_limit) as (given, fields):
            checked(fields.get("csrf_token", ""))
            run = fields.get("run") or None
            try:
                result = await run_in_threadpool(lambda: predict(ws, given, run=run, overlays=True,
                                                                 allow_ood=fields.get("allow_ood") == "on"))
            except WorkbenchError as err:
                raise HTTPException(422, said_of_the_upload(str(err), under)) from err
        answers = [{k: v for k, v in asdict(p).items() if k != "name"} for p in result.predictions]
        overlays = [f"/predictions/{result.folder.name}/{p.name}" for p in result.overlays]
        return page(request, "predict.html", runs=candidate_runs(ws), limit_mb=upload_limit / 1e6,
                    answers=answers, verdicts=result.verdicts, outside=result.outside, overlays=overlays,
                    saved=ws.relative(result.json))

    @app.get("/predictions/{folder}/{file}", dependencies=secured)
    def prediction_overlay(folder: str, file: str) -> FileResponse:
        if not FOLDER_NAME.match(folder) or folder.startswith(".") or not re.fullmatch(r"[0-9A-Za-z_.-]{1,160}\.png", file):
            raise HTTPException(400, "Not an overlay's name.")
        path = ws.inside(ws.predictions_dir / folder / file)
        if not path.is_file():
            raise HTTPException(404, "No such overlay.")
        return FileResponse(path, media_type="image/png")

    @app.get("/backups", response_class=HTMLResponse, dependencies=secured)
    def backups_page(request: Request) -> HTMLResponse:
        from app.backup import list_backups

        return page(request, "backups.html", found=list_backups(ws))

    @app.post("/backups", dependencies=secured)
    def make_backup(raw: str = Form(""), csrf_token: str = Form("")) -> RedirectResponse:
        from app.backup import backup

        checked(csrf_token)
        return start(Job("backup", lambda job: backup(ws, raw=raw == "on", progress=job.progress)))

    @app.post("/backups/restore", dependencies=secured)
    def restore_backup(name: str = Form(...), confirm: str = Form(""), csrf_token: str = Form("")) -> RedirectResponse:
        from app.backup import backup_path, restore

        checked(csrf_token)
        archive = backup_path(ws, name)
        if confirm.strip() != name:
            raise HTTPException(400, f"Type the archive's name ({name}) to confirm the restore; nothing was replaced.")
        return start(Job("restore", lambda job: restore(ws, archive, progress=job.progress)))

    @app.get("/system", response_class=HTMLResponse, dependencies=secured)
    def system_page(request: Request) -> HTMLResponse:
        from app.status import system_facts

        return page(request, "system.html", facts=system_facts(ws))

    return lambda request, status, message: page(request, "error.html", status_code=status, message=message)
