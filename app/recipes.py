"""Recipe search: a good classifier for a dataset nobody tuned on, chosen on validation only.

A recipe is what the hand-tuned benchmark flags were: backbone, input size, augmentation,
mixup, weight average (EMA), learning rate. ``search_and_train`` screens the recipes that
suit small medical sets (architectures, attention blocks and input sizes; see RECIPES_2D)
by successive halving: every recipe trains a few epochs as a run of its own (its
learning-rate schedule run to the end) and is scored by its best validation figure (the
``monitor`` the training loop keeps its best epoch by: the validation AUC); the better
half goes on from its weights for twice as long, and so on until two remain (each round
gets the same time, so eight recipes cost what four did with equal shares). The better of
the last two is the winner, trained for the rest of the budget from the weights its
screening ended with (a warm restart: new optimizer and schedule, its plan fitted to the
time left), so its screening epochs are not lost. Time left once the winner has its 100
epochs trains more members, and those validation keeps are averaged into the final run
(the best few, app/ensemble.py). Last, the mirror view: each image averaged with its
left-right mirror inside the model (test-time augmentation the exported graph does too),
for recipes that trained on mirrored images, unless validation scores it lower
(_mirror_choice). The test split is never read: the trials, their figures and the
choices are written into the final run's metadata (``recipe``, ``trials``, ``ensemble``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from app.data import loads_kept
from app.timing import probe_seconds_per_epoch
from core.errors import TrainingError
from app.progress import Progress
from app.training import RunResult, train
from app.runs import Run
from app.workspace import Workspace

log = logging.getLogger(__name__)

SCREEN_SHARE = 0.3  # of the budget spent screening (all recipes and rounds together)
ETA = 2  # successive halving: each round keeps the better 1/ETA of the recipes (rounded up)
MIN_SCREEN_EPOCHS = 2  # fewer says nothing about how a recipe learns
MAX_EPOCHS = 100  # the plan of the final run grows no further (MedMNIST's protocol trains 100)


@dataclass(frozen=True)
class Recipe:
    name: str
    backbone: str
    image_size: int
    augment: str = "strong"
    mixup: float = 0.0
    ema: float = 0.0
    lr: float = 3e-3

    def options(self) -> dict[str, Any]:
        """The supervised phase's settings for this recipe."""
        found = asdict(self)
        found.pop("name")
        return found


# Small medical sets, trained from scratch on a CPU in minutes. Only the architecture and
# the input size are screened: the regularization that won on both hand-tuned sets (strong
# augmentation, mixup, a weight average) pays off over tens of epochs, which a short screen
# cannot show (a first version that screened it picked the plain recipe on both sets and
# lost to the hand-tuned ones: docs/benchmarks.md). The first recipe wins ties (TIE), and
# the order ranks equal figures when a round halves. Attention pooling is not among them:
# at the 32-64 px a CPU budget allows, the last feature map is 1 x 1 to 2 x 2 cells, with
# nothing to attend over; attention inside the blocks (CBAM, SE) sees the larger maps.
RECIPES_2D = (
    # BreastMNIST's hand-tuned family: a light ResNet at 64 px.
    Recipe("resnet10t-64", "resnet10t", 64, "strong", mixup=0.4, ema=0.99),
    # PneumoniaMNIST's: EfficientNet-B0 at 64 px.
    Recipe("efficientnet_b0-64", "efficientnet_b0", 64, "strong", mixup=0.4, ema=0.99),
    # The MedMNIST v2 baseline's family near the files' own 28 px: four times cheaper a step.
    Recipe("resnet18-32", "resnet18", 32, "strong", mixup=0.4, ema=0.99),
    # The light ResNet at 32 px: the most epochs in the budget, for larger sets.
    Recipe("resnet10t-32", "resnet10t", 32, "strong", mixup=0.4, ema=0.99),
    # Attention in every residual block: CBAM (channel, then spatial; timm.layers) on the light ResNet.
    Recipe("resnet10t+cbam-64", "resnet10t+cbam", 64, "strong", mixup=0.4, ema=0.99),
    # Squeeze-excitation (channel attention) on the baseline's ResNet-18.
    Recipe("seresnet18-32", "seresnet18", 32, "strong", mixup=0.4, ema=0.99),
    # A ConvNeXt small enough for the CPU (3.4 M parameters; patchify stem, LayerNorm).
    Recipe("convnext_atto-64", "convnext_atto", 64, "strong", mixup=0.4, ema=0.99),
    # A RegNet of 0.2 GFLOPs at 224 px (2.3 M parameters): the cheapest step here.
    Recipe("regnetx_002-64", "regnetx_002", 64, "strong", mixup=0.4, ema=0.99),
)
RECIPE_KEYS = ("backbone", "image_size", "augment", "lr", "ema", "mixup")  # what a recipe sets
FLAGS = {"image_size": "--image-size"}  # command-line spellings that are not the key with dashes


