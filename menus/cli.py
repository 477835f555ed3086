"""MedAnomaly Workbench: `python main.py` opens the menu; every menu action has a command.

    python main.py workflow --dataset demo --yes --fast
    python main.py collect demo|local|catalog|kaggle|tcia|nih|dicomweb ...  (each with --help)
    python main.py organize PATH --name NAME
    python main.py dataset review|correct|stats|balance|merge|holdout|export ...
    python main.py train --dataset NAME --phase supervised|transfer|vae|hybrid|cube3d
    python main.py evaluate RUN [--with RUN2 ...]
    python main.py export RUN [--int8]
    python main.py predict PATH [--run RUN] [--show-names]
    python main.py audit [PATH]
    python main.py backup [--raw] [--to DIR] | restore ARCHIVE [--yes] | backup --list
    python main.py serve [--host H --port P] [--bundle DIR]
    python main.py status

Global options (before or after the command): --workspace DIR, --debug, --help.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import CollectError, WorkbenchError
from app.laterality import flips_sentence
from app.workspace import Workspace

log = logging.getLogger("medanomaly")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--workspace", metavar="DIR", default=default,
                        help="workspace folder (default: $MEDANOMALY_WORKSPACE, else this repository; "
                             "installed with pip: ~/.local/share/medanomaly)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="show full tracebacks and debug logging")


def _command_of(argv: Sequence[str] | None) -> str | None:
    """The command a command line names ("train" in "--workspace W train --epochs 3")."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    k = 0
    while k < len(tokens):
        if tokens[k] == "--workspace":
            k += 2
            continue
        if not tokens[k].startswith("-"):
            return tokens[k]
        k += 1
    return None


def _setting_specs() -> list[Any]:
    from models import get_phase_class, list_phases
    from models.base import setting_specs

    return setting_specs([(spec.name, get_phase_class(spec.name).Config) for spec in list_phases()])


