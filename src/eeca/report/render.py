"""Write a list of report blocks as one self-contained HTML file and as a markdown twin.

The HTML carries its figures inline as base64 PNG data URIs and its style inline: no external
script, stylesheet, font or image, so it opens offline and can be mailed as one file. The markdown
refers to the same figures as PNG files written beside it. Both come from the same blocks, so they
hold the same numbers; only the HTML has a "generated at" line (the markdown is byte-stable).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

from eeca.report.tables import NotRun, Table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Preformatted:
    text: str


@dataclass
class Figure:
    """A figure: ``name`` is its PNG file name (without extension) beside the markdown."""

    name: str
    title: str
    png: bytes
    caption: str = ""


Block = Heading | Paragraph | Bullets | Preformatted | Figure | Table | NotRun

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 0.3em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; white-space: normal; min-width: 4em; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; white-space: normal; min-width: 8em; }
/* wide tables wrap their headers and first column, and scroll sideways inside the page if still too wide */
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
.scroll { overflow-x: auto; }
.note { color: #555; font-size: 0.88em; margin: 0.1em 0 0.8em; }
.notrun { color: #8a4b00; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
"""


def to_html(title: str, blocks: list[Block], generated_at: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{e(title)}</h1>", f'<p class="note">generated at {e(generated_at)}</p>']
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Preformatted):
            out.append(f"<pre>{e(b.text)}</pre>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure id="{e(b.name)}"><img alt="{e(b.title)}" src="data:image/png;base64,{data}">'
                       f"<figcaption><b>{e(b.title)}</b> {e(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in b.columns)
            body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in b.rows)
            out.append(f'<div class="scroll"><table id="{e(b.key)}"><caption>{e(b.title)}</caption>'
                       f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
            out += [f'<p class="note">{e(n)}</p>' for n in b.notes]
        else:
            out.append(f'<p class="notrun" id="{e(b.key)}"><b>{e(b.title)}</b>: not run ({e(b.reason)})</p>')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|")


def to_markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Preformatted):
            out += ["```", b.text, "```", ""]
        elif isinstance(b, Figure):
            out += [f"![{b.title}]({b.name}.png)", "", f"**{b.title}** {b.caption}".rstrip(), ""]
        elif isinstance(b, Table):
            out += [f"**{b.title}**", "", "| " + " | ".join(map(_md_cell, b.columns)) + " |",
                    "|" + "|".join("---" for _ in b.columns) + "|"]
            out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            out += [""] + [f"*{n}*" for n in b.notes] + ([""] if b.notes else [])
        else:
            out += [f"**{b.title}**: not run ({b.reason})", ""]
    return "\n".join(out)
