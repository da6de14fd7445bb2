"""Open an `eeca report` HTML file in headless Chromium: check that every figure loads, take a screenshot.

    python benchmarks/report_screenshot.py [REPORT_HTML] [--png OUT.png]

REPORT_HTML defaults to the demo's report (runs/demo/report/report.html, written by `make demo`).
Two Chromium runs, offline and with a throwaway profile: one dumps the DOM after an inline script
(added to a temporary copy of the page) has counted the <img> elements that finished loading with a
non-zero natural width; one takes a 1400 x 4000 screenshot. Exits non-zero when Chromium is missing,
or when fewer images loaded than the page has <img> tags. Needs Debian's `chromium` package
(`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# writes "<loaded>/<total>" into the DOM once the page (and so every data-URI image) has loaded
PROBE = ("<script>window.addEventListener('load', () => { const all = Array.from(document.images);"
         " const ok = all.filter(i => i.complete && i.naturalWidth > 0).length;"
         " const d = document.createElement('div'); d.id = 'eeca-img-check';"
         " d.textContent = ok + '/' + all.length; document.body.appendChild(d); });</script>")


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=180)


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or ``chromium-browser``) on PATH, else None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(binary: str, html: Path, probe: str, virtual_time: bool = True) -> str:
    """The DOM of ``html`` after loading, with ``probe`` (an inline script) added before ``</body>``
    of a temporary copy beside the original (so relative links resolve the same). ``virtual_time``
    lets timers run ahead (10 s budget); off for timing the page."""
    text = html.read_text(encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=html.parent, encoding="utf-8") as f:
        f.write(text.replace("</body>", probe + "</body>"))
        f.flush()
        budget = ["--virtual-time-budget=10000"] if virtual_time else []
        dom = chromium(binary, *budget, "--dump-dom", Path(f.name).as_uri())
    return dom.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default="runs/demo/report/report.html")
    ap.add_argument("--png", help="screenshot path (default: report.screenshot.png beside the HTML)")
    ap.add_argument("--chromium", default=find_chromium() or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    html = Path(args.html).resolve()
    if not html.is_file():
        print(f"report_screenshot: {html} not found (run `make demo` or pass a report path)", file=sys.stderr)
        return 1
    if not Path(args.chromium).exists():
        print(f"report_screenshot: {args.chromium} not found; install Debian's chromium "
              "(apt-get install -y chromium)", file=sys.stderr)
        return 1
    png = Path(args.png).resolve() if args.png else html.with_name(f"{html.stem}.screenshot.png")
    tags = len(re.findall(r"<img\b", html.read_text(encoding="utf-8")))
    dom = open_page(args.chromium, html, PROBE)
    found = re.search(r'id="eeca-img-check">(\d+)/(\d+)<', dom)
    shot = chromium(args.chromium, f"--screenshot={png}", "--window-size=1400,4000", html.as_uri())
    if found is None:
        print("report_screenshot: the page did not finish loading in Chromium",
              file=sys.stderr)
        return 1
    loaded, total = map(int, found.groups())
    ok = loaded == total == tags and png.is_file()
    print(f"report_screenshot: {loaded}/{total} images loaded (<img> tags in the file: {tags}); "
          f"screenshot {png} ({png.stat().st_size if png.is_file() else 0} bytes, rc {shot.returncode}): "
          f"{'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