def _add_settings(train: argparse.ArgumentParser) -> None:
    """``train``'s --flags, one per phase setting (models.configs.setting and SHARED_SETTINGS),
    under a heading per layer (model, data, training, post-hoc)."""
    from models.configs import LAYERS

    specs = _setting_specs()
    for layer in LAYERS:
        group = train.add_argument_group(f"{layer.replace('_', '-')} settings")
        for spec in (s for s in specs if s.layer == layer):
            flag = "--" + spec.flag.replace("_", "-")
            if spec.type == "bool":
                group.add_argument(flag, dest=spec.dest, action="store_const", const=True, help=spec.help)
                continue
            group.add_argument(flag, dest=spec.dest, type={"int": int, "float": float}.get(spec.type, str),
                               choices=list(spec.choices) or None, metavar=spec.metavar, help=spec.help)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    # Run as `python main.py` from a checkout, or as `medanomaly` when installed (pip install .).
    prog = "main.py" if Path(sys.argv[0]).name == "main.py" else "medanomaly"
    parser = argparse.ArgumentParser(prog=prog, description="MedAnomaly Workbench: medical image anomaly detection.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=(__doc__ or "").replace("python main.py", "python main.py" if prog == "main.py"
                                                                    else "medanomaly"))
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, suppress=True)
        return sub

    command("menu", "open the interactive menu (the default)")
    wf = command("workflow", "one-click: collect -> organize -> train all phases -> evaluate -> export (resumable)")
    wf.add_argument("--dataset", default="demo", help="dataset name (default: demo, the built-in data)")
    wf.add_argument("--source", metavar="PATH", help="a local folder to collect from")
    wf.add_argument("--fast", action="store_true", help="small images and few epochs (under 5 minutes on 2 cores)")
    wf.add_argument("--yes", action="store_true", help="ask no questions")
    wf.add_argument("--restart", action="store_true", help="start over instead of resuming")
    wf.add_argument("--seed", type=int, default=0)
    wf.add_argument("--recipe-minutes", type=float, default=None, metavar="M",
                    help="the supervised step lets the tool choose its recipe on validation, in M minutes "
                         "(as train --recipe auto); default 10 without --fast, the fixed fast recipe with it; "
                         "0: the fixed recipe")

    col = command("collect", "bring data into the workspace")
    sources = col.add_subparsers(dest="source", metavar="SOURCE", required=True)
    from app.collectors import list_collectors

    for collector in list_collectors():  # each collector's options make its arguments (app.collectors.option)
        _global_options(_collector_parser(sources, collector), suppress=True)
    cat = sources.add_parser("catalog", help="recommended public datasets; with KEY, download that one")
    cat.add_argument("key", nargs="?", help="a catalog key (without it: the list)")
    _global_options(cat, suppress=True)

    org = command("organize", "detect modality/region/label, pseudonymize, split by patient")
    org.add_argument("path", help="a folder, or the name of a collected dataset")
    org.add_argument("--name", required=True, help="name of the organized dataset")
    org.add_argument("--seed", type=int, default=0)
    org.add_argument("--workers", type=int, default=None, help="scan processes (default: up to 4)")
    org.add_argument("--replace", action="store_true",
                     help="replace an existing dataset that runs were trained on (they keep their models)")

    cu = command("cubes", "cut 48-cubed cubes around annotated findings in volumes into a 3D dataset")
    cu.add_argument("path", help="a folder of NIfTI/MHA/NRRD volumes or DICOM series")
    cu.add_argument("--name", required=True, help="name of the cube dataset")
    cu.add_argument("--modality", required=True, choices=["CT", "MR"], help="sets resampling and intensity scaling")
    cu.add_argument("--points", metavar="CSV", help="annotations: series (or file stem), x,y,z mm or i,j,k voxels, "
                    "optional location and label (0: a normal place at that location); "
                    "without it, *_mask volumes beside each volume")
    cu.add_argument("--negatives", type=int, default=4, help="negative cubes per volume (default 4)")
    cu.add_argument("--region", default="unknown", help="anatomical region recorded for the dataset")
    cu.add_argument("--store", choices=["npz", "h5"], default="npz",
                    help="npz (read whole; default) or h5: a chunked HDF5 store, written and read a batch at a time, "
                         "for datasets larger than memory")

    ds = command("dataset", "review, correct, balance, merge, export organized datasets")
    actions = ds.add_subparsers(dest="action", metavar="ACTION", required=True)
    review = actions.add_parser("review", help="what was detected, per folder")
    review.add_argument("name")
    correct = actions.add_parser("correct", help="set modality/region/label for every item under a folder")
    correct.add_argument("name")
    correct.add_argument("folder", help="a folder as 'dataset review' shows it")
    correct.add_argument("field", choices=["modality", "region", "label"])
    correct.add_argument("value")
    stats = actions.add_parser("stats", help="counts per class, split, modality and region, with a plot")
    stats.add_argument("name")
    balance = actions.add_parser("balance", help="how training handles class imbalance")
    balance.add_argument("name")
    balance.add_argument("method", choices=["class_weights", "oversample", "undersample", "none"])
    merge = actions.add_parser("merge", help="merge organized datasets, split again by patient")
    merge.add_argument("names", nargs="+")
    merge.add_argument("--name", required=True, help="name of the merged dataset")
    holdout = actions.add_parser("holdout", help="a copy with one anomaly class unknown (test split only)")
    holdout.add_argument("name")
    holdout.add_argument("label", help="the anomaly class to hold out, e.g. tumor")
    holdout.add_argument("--name", dest="new_name", required=True, help="name of the copy")
    export = actions.add_parser("export", help="write a dataset's rows as CSV or JSON, or a de-identified copy "
                                                   "to share (--deidentify)")
    export.add_argument("name")
    export.add_argument("file", help="destination; .json for JSON, anything else for CSV; with --deidentify a new "
                                     "folder")
    export.add_argument("--deidentify", action="store_true",
                        help="a copy that can leave the hospital: images by item id, DICOM de-identified per "
                             "PS3.15 Annex E (dicognito), dates shifted per patient; files flagged with burned-in "
                             "text are left out and listed")
    for sub in (review, correct, stats, balance, merge, holdout, export):
        _global_options(sub, suppress=True)

    tr = command("train", "train (or resume) one phase on an organized dataset")
    tr.add_argument("--dataset", required=True, help="an organized dataset's name (see status)")
    tr.add_argument("--phase", required=True, help="supervised, transfer, vae, hybrid or cube3d")
    tr.add_argument("--run-name", "--run", dest="run", help="run name (an existing unfinished run resumes)")
    if _command_of(argv) == "train":  # the phases' settings (importing the phases takes PyTorch: only here)
        _add_settings(tr)
    tr.add_argument("--recipe", choices=["auto", "flags"], default="flags",
                    help="supervised: auto screens a few recipes (backbone, input size) on the validation split and "
                         "trains the best on to the end of --minutes (it chooses --backbone, --image-size, --augment, "
                         "--lr, --ema and --mixup itself); flags (the default) trains the options given")
    tr.add_argument("--minutes", type=float, help="a wall-clock training budget: the plan of epochs is fitted to it "
                    "(--recipe auto: default 10)")

    ev = command("evaluate", "metrics, plots and a report for a finished run")
    ev.add_argument("run")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--tta", action="store_true",
                    help="classifiers: test-time augmentation, each prediction averaged with the mirrored image's")
    ev.add_argument("--with", dest="also", action="append", default=[], metavar="RUN",
                    help="average RUN's probabilities with this classifier run's too (an ensemble, e.g. other seeds; "
                         "repeatable); shown, not written")

    ex = command("export", "export a run as an ONNX bundle (model card, README), checked against PyTorch")
    ex.add_argument("run")
    ex.add_argument("--int8", action="store_true", help="also a static INT8 copy, with its validation metric change")
    ex.add_argument("--format", action="append", dest="formats", default=[], metavar="NAME",
                    help="also this export format (repeatable; the registry in app/formats.py: int8 today)")
    ex.add_argument("--accept-int8-drop", action="store_true",
                    help="export the INT8 copy even when it loses more than 0.02 validation AUROC (the drop goes "
                         "in the model card)")

    pr = command("predict", "run trained models on a file, a DICOM series or a folder")
    pr.add_argument("path", help="an image file, a DICOM series folder, or a folder of images")
    pr.add_argument("--run", help="the model to use (default: chosen per image by modality and region)")
    pr.add_argument("--no-overlays", action="store_true", help="skip the Grad-CAM / residual heat maps")
    pr.add_argument("--allow-ood", action="store_true",
                    help="answer also for images outside what the models were trained on (they stay marked outside)")
    pr.add_argument("--show-names", action="store_true",
                    help="also show and write each file's own name (it can identify a patient; the output is "
                         "then marked as holding identifiers). Without it, items are named by item id only")
    pr.add_argument("--trust-unsigned", action="store_true",
                    help="use exported bundles that are unsigned or signed by a key this workspace does not trust "
                         "(their file hashes are still checked)")

    au = command("audit", "look for patient identifiers in the workspace, a dataset export or a bundle "
                          "(exit 1 when any is found)")
    au.add_argument("path", nargs="?", help="what to audit (default: the workspace, less its raw inputs and "
                                            "private map)")

    sv = command("serve", "serve the REST API on this workspace (FastAPI; /api/v1, schema at /api/v1/openapi.json)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only); any other needs the "
                         "workspace's access token with every request")
    sv.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    sv.add_argument("--new-token", action="store_true",
                    help="make a new access token (shown once; the old one stops working) before serving")
    sv.add_argument("--bundle", metavar="DIR",
                    help="serve this exported bundle alone, for inference only (no workspace; off loopback the "
                         "token comes from MEDANOMALY_TOKEN)")
    sv.add_argument("--trust-unsigned", action="store_true",
                    help="with --bundle: serve a bundle unsigned or signed by a key this workspace does not trust "
                         "(its file hashes are still checked)")

    bk = command("backup", "write a dated archive of the workspace (state, keys, runs, bundles, organized "
                           "datasets) with a manifest of SHA-256 hashes, signed")
    bk.add_argument("--raw", action="store_true",
                    help="also the collected raw files and the private map to their places (these can identify "
                         "patients: keep such an archive as you keep the raw data)")
    bk.add_argument("--to", metavar="DIR", help="write the archive there (default: the workspace's backups/)")
    bk.add_argument("--list", action="store_true", help="list the archives in backups/ instead")
    rs = command("restore", "restore the workspace from a backup archive; every hash is checked before anything "
                            "is replaced, and what is replaced is moved aside, not deleted")
    rs.add_argument("archive", help="an archive's path, or the name of one in backups/")
    rs.add_argument("--yes", action="store_true", help="ask no questions")

    command("status", "show datasets, runs and workflow progress")
    return parser


