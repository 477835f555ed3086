#!/usr/bin/env python3
"""Write the pictures of docs/pictures/ from the app as it is now, so the guide shows what users see.

Runs the fast demo workflow in a pseudo-terminal (100 x 30) in a temporary workspace,
photographs the screen while it trains, copies the report plots of its runs, predicts
on a few demo images for an overlay, and writes:

    docs/pictures/progress.png           the workflow training, as the terminal shows it
    docs/pictures/learning_curves.png    the supervised run's learning curves
    docs/pictures/confusion_test.png     its confusion matrix on the test split
    docs/pictures/reliability_test.png   its reliability diagram (calibration)
    docs/pictures/gradcam_test.png       Grad-CAM overlays
    docs/pictures/hybrid_scores_test.png the hybrid's score histogram and threshold
    docs/pictures/hybrid_residuals_test.png  the hybrid's residual maps
    docs/pictures/prediction_overlay.png a prediction overlay from `predict`

    python scripts/docs_pictures.py [--out docs/pictures]   (about 1.5-7 minutes on 2 cores, by the processor;
    needs the test tools pexpect and pyte, which ./test.sh installs)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLOURS = {
    "default": (220, 220, 220), "black": (40, 40, 40), "red": (205, 49, 49), "green": (13, 188, 121),
    "brown": (229, 229, 16), "yellow": (229, 229, 16), "blue": (36, 114, 200), "magenta": (188, 63, 188),
    "cyan": (17, 168, 205), "white": (229, 229, 229), "brightblack": (118, 118, 118), "brightred": (241, 76, 76),
    "brightgreen": (35, 209, 139), "brightyellow": (245, 245, 67), "brightblue": (59, 142, 234),
    "brightmagenta": (214, 112, 214), "brightcyan": (41, 184, 219), "brightwhite": (255, 255, 255),
}
BACKGROUND = (24, 24, 24)


def _colour(name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if name in COLOURS:
        return COLOURS[name] if name != "default" else default
    if len(name) == 6:
        try:
            return tuple(int(name[k : k + 2], 16) for k in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            pass
    return default


def screen_png(screen, path: Path) -> None:
    """A pyte screen drawn as a terminal shows it (DejaVu Sans Mono, its colours)."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_file = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    font = ImageFont.truetype(str(font_file), 15)
    left, top, right, bottom = font.getbbox("M")
    cell_w, cell_h = right - left + 1, 19
    image = Image.new("RGB", (screen.columns * cell_w + 16, screen.lines * cell_h + 16), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for y in range(screen.lines):
        line = screen.buffer[y]
        for x in range(screen.columns):
            char = line[x]
            fg, bg = _colour(char.fg, COLOURS["default"]), _colour(char.bg, BACKGROUND)
            if char.reverse:
                fg, bg = bg, fg
            box = (8 + x * cell_w, 8 + y * cell_h)
            if bg != BACKGROUND:
                draw.rectangle([box, (box[0] + cell_w, box[1] + cell_h)], fill=bg)
            if char.data.strip():
                glyph = "•" if 0x2800 <= ord(char.data[0]) <= 0x28FF or ord(char.data[0]) >= 0x1FB00 else char.data
                draw.text(box, glyph, font=font, fill=fg)  # spinners: a dot where the font has no glyph
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> int:
    from tests.menus.terminal import Terminal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pictures")
    args = parser.parse_args()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        t = Terminal(workspace, columns=100, lines=30, args=("workflow", "--dataset", "demo", "--yes", "--fast"))
        try:
            t.wait("Train supervised classifier", timeout=600)
            _watch(t, r"supervised-\S+ epoch [5-9]/15[\s\S]*Epochs .* [5-9]/15 .*eta", timeout=900)  # a few epochs in: bars, counts, times, figures
            screen_png(t.screen, out / "progress.png")
            t.child.expect(__import__("pexpect").EOF, timeout=1800)
        finally:
            t.close()
        _copy_results(workspace, out)
    for picture in sorted(out.glob("*.png")):
        print(f"{picture.relative_to(ROOT)}  {picture.stat().st_size // 1024} KB")
    return 0


def _watch(t, pattern: str, timeout: float) -> None:
    """Feed the screen chunk by chunk and stop at the first frame that shows ``pattern``.

    ``Terminal.wait`` reads until the output pauses, which in training (bars redraw ten
    times a second) is the end of the phase: the photograph would come too late.
    """
    import re

    import pexpect

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = t.child.read_nonblocking(4096, timeout=1)
        except pexpect.TIMEOUT:
            continue
        t.stream.feed(chunk)
        if re.search(pattern, t.display()):
            return
    raise AssertionError(f"{pattern!r} never showed; the screen:\n{t.display()}")


def _copy_results(workspace: Path, out: Path) -> None:
    from app.predict import predict
    from app.workspace import Workspace

    ws = Workspace.open(workspace)
    runs = {m["phase"]: m["run"] for m in ws.runs() if m["status"] == "complete"}
    evaluation = ws.run_dir(runs["supervised"]) / "evaluation"
    for name in ("learning_curves.png", "confusion_test.png", "reliability_test.png", "gradcam_test.png"):
        found = evaluation / name if (evaluation / name).exists() else ws.run_dir(runs["supervised"]) / name
        shutil.copyfile(found, out / name)
    hybrid = ws.run_dir(runs["hybrid"]) / "evaluation"
    for name in ("scores_test.png", "residuals_test.png"):
        shutil.copyfile(hybrid / name, out / f"hybrid_{name}")
    raw = next(p for p in (workspace / "data" / "raw").rglob("*") if p.is_dir() and any(p.glob("*.png")))
    sample = Path(workspace) / "sample"
    sample.mkdir()
    for path in sorted(raw.glob("*.png"))[:4]:
        shutil.copyfile(path, sample / path.name)
    result = predict(ws, sample)
    shutil.copyfile(result.overlays[0], out / "prediction_overlay.png")


if __name__ == "__main__":
    raise SystemExit(main())
