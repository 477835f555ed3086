"""What the workspace holds, as plain data (menus and `status` render it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.names import problem_with
from app.training import run_status
from app.verdict import model_verdict
from app.workflow import STEPS, workflow_state
from app.workspace import Workspace


@dataclass
class WorkspaceStatus:
    root: str
    collected: dict[str, dict[str, Any]] = field(default_factory=dict)
    organized: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    trials: int = 0  # recipe searches' hidden runs (screening trials, members), not listed in ``runs``
    workflows: dict[str, str] = field(default_factory=dict)


def workspace_status(ws: Workspace) -> WorkspaceStatus:
    """Collected and organized datasets, runs (newest first), and workflow progress."""
    status = WorkspaceStatus(root=str(ws.root), collected=ws.raw_datasets())
    for name in ws.organized_datasets():
        meta = ws.dataset_metadata(name)
        status.organized[name] = {"items": meta["items"], "classes": meta["classes"], **meta["counts"]}
    for meta in ws.runs():
        if meta.get("trial_of"):
            status.trials += 1
            continue
        test = meta.get("evaluation", {}).get("test", {})
        status.runs.append({
            "run": meta["run"], "phase": meta["phase"], "dataset": meta["dataset"], "status": run_status(ws, meta),
            "epochs": meta.get("epoch"),  # None: a run fitted on validation (a hybrid), no epochs
            "test": test, "verdict": model_verdict(meta), "exported": (ws.exports_dir / meta["run"] / "metadata.json").exists(),
        })
    for path in sorted((ws.data_dir / "workflows").glob("*.json")):
        if problem_with(path.stem):
            continue
        steps = workflow_state(ws, path.stem)["steps"]
        done = sum(1 for s in STEPS if steps.get(s, {}).get("status") == "done")
        status.workflows[path.stem] = f"{done}/{len(STEPS)} steps done"
    return status


def system_facts(ws: Workspace) -> dict[str, Any]:
    """CPU, device, memory, disk and package versions (what /system shows)."""
    import os
    import platform
    import shutil

    from app.bundle import package_versions
    from app.runtime import current_runtime

    disk = shutil.disk_usage(ws.root)
    try:
        memory: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (not Linux): shown as unknown
        memory = None
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "device": current_runtime().describe(), "memory_bytes": memory,
            "disk_free_bytes": disk.free, "disk_total_bytes": disk.total, "packages": package_versions()}