def _collector_parser(sources: Any, collector: Any) -> argparse.ArgumentParser:
    """``collect NAME``'s parser, from the collector's options dataclass."""
    from app.collectors import option_specs

    sub = sources.add_parser(collector.name, help=collector.title, description=collector.title)
    for spec in option_specs(collector.options):
        if spec.positional:  # optional here when the collector can list instead (kaggle --search, tcia --list)
            sub.add_argument(spec.name, nargs="?", help=spec.help, metavar=spec.metavar)
            continue
        flag = "--" + spec.name.replace("_", "-")
        if spec.type == "bool":
            sub.add_argument(flag, action="store_true", help=spec.help)
        else:
            sub.add_argument(flag, type={"int": int, "float": float}.get(spec.type, str), default=spec.default,
                             metavar=spec.metavar, help=spec.help)
    return sub


def _log_path(ws: Workspace) -> Any:
    return ws.logs_dir / "workbench.log"


QUIET_ON_SCREEN = ("urllib3", "requests", "dicomweb_client")


def _setup_logging(ws: Workspace, debug: bool) -> None:
    from rich.logging import RichHandler

    from menus.console import console

    screen = RichHandler(console=console, show_path=False, show_time=False)
    screen.setLevel(logging.DEBUG if debug else logging.INFO)
    screen.setFormatter(logging.Formatter("%(message)s"))
    # Tracebacks of unexpected errors go to the log file; on screen only with --debug.
    # Connection retries (urllib3) are the download engine's business: it says what went wrong, once, with
    # what to do; their warnings only go to the log file.
    screen.addFilter(lambda record: debug or (record.name != "medanomaly.crash" and (
        record.name.split(".")[0] in ("app", "models", "menus", "medanomaly") or (
            record.levelno >= logging.WARNING and record.name.split(".")[0] not in QUIET_ON_SCREEN))))
    handlers: list[logging.Handler] = [screen]
    try:  # a read-only workspace still answers the commands that only read
        ws.logs_dir.mkdir(parents=True, exist_ok=True)
        logfile = logging.FileHandler(_log_path(ws), encoding="utf-8")
        logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(logfile)
    except OSError:
        logfile = None  # no log file this time; the screen still gets every message
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=handlers, force=True)
    import warnings

    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _collect_listing(source: str, options: dict[str, Any]) -> Any:
    """What `collect kaggle --search`, `collect tcia --list` and `collect catalog` show; None to download."""
    from menus import render

    if source == "kaggle" and (options.get("search") or not options.get("dataset")):
        from app.collectors.kaggle import search

        if not options.get("search"):
            raise CollectError("Give OWNER/DATASET, or --search TERM to find one.")
        return render.kaggle_table(search(options["search"]))
    if source == "tcia" and (options.get("list") or not options.get("collection")):
        from app.collectors.tcia import list_collections

        return render.plain_list("TCIA collections", list_collections())
    if source == "catalog" and not options.get("key"):
        from app.collectors.catalog import CATALOG

        return render.catalog_table(CATALOG)
    return None


