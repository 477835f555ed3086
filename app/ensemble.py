"""The recipe search's ensemble as one run: its members' logits averaged in one model.

``app.recipes`` trains members after the winner while its budget allows. Each member is
judged here on validation (``Members.judge``: the average with it against the average
without it), and those kept become one model in the search's run
(``Members.assemble``: models.supervised.Averaged), calibrated again on validation. So what the
benchmark measures is what the menus, the workflow and the dashboard give: the run
evaluates, explains (Grad-CAM of the first member, the search's winner), fits into a
hybrid, exports one ONNX graph and predicts like any supervised run. The winner alone is
kept beside it as ``<run>-member0``, a hidden run (``trial_of``) like the other members.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.checkpoints import load_checkpoint, save_checkpoint
from app.runs import Run
from app.state import Kind, read_state, write_state
from app.training import evened_counts, load_run_phase, split_tensors, validation_metrics
from app.workspace import Workspace
from core.errors import TrainingError

SAME = ("image_size", "channels", "clahe")  # settings every member must share: they prepare the images


class Members:
    """The members kept so far and what validation says of their average."""

    def __init__(self, ws: Workspace, dataset: str, winner: str) -> None:
        self.ws, self.dataset, self.winner = ws, dataset, winner
        self.first = load_run_phase(ws, winner)
        self.val_x, self.val_y = split_tensors(ws, self.first, dataset, "val", self.first.select_rows, None)
        self.runs, self.phases, self.logits = [winner], [self.first], [self._logits(self.first)]
        self.score = self._figure(self.logits)

    def _logits(self, phase: Any, mirrored: bool = False) -> np.ndarray:
        import torch

        phase.model.eval()
        with torch.no_grad():
            return torch.cat([phase.model(self.val_x[i : i + 64].flip(-1) if mirrored else self.val_x[i : i + 64])
                              for i in range(0, len(self.val_x), 64)]).numpy()

    def _figure(self, logits: list[np.ndarray]) -> float:
        import torch

        probabilities = self.first.raw_probabilities(torch.from_numpy(np.mean(logits, axis=0))).numpy()
        return float(validation_metrics(self.first, probabilities, self.val_y.numpy())["monitor"])

    def judge(self, member: str, complete: bool) -> tuple[float, bool]:
        """The validation figure of the average with ``member``, and whether it is kept: a
        complete run whose average scores at least the average without it."""
        phase = load_run_phase(self.ws, member)
        mismatch = [k for k in SAME if getattr(phase.config, k) != getattr(self.first.config, k)]
        if mismatch or phase.classes != self.first.classes:
            raise TrainingError(f"Run {member!r} prepares its images otherwise ({', '.join(mismatch) or 'classes'}): "
                                "it cannot be averaged with the search's winner.")
        logits = [*self.logits, self._logits(phase)]
        with_it = self._figure(logits)
        keep = complete and with_it >= self.score
        if keep:
            self.runs, self.phases, self.logits, self.score = [*self.runs, member], [*self.phases, phase], logits, with_it
        return with_it, keep

    def mirrored_score(self) -> float:
        """The validation figure of the members kept, each averaged over the image and its
        left-right mirror (what ``assemble(mirror=True)`` makes)."""
        return self._figure([*self.logits, *(self._logits(phase, mirrored=True) for phase in self.phases)])

    def assemble(self, mirror: bool = False) -> dict[str, Any]:
        """Make the winner's run the average of the members kept (at least one besides it, or
        the winner alone with ``mirror``: each member also sees the mirrored image): the
        winner alone is copied to ``<run>-member0`` first, then the run's checkpoints hold
        the averaged model, calibrated again on validation (temperature, the training shares'
        bias), and its metadata the new calibration. Returns the calibration record.

        A kill part-way leaves the winner or the ensemble in the run (each checkpoint is
        replaced whole), never a model that does not load."""
        from models.supervised import Averaged

        run, ws = self.winner, self.ws
        meta = ws.run_metadata(run)
        _copy_winner(ws, run, f"{run}-member0")
        phase = load_run_phase(ws, run)
        phase.model = Averaged([p.model for p in self.phases], [p.config.backbone for p in self.phases],
                               mirror=mirror).eval()
        fitted = phase.finish(self.val_x, self.val_y,
                              train_counts=evened_counts(ws, phase, self.dataset, meta.get("balance") or ""))
        with ws.lock("run", run):
            best = load_checkpoint(ws.run_dir(run) / "best.pt")
            payload = {**{k: v for k, v in best.items() if k not in ("optimizer_state", "scheduler_state", "ema_state")},
                       "model_args": phase.model_args(), "model_state": phase.model.state_dict(),
                       "extra": phase.extra(), "best_metric": self.mirrored_score() if mirror else self.score,
                       "finished": True}
            save_checkpoint(ws.run_dir(run) / "best.pt", payload)
            save_checkpoint(ws.run_dir(run) / "last.pt", payload)
            Run(ws, run).merge(calibration=fitted)
        return fitted


def _copy_winner(ws: Workspace, run: str, alone: str) -> None:
    """The winner's own model as the hidden run ``alone`` (what it measured before averaging)."""
    folder = ws.run_dir(alone)
    if folder.exists():
        raise TrainingError(f"Run {alone!r} already exists: the search's winner cannot be kept under that name.")
    with ws.lock("run", alone):
        folder.mkdir(parents=True)
        save_checkpoint(folder / "best.pt", load_checkpoint(ws.run_dir(run) / "best.pt"))
        gate = ws.run_dir(run) / "ood_gate.json"
        if gate.exists():
            (folder / "ood_gate.json").write_bytes(gate.read_bytes())
        write_state(folder / "metadata.json", Kind.RUN_METADATA,
                    {**read_state(ws.run_dir(run) / "metadata.json", Kind.RUN_METADATA), "run": alone,
                     "trial_of": run})
