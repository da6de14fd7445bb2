"""``browser.html``: every test question with its image, truth, each cell's k answers and every judge's verdict.

One file that opens from disk: thumbnails are embedded as JPEG data URIs, the data as one JSON
block (strings stored once and referred to by index: answers repeat across cells and runs), and a
small vanilla script renders one page of questions at a time, so 2,500 questions x 10 cells open in
about a second. No request leaves the file (no external script, style, font or image).

Filters: by cell (show one cell's answers), by level (a shown cell got this level from a judge),
by disagreement (between cells: one judge rates the question recognised for some cells and not
others; between judges: two judges give one cell different levels), and by text (id, name, answers).
Recognised = Strongly Known or Known (paper 3.1).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from eeca.report.data import LEVEL_NAMES, LEVELS
from eeca.report.questions import CellAnswers, Truth

PAGE_SIZE = 20


@dataclass
class BrowserCell:
    """A cell as the browser shows it: its label (with the run's name when several runs are shown)."""

    label: str
    answers: CellAnswers


class _Strings:
    def __init__(self):
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.items)
            self.items.append(s)
        return i


def browser_data(cells: list[BrowserCell], truth: dict[str, Truth], thumbs: dict[str, str | None]) -> dict:
    """The JSON the page renders: questions in id order of the truth, then ids only some cell answered."""
    s = _Strings()
    judges = sorted({j for c in cells for j in c.answers.verdicts})
    ids = list(truth) + sorted({i for c in cells for i in c.answers.answers} - set(truth))
    questions = []
    for qid in ids:
        t = truth.get(qid)
        per_cell = []
        for c in cells:
            verdicts = [[LEVELS.index(v[0]), s(v[1])] if (v := c.answers.verdicts.get(j, {}).get(qid)) else None
                        for j in judges]
            answers = c.answers.answers.get(qid)
            per_cell.append(None if answers is None and not any(verdicts) else
                            [[s(a) for a in answers or []], verdicts])
        questions.append([qid, s(thumbs.get(qid) or ""), s(t.name if t else ""), s(t.reference if t else ""),
                          [s(e) for e in (t.entities if t else ())], s(t.label if t else ""),
                          s(t.question if t else ""), per_cell])
    return {"cells": [c.label for c in cells], "judges": judges, "levels": [LEVEL_NAMES[lv] for lv in LEVELS],
            "strings": s.items, "questions": questions, "page_size": PAGE_SIZE}


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
#controls { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ddd; z-index: 1; }
#controls label { margin-right: 1em; }
.q { border: 1px solid #ddd; margin: 0.8em 0; padding: 0.6em; }
.head { display: flex; gap: 1em; }
.head img { width: 128px; height: auto; border: 1px solid #eee; }
.truth { font-size: 0.92em; }
table { border-collapse: collapse; width: 100%; margin-top: 0.5em; font-size: 0.88em; table-layout: fixed; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.4em; vertical-align: top; text-align: left;
         overflow-wrap: anywhere; }
th { background: #f4f4f4; }
td ol { margin: 0; padding-left: 1.3em; }
.lv { font-weight: 600; padding: 0 0.3em; border-radius: 3px; }
.lv0 { background: #1b7837; color: #fff; } .lv1 { background: #7fbf7b; } .lv2 { background: #f1a340; }
.lv3 { background: #bdbdbd; }
.ex { color: #555; font-size: 0.92em; }
.none { color: #999; }
"""

_JS = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const S = D.strings, $ = id => document.getElementById(id);
const esc = s => s.replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
let page = 0, shown = [];
function opt(sel, value, text) { const o = document.createElement('option'); o.value = value; o.textContent = text; sel.appendChild(o); }
opt($('cell'), '', 'all cells'); D.cells.forEach((c, i) => opt($('cell'), i, c));
opt($('level'), '', 'any level'); D.levels.forEach((l, i) => opt($('level'), i, l));
opt($('judge'), '', 'any judge'); D.judges.forEach((j, i) => opt($('judge'), i, j));
[['', 'no disagreement filter'], ['cells', 'cells disagree (recognised or not)'], ['judges', 'judges disagree (level)']]
  .forEach(([v, t]) => opt($('disagree'), v, t));
const recognised = lv => lv <= 1;
function cellsDisagree(q, cells, judges) {
  return judges.some(j => { const r = new Set(cells.map(c => q[7][c] && q[7][c][1][j])
    .filter(v => v).map(v => recognised(v[0]))); return r.size > 1; });
}
function judgesDisagree(q, cells) {
  return cells.some(c => { const v = q[7][c] ? q[7][c][1].filter(x => x) : []; return new Set(v.map(x => x[0])).size > 1; });
}
function filter() {
  const cell = $('cell').value, level = $('level').value, judge = $('judge').value, dis = $('disagree').value;
  const text = $('text').value.trim().toLowerCase();
  const cells = cell === '' ? D.cells.map((_, i) => i) : [+cell];
  const judges = judge === '' ? D.judges.map((_, i) => i) : [+judge];
  shown = D.questions.filter(q => {
    if (!cells.some(c => q[7][c])) return false;
    if (level !== '' && !cells.some(c => q[7][c] && judges.some(j => q[7][c][1][j] && q[7][c][1][j][0] === +level))) return false;
    if (dis === 'cells' && !cellsDisagree(q, D.cells.map((_, i) => i), judges)) return false;
    if (dis === 'judges' && !judgesDisagree(q, cells)) return false;
    if (text && !(q[0] + ' ' + S[q[2]] + ' ' + cells.map(c => q[7][c] ? q[7][c][0].map(a => S[a]).join(' ') : '').join(' '))
      .toLowerCase().includes(text)) return false;
    return true;
  });
  page = 0; render();
}
function verdict(v) {
  return v ? `<span class="lv lv${v[0]}">${esc(D.levels[v[0]])}</span> <span class="ex">${esc(S[v[1]])}</span>` : '<span class="none">no verdict</span>';
}
function render() {
  const cell = $('cell').value, cells = cell === '' ? D.cells.map((_, i) => i) : [+cell];
  const pages = Math.max(1, Math.ceil(shown.length / D.page_size));
  page = Math.min(Math.max(page, 0), pages - 1);
  $('count').textContent = `${shown.length} of ${D.questions.length} questions; page ${page + 1} of ${pages}`;
  const head = '<tr><th style="width:14%">cell</th><th>answers</th>' + D.judges.map(j => `<th style="width:22%">${esc(j)}</th>`).join('') + '</tr>';
  $('list').innerHTML = shown.slice(page * D.page_size, (page + 1) * D.page_size).map(q => {
    const img = S[q[1]] ? `<img alt="${esc(q[0])}" src="${S[q[1]]}">` : '<span class="none">no image</span>';
    const rows = cells.filter(c => q[7][c]).map(c => `<tr><td>${esc(D.cells[c])}</td><td><ol>` +
      q[7][c][0].map(a => `<li>${esc(S[a])}</li>`).join('') + '</ol></td>' +
      q[7][c][1].map(v => `<td>${verdict(v)}</td>`).join('') + '</tr>').join('');
    return `<div class="q" data-id="${esc(q[0])}"><div class="head">${img}<div class="truth">` +
      `<b>${esc(S[q[2]] || q[0])}</b> (${esc(S[q[5]])}) <code>${esc(q[0])}</code><br>` +
      `<i>${esc(S[q[6]])}</i><br>Reference: ${esc(S[q[3]])}<br>Entities: ${esc(q[4].map(e => S[e]).join(', '))}` +
      `</div></div><table>${head}${rows}</table></div>`;
  }).join('');
}
['cell', 'level', 'judge', 'disagree'].forEach(id => $(id).addEventListener('change', filter));
$('text').addEventListener('input', filter);
$('prev').addEventListener('click', () => { page--; render(); });
$('next').addEventListener('click', () => { page++; render(); });
filter();
"""


def to_browser_html(title: str, data: dict) -> str:
    """The page: controls, an empty list the script fills, the data as JSON (``</`` escaped)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    e = html.escape
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        # nothing may load from outside the file: images are data URIs, script and style inline
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{e(title)}</h1>",
        '<p>Recognised = Strongly Known or Known (paper 3.1). The level filter keeps questions where a shown '
        'cell got that level from the chosen judge(s).</p>',
        '<div id="controls"><label>Cell <select id="cell"></select></label>'
        '<label>Level <select id="level"></select></label><label>Judge <select id="judge"></select></label>'
        '<label>Disagreement <select id="disagree"></select></label>'
        '<label>Text <input id="text" type="search" size="18"></label>'
        '<button id="prev">&larr; prev</button> <button id="next">next &rarr;</button> <span id="count"></span></div>',
        '<div id="list"></div>',
        f'<script type="application/json" id="data">{payload}</script>',
        f"<script>{_JS}</script>", "</body>", "</html>", ""])
