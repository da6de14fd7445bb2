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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default="runs/demo/report/report.html")
    ap.add_argument("--png", help="screenshot path (default: report.screenshot.png beside the HTML)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
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
    text = html.read_text(encoding="utf-8")
    tags = len(re.findall(r"<img\b", text))
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp, html.name)
        probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = chromium(args.chromium, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'id="eeca-img-check">(\d+)/(\d+)<', dom.stdout)
    shot = chromium(args.chromium, f"--screenshot={png}", "--window-size=1400,4000", html.as_uri())
    if found is None:
        print(f"report_screenshot: the page did not finish loading in Chromium:\n{dom.stderr[-2000:]}",
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