def _counts(found: dict[str, Any]) -> str:
    """{"train": 3, "val": 1} as "train 3, val 1"; fractions to three decimals."""
    return ", ".join(f"{name} {n:.3f}" if isinstance(n, float) else f"{name} {n}" for name, n in found.items()) or "none"


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The phase settings given on the command line (each train --flag is a Config field)."""
    return {spec.dest: getattr(args, spec.dest) for spec in _setting_specs()
            if getattr(args, spec.dest, None) is not None}


def run_command(args: argparse.Namespace, ws: Workspace) -> int:
    from menus import render, screens
    from menus.console import as_job, console, progress_bars
    from menus.settings import Settings

    if args.command in (None, "menu"):
        if not sys.stdin.isatty():
            console.print("The menu needs an interactive terminal. Use a command instead (python main.py --help), "
                          "e.g. python main.py workflow --dataset demo --yes --fast")
            return 2
        from menus.main_menu import main_menu

        main_menu(screens.Session(ws, Settings.load(ws), args.debug))
        return 0
    if args.command == "workflow":
        from app.workflow import WorkflowOptions

        if args.recipe_minutes is not None and not args.recipe_minutes >= 0:
            raise WorkbenchError(f"--recipe-minutes must be 0 (the fixed recipe) or more, not {args.recipe_minutes:g}")
        options = WorkflowOptions(dataset=args.dataset, source=args.source, fast=args.fast, seed=args.seed,
                                  recipe_minutes=args.recipe_minutes)
        if not args.yes:
            if not sys.stdin.isatty():
                console.print("No terminal to confirm on: add --yes to run without questions.")
                return 2
            from menus.ask import ask_confirm

            if not ask_confirm(f"Run the whole workflow on {options.dataset!r}{' (fast)' if options.fast else ''}?"):
                return 1
        final = screens.run_workflow_with_progress(ws, options, restart=args.restart)
        console.print(render.workflow_table(final))
        screens.show_workflow_results(final, ws)
        return 1 if final.get("stopped") else 0  # stopped (Ctrl-C): not finished, for scripts
    if args.command == "dataset":
        return _dataset_command(args, ws)
    if args.command == "serve":
        from web.guard import is_loopback
        from web.server import serve
        from web.tokens import has_token, new_token

        from web.server import check_port

        check_port(args.host, args.port)
        if args.bundle:
            from pathlib import Path

            from web.bundle_server import serve_bundle

            console.print(f"Serving bundle {args.bundle} on http://{args.host}:{args.port}/api/v1/predict; Ctrl-C stops.")
            serve_bundle(Path(args.bundle), args.host, args.port, trust_unsigned=args.trust_unsigned,
                         keys_from=ws.data_dir)
            return 0
        if args.new_token or (not is_loopback(args.host) and not has_token(ws)):
            console.print(f"Access token (shown once; keep it like a password): {new_token(ws)}")
        shown = f"[{args.host}]" if ":" in args.host else args.host
        guard = "this machine only" if is_loopback(args.host) else "every request needs the access token"
        console.print(f"Serving the API on http://{shown}:{args.port}/api/v1 ({guard}); Ctrl-C stops.")
        serve(ws, args.host, args.port)
        return 0
    if args.command in ("backup", "restore"):
        return _backup_command(args, ws)
    if args.command == "audit":
        from pathlib import Path

        from app.audit import audit_workspace

        result = audit_workspace(ws, Path(args.path) if args.path else None)
        for line in render.audit_lines(result):
            console.print(line)
        return 1 if result.findings else 0
    with progress_bars() as bar:
        if args.command == "collect":
            from app.collectors import collect

            options = vars(args).copy()
            source = options.pop("source")
            for key in ("command", "workspace", "debug"):
                options.pop(key, None)
            listing = _collect_listing(source, options)
            if listing is not None:
                console.print(listing, soft_wrap=False)  # wrapped to the terminal, not cut
                return 0
            if source == "catalog":
                from app.collectors.catalog import collect_entry

                result = as_job("collect", bar, lambda job: collect_entry(ws, options["key"], progress=job.progress))
            else:
                given = {k: v for k, v in options.items() if v is not None}
                result = as_job("collect", bar, lambda job: collect(source, ws, progress=job.progress, **given))
            message = f"Collected {result.files} files as {result.dataset!r} in {result.path} {result.note}"
        elif args.command == "organize":
            from app.organize.organizer import organize

            result = as_job("organize", bar, lambda job: organize(
                ws, args.path, args.name, seed=args.seed, workers=args.workers, replace=args.replace,
                progress=job.progress))
            message = (f"Organized {result.items} items ({result.labeled} labeled, {result.unlabeled} unlabeled; "
                       f"{result.skipped} file(s) skipped) into {result.path}\nclasses: {_counts(result.classes)}"
                       f"\nsplits: {_counts(result.split_counts)}")
            message += "".join(f"\nskipped {n}: {reason}" for reason, n in result.skip_reasons.items())
            if result.skip_reasons:
                message += " (details in scan_report.json)"
            if result.duplicates:
                message += f"\nGroups of identical files: {result.duplicates}"
            from menus import render

            message += "".join(f"\n{line}" for line in render.label_lines(result))
        elif args.command == "train":
            from app.training import train

            from menus.stopping import clean_stop

            # Under torchrun every rank must stop at the same epoch: there Ctrl-C stops at once.
            alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
            overrides = _train_overrides(args)
            if args.minutes is not None and not args.minutes > 0:
                raise WorkbenchError(f"--minutes must be more than 0, not {args.minutes:g}")
            if args.recipe == "auto":
                from app.recipes import auto_problem, search_and_train
                from app.training import new_run_name

                problem = auto_problem(args.phase, overrides)
                if problem:
                    raise WorkbenchError(f"--recipe auto: {problem}.")
                with clean_stop() as should_stop:
                    result, record = as_job("train", bar, lambda job: search_and_train(
                        ws, args.dataset, (args.minutes or 10.0) * 60, run=args.run or new_run_name(args.dataset, "supervised"),
                        progress=job.progress, should_stop=lambda: should_stop() or job.should_stop(), **overrides),
                        graceful=True)
                message = render.recipe_summary(record, result, ws.run_metadata(result.run).get("flips"))
            else:
                budget = {"time_limit_s": args.minutes * 60, "max_epochs": 100} if args.minutes else {}
                with clean_stop() if alone else contextlib.nullcontext(lambda: False) as should_stop:
                    result = as_job("train", bar, lambda job: train(
                        ws, args.dataset, args.phase, run=args.run, progress=job.progress,
                        should_stop=lambda: should_stop() or job.should_stop(), **budget, **overrides), graceful=True)
                message = f"Run {result.run}: {result.epochs_done} epochs; {_counts(result.metrics)}"
                if flips_sentence(ws.run_metadata(result.run).get("flips")):
                    message += "\n" + flips_sentence(ws.run_metadata(result.run).get("flips"))
        elif args.command == "evaluate":
            from app.evaluate import evaluate_ensemble, evaluate_run

            if args.also:
                result = evaluate_ensemble(ws, [args.run, *args.also], args.split, tta=args.tta)
            else:
                result = as_job("evaluate", bar, lambda job: evaluate_run(ws, args.run, args.split, progress=job.progress,
                                                                         tta=args.tta))
            message = ""
        elif args.command == "export":
            from app.bundle import export_bundle

            result = as_job("export", bar, lambda job: export_bundle(
                ws, args.run, int8=args.int8, accept_int8_drop=args.accept_int8_drop, formats=args.formats,
                progress=job.progress))
            message = (f"Exported bundle {result.path} (max abs difference to PyTorch {result.max_abs_diff:.1e}), "
                       f"signed: {result.path / 'signature.json'}")
            if result.int8:
                q = result.int8
                message += f"\nINT8: {q['metric']} {q['fp32']:.4f} -> {q['int8']:.4f} ({q['change']:+.4f})"
        elif args.command == "cubes":
            from pathlib import Path

            from app.cubes import build_cube_dataset

            result = as_job("cubes", bar, lambda job: build_cube_dataset(
                ws, Path(args.path), args.name, args.modality, annotations=Path(args.points) if args.points else None,
                negatives=args.negatives, region=args.region, store=args.store, progress=job.progress))
            message = (f"Cube dataset {result.name}: {result.items} cubes; classes: {_counts(result.classes)}; "
                       f"splits: {_counts(result.split_counts)}; train it with --phase cube3d")
        elif args.command == "predict":
            from pathlib import Path

            from app.predict import predict

            result = as_job("predict", bar, lambda job: predict(
                ws, Path(args.path), run=args.run, overlays=not args.no_overlays, trust_unsigned=args.trust_unsigned,
                allow_ood=args.allow_ood, show_names=args.show_names, progress=job.progress))
            message = f"Saved: {result.csv}, {result.json}" + "".join(f", {p}" for p in result.overlays)
        else:  # status
            from app.status import workspace_status

            result, message = workspace_status(ws), ""
    if args.command == "evaluate" and args.also:
        screens.show_evaluation(result, ws.run_metadata(args.run).get("classes", []), " + ".join(result["runs"]))
    elif args.command == "evaluate":
        screens.show_evaluation(result.metrics, ws.run_metadata(args.run).get("classes", []), args.run)
        message = f"Report: {result.report}"
    if args.command == "predict":
        console.print(render.predictions_table(result.predictions))
        for used, text in result.verdicts.items():
            console.print(f"Model {used}: {text}", markup=False)
        if result.outside:
            console.print(render.outside_line(result.outside, len(result.predictions), args.allow_ood))
        if result.holds_names:
            console.print(render.holds_names_line(result.folder))
    if args.command == "status":
        console.print(f"Workspace: {result.root}")
        for table in render.status_tables(result):
            console.print(table)
        for name, progress in result.workflows.items():
            console.print(f"Workflow {name}: {progress}")
    if message:
        console.print(message)
    return 0


def _backup_command(args: argparse.Namespace, ws: Workspace) -> int:
    from app import backup as backups
    from menus import render
    from menus.console import as_job, console, progress_bars

    if args.command == "backup" and args.list:
        console.print(render.backups_table(backups.list_backups(ws)))
        return 0
    if args.command == "backup":
        with progress_bars() as bar:
            made = as_job("backup", bar, lambda job: backups.backup(
                ws, raw=args.raw, to=Path(args.to).expanduser() if args.to else None, progress=job.progress))
        console.print(render.backup_line(made))
        return 0
    given = Path(args.archive).expanduser()
    archive = given if given.exists() or "/" in args.archive else backups.backup_path(ws, args.archive)
    if not args.yes:
        if not sys.stdin.isatty():
            console.print("No terminal to confirm on: add --yes to restore without questions.")
            return 2
        from menus.ask import ask_confirm

        if not ask_confirm(f"Replace this workspace's state, runs, bundles and datasets with {archive.name}? "
                           "(what is replaced is moved to backups/replaced-..., not deleted)"):
            return 1
    with progress_bars() as bar:
        done = as_job("restore", bar, lambda job: backups.restore(ws, archive, progress=job.progress))
    console.print(render.restore_line(done))
    return 0


def _dataset_command(args: argparse.Namespace, ws: Workspace) -> int:
    from pathlib import Path

    from app.organize import dataset_tools, review
    from app.organize.organizer import organize
    from menus import render
    from menus.console import console

    if args.action == "review":
        for group in review.review_groups(ws, args.name):
            conflicts = f" [yellow]({group.conflicts} conflicting: table and folder disagree)[/]" if group.conflicts else ""
            items = f"{group.items} item{'s' if group.items != 1 else ''}"
            console.print(f"{group.folder}: {items}, {group.modality}, {group.region}, {group.label}"
                          f"{conflicts} [dim]({group.rules}; confidence {group.confidence:.2f})[/]", soft_wrap=True)
    elif args.action == "correct":
        review.add_correction(ws, args.name, args.folder, args.field, args.value)
        meta = ws.dataset_metadata(args.name)
        organize(ws, ws.private.source(meta["source_dataset"]), args.name, seed=meta.get("seed", 0), replace=True)
        console.print(f"Saved and applied: {args.field} = {args.value} under {args.folder}")
    elif args.action == "stats":
        stats = dataset_tools.dataset_statistics(ws, args.name)
        for key in ("by_modality", "by_region", "by_kind"):
            console.print(render.metrics_table(key.replace("_", " "), stats[key]))
        for label, splits in stats["by_class_and_split"].items():
            console.print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in splits.items()))
        console.print(f"Plot: {stats['plot']}")
    elif args.action == "balance":
        dataset_tools.set_balance(ws, args.name, args.method)
        console.print(f"{args.name} trains with {args.method}.")
    elif args.action == "merge":
        result = dataset_tools.merge_datasets(ws, args.names, args.name)
        console.print(f"Merged into {result.name}: {result.items} items; splits: {_counts(result.split_counts)}")
    elif args.action == "holdout":
        result = dataset_tools.hold_out_class(ws, args.name, args.label, args.new_name)
        console.print(f"{result.name}: {args.label!r} held out (test split only); classes: "
                      f"{', '.join(sorted(result.classes))}")
    elif args.deidentify:
        from app.organize.share import export_deidentified
        from menus.console import as_job, progress_bars

        with progress_bars() as bar:
            shared = as_job("share", bar, lambda job: export_deidentified(ws, args.name, Path(args.file),
                                                                          progress=job.progress))
        console.print(render.share_line(shared))
    else:
        target = Path(args.file).expanduser()
        fmt = "json" if target.suffix.lower() == ".json" else "csv"
        console.print(f"Written: {dataset_tools.export_dataset(ws, args.name, fmt, target)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    ws = None
    try:
        ws = Workspace.open(getattr(args, "workspace", None))
        _setup_logging(ws, debug)
        return run_command(args, ws)
    except KeyboardInterrupt:
        print("\nInterrupted. Work done so far is saved; run the same command again to resume.", file=sys.stderr)
        return 130
    except WorkbenchError as err:
        if debug:
            raise
        print(f"Error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, permissions: the user can act on these
        if debug:
            raise
        logging.getLogger("medanomaly.crash").exception("System error")
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"Error: {err.strerror or err}{where}. Check the disk space and permissions there, then run the "
              f"same command again.{_log_hint(ws)}", file=sys.stderr)
        return 2
    except Exception as err:
        if debug:
            raise
        logging.getLogger("medanomaly.crash").exception("Unexpected error")
        print(f"Unexpected error: {type(err).__name__}: {str(err)[:300]}.{_log_hint(ws)} "
              "Run again with --debug to see the traceback here.", file=sys.stderr)
        return 1


def _log_hint(ws: Workspace | None) -> str:
    if ws is None or not _log_path(ws).exists():
        return ""
    return f" Details: {_log_path(ws)}."