def auto_problem(phase: str, settings: dict[str, Any]) -> str | None:
    """Why the recipe search cannot take these settings (None: it can)."""
    if phase != "supervised":
        return f"the recipe search trains the supervised phase, not {phase!r}: leave out --recipe auto"
    given = [FLAGS.get(k, "--" + k.replace("_", "-")) for k in RECIPE_KEYS if settings.get(k) is not None]
    if given:
        return (f"the recipe search chooses {', '.join(given)} itself: leave them out, or use --recipe flags to "
                "train them as given")
    if settings.get("epochs") is not None:
        return "the recipe search plans its epochs from --minutes: leave out --epochs"
    return None


TIE = 0.005  # validation figures this close are a tie: small validation splits cannot tell them apart
MEMBER_SHARE = 0.2  # of the budget left after the winner's run: enough to train one more member of an ensemble
MAX_MEMBERS = 4  # runs averaged at most, the winner included ("the best few")


def seconds_per_epoch(recipe: Recipe, train_images: int, batch_size: int, device: str = "cpu",
                      channels: int = 1) -> float:
    """probe_seconds_per_epoch for the recipe's model and input size."""
    from models.supervised import create_backbone

    model = create_backbone(recipe.backbone, 2, pretrained=False, in_chans=channels)
    return probe_seconds_per_epoch(model, (channels, recipe.image_size, recipe.image_size), train_images, batch_size,
                                   device)


def round_sizes(recipes: int) -> list[int]:
    """Recipes screened in each round of successive halving: all of them, then the better
    half (rounded up) of the round before, down to two; the last round's best is the winner."""
    found = [recipes]
    while found[-1] > 2:
        found.append(math.ceil(found[-1] / ETA))
    return found


def round_shares(recipes: int, budget_s: float) -> list[float]:
    """Seconds each recipe of each round is screened for: every round gets an equal part of
    SCREEN_SHARE of the budget, shared among the recipes still in it (so a recipe that stays
    in is screened twice as long in each round as in the one before)."""
    sizes = round_sizes(recipes)
    return [SCREEN_SHARE * budget_s / (len(sizes) * n) for n in sizes]


def screen_epochs(per_epoch: dict[str, float], share_s: float) -> dict[str, int]:
    """Epochs each recipe is screened for in ``share_s`` seconds, at least MIN_SCREEN_EPOCHS."""
    return {name: max(MIN_SCREEN_EPOCHS, int(share_s / max(seconds, 1e-9))) for name, seconds in per_epoch.items()}


def screen_samples(per_epoch: dict[str, float], share_s: float, train_images: int,
                   batch_size: int) -> dict[str, int | None]:
    """Training images each screening epoch draws: all of them (None) when MIN_SCREEN_EPOCHS
    whole epochs fit in a recipe's ``share_s`` seconds; else a random sample that fits (a
    large set is screened on samples, each recipe for the same time)."""
    found: dict[str, int | None] = {}
    for name, seconds in per_epoch.items():
        fits = int(train_images * share_s / (MIN_SCREEN_EPOCHS * max(seconds, 1e-9)))
        found[name] = None if fits >= train_images else max(4 * batch_size, fits)
    return found


