"""The page's pieces: its CSS, the script that marks each drawn figure, and small HTML helpers.

No template engine and no asset from the network: the report is one file that opens offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from surerank.documents import is_number

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.85;font-size:13px}nav{padding:8px 32px;background:#e9eef5;font-size:14px}
nav a{margin-right:16px;color:#1d3557}main{padding:8px 32px 40px;max-width:1160px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px 20px 16px;margin:18px 0}
h2{font-size:19px;margin:12px 0 6px;color:#1d3557}h3{font-size:15px;margin:14px 0 6px}
.figs{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0;border:1px solid #eee;padding:6px;background:#fff}
figcaption{font-size:12px;color:#555;max-width:520px;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 10px;text-align:right}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}.up{color:#1b7f2a;font-weight:600}
.down{color:#c0392b;font-weight:600}.text td,.text th{text-align:left}
.note{font-size:12px;color:#555}.base{font-style:italic}
"""

CHECK_SCRIPT = """
(function(){
  var figs = document.querySelectorAll('figure.plot'), ok = 0;
  figs.forEach(function(f){
    var s = f.querySelector('svg'), marks = s ? s.querySelectorAll('[data-mark]').length : 0;
    var box = s ? s.getBBox() : {width: 0, height: 0};
    var good = !!s && marks > 0 && box.width > 0 && box.height > 0;
    f.setAttribute('data-marks', marks);
    f.setAttribute('data-rendered', good ? 'ok' : 'empty');
    if (good) ok++;
  });
  document.body.setAttribute('data-plots-total', figs.length);
  document.body.setAttribute('data-plots-ok', ok);
})();
"""


def num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return escape(str(value))


def plain(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if is_number(value) else ""


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure(name: str, chart: str, caption: str) -> str:
    return (f'<figure class="plot" data-plot="{escape(name)}">{chart}'
            f"<figcaption>{caption}</figcaption></figure>")


def section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}" data-section="{key}"><h2>{escape(title)}</h2>{body}</section>'


__all__ = ["CHECK_SCRIPT", "CSS", "figure", "html_table", "num", "plain", "section"]
