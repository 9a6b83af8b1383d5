"""Screenshot a run's report.html in headless Chromium, to look at the page as a reader would.

    .venv/bin/python scripts/screenshot_report.py runs/demo [--out DIR] [--width 1280] [--height 1800]

Writes the report first when RUN_DIR has none (or with --rebuild), takes one tall screenshot (full.png, trimmed to
the page's content), and cuts it into screenfuls of --height pixels (page-01.png, ...), printing each file's size.
Needs Debian's `chromium` (apt-get install -y chromium) and Pillow (installed with matplotlib).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("no chromium found: install it with `apt-get install -y chromium` (Debian) and rerun")


def shoot(chrome: str, page: Path, out: Path, width: int, height: int) -> None:
    cmd = [
        chrome,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--screenshot={out.resolve()}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=2000",
        page.resolve().as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if r.returncode != 0 or not out.is_file():
        sys.exit(f"chromium failed ({r.returncode}): {r.stderr.strip()[-800:]}")


def trim(path: Path) -> tuple[int, int, bool]:
    """Cut the empty background off the bottom; returns (width, height, whether anything was cut)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    bg = img.getpixel((w - 1, h - 1))
    px = img.load()
    bottom = h
    while bottom > 1 and all(px[x, bottom - 1] == bg for x in range(0, w, 4)):
        bottom -= 1
    bottom = min(h, bottom + 24)
    if bottom < h:
        img.crop((0, 0, w, bottom)).save(path)
    return w, bottom, bottom < h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default RUN_DIR/screenshots)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1800, help="height of each screenful")
    ap.add_argument("--max-height", type=int, default=24000, help="window height of the tall shot")
    ap.add_argument("--rebuild", action="store_true", help="rewrite the report first")
    args = ap.parse_args()

    report = args.run_dir / "report.html"
    if args.rebuild or not report.is_file():
        from legibility.report import write_report

        write_report(args.run_dir)
    out = args.out or args.run_dir / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    full = out / "full.png"
    shoot(browser(), report, full, args.width, args.max_height)
    w, h, trimmed = trim(full)
    print(f"{report}: {report.stat().st_size:,} bytes; page {w}x{h} px")
    if not trimmed:
        print(f"warning: the page may be longer than --max-height {args.max_height}: raise it")
    img = Image.open(full)
    for k in range(math.ceil(h / args.height)):
        piece = out / f"page-{k + 1:02d}.png"
        img.crop((0, k * args.height, w, min(h, (k + 1) * args.height))).save(piece)
        pw, ph = Image.open(piece).size
        print(f"{piece}: {pw}x{ph} px, {piece.stat().st_size:,} bytes")
    print(f"{full}: {w}x{h} px, {full.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