def search_and_train(ws: Workspace, dataset: str, budget_s: float, *, run: str, seed: int = 0,
                     batch_size: int = 64, recipes: tuple[Recipe, ...] | None = None,
                     epochs: dict[str, int] | None = None, progress: Progress | None = None,
                     should_stop: Callable[[], bool] | None = None, ensemble: bool = True,
                     **options: Any) -> tuple[RunResult, dict[str, Any]]:
    """Screen ``recipes`` (default RECIPES_2D) on validation by successive halving, train the
    winner on from its weights to the end of ``budget_s``.

    Round 0 trains every recipe briefly (``<run>-trial<k>``); each later round goes on with
    the better half of the round before from its weights (``<run>-trial<k>-round<r>``, a
    warm restart), each for twice as long, until two remain; the better of the last two
    (ties within TIE: the first listed) is the winner. ``epochs`` (recipe name -> epochs of
    every round) is measured from a probe on this device when not given (round_shares).
    Returns the final run (``run``) and what the search did: ``{"recipe": ..., "trials":
    [{recipe, run, round, epochs, val_monitor, seconds}, ...]}``, also written into that
    run's metadata.json. When ``should_stop`` asks, the run training then stops after its
    epoch and is returned as it is (status "stopped"; a stopped trial has ``"stopped":
    True`` in the record and no recipe chosen): resuming the final run goes on with the
    chosen recipe, a search stopped during screening starts again. With ``ensemble`` (the
    default), time left once the winner's run is complete (it reached MAX_EPOCHS) trains
    more members (``<run>-member1``, ...; see _members); those validation keeps are
    averaged into ``run`` itself, one model (app/ensemble.py). The record's ``ensemble``
    says what validation said of each member and which runs were averaged (``runs``: the
    winner alone kept as ``<run>-member0``, then the members). Trials and members are hidden
    runs that never predict: they fit no out-of-distribution gate (seconds each on a large
    set); ``run`` fits its own.

    Raises:
        TrainingError: ``run`` already exists (a search needs fresh run names).
    """
    from app.runtime import current_runtime
    from app.state import Kind, read_state

    recipes = recipes or RECIPES_2D
    began = time.perf_counter()
    if ws.run_dir(run).exists():
        raise TrainingError(f"Run {run!r} already exists: give the search a new run name (its trials are named "
                            f"{run}-trial0, -trial1, ...).")
    train_images = sum(1 for _ in _train_rows(ws, dataset))
    per_epoch: dict[str, float] = {}
    if epochs is None:
        device = current_runtime().device
        channels = int(read_state(ws.organized_path(dataset) / "training_config.json",
                                  Kind.TRAINING_CONFIG).get("channels", 1))
        per_epoch = {r.name: seconds_per_epoch(r, train_images, batch_size, device, channels) for r in recipes}
    with loads_kept():  # a large split is decoded once per input size, not once per recipe
        return _search(ws, dataset, budget_s, began, train_images, run, seed, batch_size, recipes, epochs, per_epoch,
                       progress, should_stop, ensemble, options)


def _search(ws: Workspace, dataset: str, budget_s: float, began: float, train_images: int, run: str, seed: int,
            batch_size: int, recipes: tuple[Recipe, ...], epochs: dict[str, int] | None, per_epoch: dict[str, float],
            progress: Progress | None, should_stop: Callable[[], bool] | None, ensemble: bool,
            options: dict[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    trials: list[dict[str, Any]] = []
    alive = list(range(len(recipes)))  # indices into recipes, in their listed order
    latest: dict[int, dict[str, Any]] = {}  # recipe index -> its trial of the round just screened
    for number, (size, share) in enumerate(zip(round_sizes(len(recipes)), round_shares(len(recipes), budget_s))):
        if number:  # the better half goes on: ranked by figure, ties to the first listed
            alive = sorted(sorted(alive, key=lambda k: -latest[k]["val_monitor"])[:size])
        timed = {recipes[k].name: per_epoch[recipes[k].name] for k in alive} if per_epoch else {}
        planned = epochs or screen_epochs(timed, share)
        samples = screen_samples(timed, share, train_images, batch_size) if timed else {}
        for k in alive:
            recipe, started = recipes[k], time.perf_counter()
            # A sampled screen is also held to its share of the time (loading and validation count too).
            limit = {"time_limit_s": share} if samples.get(recipe.name) else {}
            name = f"{run}-trial{k}" + (f"-round{number}" if number else "")
            with _hidden(ws, name, run):
                result = train(ws, dataset, "supervised", run=name, epochs=planned[recipe.name],
                               init_from=latest[k]["run"] if number else None, batch_size=batch_size, seed=seed,
                               patience=MAX_EPOCHS, progress=progress, should_stop=should_stop,
                               epoch_images=samples.get(recipe.name), ood_gate=False, **limit, **recipe.options(),
                               **options)
            meta = ws.run_metadata(result.run)
            latest[k] = {"recipe": recipe.name, "run": result.run, "round": number, "epochs": len(meta["history"]),
                         "val_monitor": round(float(meta["best_metric"]), 4),
                         "seconds": round(time.perf_counter() - started, 1),
                         **({"epoch_images": samples[recipe.name]} if samples.get(recipe.name) else {})}
            trials.append(latest[k])
            if result.status == "stopped":
                return result, {"recipe": None, "trials": trials, "stopped": True}
    last = [latest[k] for k in alive]
    top = max(t["val_monitor"] for t in last)
    best = next(t for t in last if t["val_monitor"] >= top - TIE)  # of near-equals, the first listed
    winner = next(r for r in recipes if r.name == best["recipe"])
    left = max(1.0, budget_s - (time.perf_counter() - began))
    # A first plan in whole epochs (a screened sample scaled up); the run refits it once timed,
    # and draws its epochs as samples too when whole ones would not fit often enough.
    per_epoch_s = best["seconds"] / max(1, best["epochs"]) * train_images / (best.get("epoch_images") or train_images)
    planned = max(1 if best.get("epoch_images") else MIN_SCREEN_EPOCHS, min(MAX_EPOCHS, int(left / max(per_epoch_s, 1e-9))))
    result = train(ws, dataset, "supervised", run=run, init_from=best["run"], epochs=planned, batch_size=batch_size,
                   seed=seed, time_limit_s=left, max_epochs=MAX_EPOCHS, patience=MAX_EPOCHS, progress=progress,
                   should_stop=should_stop, **winner.options(), **options)
    record: dict[str, Any] = {"recipe": {"name": winner.name, **winner.options()}, "trials": trials}
    spare = budget_s - (time.perf_counter() - began)
    if result.status == "complete":
        record["ensemble"] = _members(ws, dataset, run, budget_s, began, last, best, recipes, seed, batch_size,
                                      progress, should_stop, options,
                                      train_more=ensemble and spare >= MEMBER_SHARE * budget_s)
    Run(ws, run).merge(**record)
    return result, record


def _members(ws: Workspace, dataset: str, run: str, budget_s: float, began: float, trials: list[dict[str, Any]],
             best: dict[str, Any], recipes: tuple[Recipe, ...], seed: int, batch_size: int,
             progress: Progress | None, should_stop: Callable[[], bool] | None,
             options: dict[str, Any], train_more: bool = True) -> dict[str, Any]:
    """While time is left after the winner's run (it reached MAX_EPOCHS early; ``train_more``), more members
    (``<run>-member1``, ``-member2``, ... up to MAX_MEMBERS runs in all; hidden runs like the
    trials), each trained on for the time left: first the runner-up of the last screening
    round (``trials``), when it has the winner's input size and screened within 2 TIE of it
    (from its screening weights), then the
    winner's recipe again from scratch with the next seeds. A member is kept only when the
    average of the logits with it scores at least the average without it on validation
    (app.ensemble.Members); the first member that stops or fails ends the search (a
    member whose training raises is logged and named in the record's ``failed``; the
    winner's run and the members before it stand). Then the mirror (_mirror_choice): when
    the recipe trained on mirrored images too and validation does not score the mirrored
    average lower, each member also sees the image's mirror. When a member was kept or the
    mirror chosen, ``run`` becomes their average (Members.assemble; the winner alone stays
    as ``<run>-member0``)."""
    from app.ensemble import Members

    size = next(r for r in recipes if r.name == best["recipe"]).image_size
    others = sorted((t for t in trials if t is not best), key=lambda t: -t["val_monitor"])  # the last round's
    close = [t for t in others if t["val_monitor"] >= best["val_monitor"] - 2 * TIE
             and next(r for r in recipes if r.name == t["recipe"]).image_size == size]  # one input for all
    plan = [(t, True, seed) for t in close] + [(best, False, seed + k) for k in range(1, MAX_MEMBERS)]
    found = Members(ws, dataset, run)
    alone = found.score
    members: list[dict[str, Any]] = []
    failed = ""
    for k, (chosen, warm, member_seed) in enumerate(plan[: MAX_MEMBERS - 1] if train_more else [], start=1):
        spare = budget_s - (time.perf_counter() - began)
        if spare < MEMBER_SHARE * budget_s:
            break
        recipe = next(r for r in recipes if r.name == chosen["recipe"])
        member, started = f"{run}-member{k}", time.perf_counter()
        per_epoch = chosen["seconds"] / max(1, chosen["epochs"])
        planned = max(MIN_SCREEN_EPOCHS, min(MAX_EPOCHS, int(spare / max(per_epoch, 1e-9))))
        try:
            with _hidden(ws, member, run):
                done = train(ws, dataset, "supervised", run=member, init_from=chosen["run"] if warm else None,
                             epochs=planned, batch_size=batch_size, seed=member_seed, time_limit_s=spare,
                             max_epochs=MAX_EPOCHS, patience=MAX_EPOCHS, progress=progress, should_stop=should_stop,
                             ood_gate=False, **recipe.options(), **options)
        except Exception as error:  # a member is an extra: the winner's run is complete and stays what it is
            log.warning("Training the ensemble member %s failed (%s); the search keeps the models before it.",
                        member, error)
            failed = f"{member}: {error}"
            break
        before = found.score
        with_it, keep = found.judge(member, done.status == "complete")
        members.append({"member": member, "recipe": recipe.name, "seed": member_seed, "val_auc_before": round(before, 4),
                        "val_auc_with": round(with_it, 4), "kept": keep,
                        "seconds": round(time.perf_counter() - started, 1)})
        if done.status != "complete":
            break
    averaged = [best["recipe"], *(m["recipe"] for m in members if m["kept"])]
    flipped = all((ws.run_metadata(name).get("flips") or {}).get("used", True) for name in found.runs)
    mirror = _mirror_choice(found, [r for r in recipes if r.name in averaged], flipped)
    record = {"runs": found.runs, "members": members, "val_auc_alone": round(alone, 4),
              "val_auc": round(found.score, 4),  # the members' average, single view (the mirror has its own)
              **({"mirror": mirror} if mirror else {}), **({"failed": failed} if failed else {})}
    if len(found.runs) > 1 or mirror.get("kept"):
        try:
            found.assemble(mirror=bool(mirror.get("kept")))
        except Exception as error:  # each checkpoint is replaced whole: the run stays the winner's model
            log.warning("Writing the average into %s failed (%s); the run stays the winner alone.", run, error)
            record["average_failed"] = str(error)
            record["runs"], record["val_auc"] = [run], round(alone, 4)
            record.pop("mirror", None)  # not in the model
            return record
        record["runs"] = [f"{run}-member0", *found.runs[1:]]  # the winner alone, and the members averaged with it
        record["averaged_in"] = run
        Run(ws, run).merge(ensemble=record)  # at once: the run's model is the average from now on
    return record


MIRROR_TIE = TIE  # the mirror is kept unless validation scores the mirrored average this much lower


def _mirror_choice(found: Any, averaged: list[Recipe], flipped: bool = True) -> dict[str, Any]:
    """Whether the run's model also averages each image with its left-right mirror (test-time
    augmentation, folded into the model and its exported graph). Only when every recipe
    ``averaged`` into the run trained on mirrored images too (its augmentation flips): there
    the mirror is an image the model was taught to read like the original, and averaging
    the two views is an ensemble at no training cost. Validation can refuse it: the mirror
    is kept unless the mirrored average scores more than MIRROR_TIE below the average
    without it. An empty dict: not considered (a recipe trained without flips, or runs
    whose training left flips out, ``flipped`` False: classes that mirror each other,
    app/laterality.py)."""
    if not averaged or not flipped or any(recipe.augment == "none" for recipe in averaged):
        return {}
    single, mirrored = found.score, found.mirrored_score()
    return {"val_auc_single": round(single, 4), "val_auc_mirrored": round(mirrored, 4),
            "kept": mirrored >= single - MIRROR_TIE}


@contextmanager
def _hidden(ws: Workspace, name: str, search: str) -> Iterator[None]:
    """Marks the run ``name`` a hidden run of ``search`` (``trial_of``: kept out of routing,
    resume and the runs table) once its training returns, and also when it raises."""
    try:
        yield
    finally:
        if (ws.run_dir(name) / "metadata.json").exists():
            Run(ws, name).merge(trial_of=search)


def _train_rows(ws: Workspace, dataset: str) -> list[dict[str, Any]]:
    from app.data import split_rows

    return [r for r in split_rows(ws, dataset, "train") if r["labeled"]]
