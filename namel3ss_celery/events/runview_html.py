"""The run view's HTML: the recent runs and one run, drawn from what ``runview`` reads (self-contained: its
style and script inline, no CDN, no build step). The markup ``runview``'s docstring describes is made here."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping
from typing import Any

from ..results import RunStatus

RACING = ("race", "any_success")
UNFINISHED = tuple(str(s) for s in RunStatus if not s.final)  # pending, running: the page redraws itself


def format_duration(duration_ms: float | None) -> str:
    """A duration as the pages show it: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if duration_ms is None:
        return ""
    if duration_ms < 1000:
        return f"{duration_ms:.0f} ms"
    seconds = duration_ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- HTML -----------------------------------------------------------------------------

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
.graph{display:flex;gap:2.5em;align-items:flex-start;position:relative}
.column{display:flex;flex-direction:column;gap:1em;position:relative;z-index:1}
svg.edges{position:absolute;left:0;top:0;pointer-events:none;overflow:visible}
svg.edges path{fill:none;stroke:#999;stroke-width:1.5}
.node{border:2px solid #999;border-radius:6px;padding:.6em .8em;min-width:15em}
.node h2{font-size:1em;margin:0 0 .3em}.after{color:#666;font-size:.85em}
ul{list-style:none;padding:0;margin:.4em 0 0}li{padding:.15em 0}.error{color:#a00;font-size:.85em}
[data-status=completed]{border-color:#2a7}[data-status=failed]{border-color:#c33}
[data-status=running]{border-color:#36c}[data-status=cancelled],[data-status=timeout]{border-color:#c90}
li[data-status=completed]::before{content:"\\2713 ";color:#2a7}li[data-status=failed]::before{content:"\\2717 ";color:#c33}
li[data-status=cancelled]::before{content:"\\25CB ";color:#c90}li[data-status=pending]::before{content:"\\2026 "}
li[data-status=running]::before{content:"\\25B6 ";color:#36c}
li[data-status]{padding-left:1.2em}li[data-status]::before{display:inline-block;width:1.2em;margin-left:-1.2em}
/* the glyphs hang in a column of their own (a space right after a CSS escape is part of the escape) */
li[data-status=cancelled] .error{color:#777}  /* why it stopped (a race decided, a cancel): no failure */
"""

SCRIPT = """
(function(){
  var root = document.getElementById('run'); if (!root) return;
  var token = new URLSearchParams(location.search).get('token');
  var q = token ? '&token=' + encodeURIComponent(token) : '';
  var timer = null, asked = 0, drawn = 0, going = LIVE, ns = 'http://www.w3.org/2000/svg';
  function edges(){  // a line from each node to each node that depends on it (data-after)
    var graph = root.querySelector('.graph'); if (!graph) return;
    var old = graph.querySelector('svg.edges'); if (old) old.remove();
    var box = graph.getBoundingClientRect(), svg = document.createElementNS(ns, 'svg'), named = {};
    svg.setAttribute('class', 'edges'); svg.setAttribute('width', graph.scrollWidth); svg.setAttribute('height', graph.scrollHeight);
    graph.querySelectorAll('[data-node]').forEach(function(el){ named[el.dataset.node] = el; });
    graph.querySelectorAll('[data-after]').forEach(function(el){
      JSON.parse(el.dataset.after).forEach(function(name){
        var from = named[name]; if (!from) return;
        var a = from.getBoundingClientRect(), b = el.getBoundingClientRect();
        var x1 = a.right - box.left, y1 = a.top - box.top + 18, x2 = b.left - box.left, y2 = b.top - box.top + 18;
        var path = document.createElementNS(ns, 'path');
        path.setAttribute('d', 'M' + x1 + ',' + y1 + ' C' + (x1 + 20) + ',' + y1 + ' ' + (x2 - 20) + ',' + y2 + ' ' + x2 + ',' + y2);
        path.setAttribute('data-edge', name + ' ' + el.dataset.node);
        svg.appendChild(path);
      });
    });
    graph.insertBefore(svg, graph.firstChild);
  }
  function live(){ var top = root.firstElementChild; return !!top && going.indexOf(top.dataset.status) >= 0; }
  function after(ms){ clearTimeout(timer); timer = live() ? setTimeout(refresh, ms) : null; }
  function refresh(){
    var n = ++asked;
    fetch(location.pathname + '?fragment=1' + q, {cache: 'no-store'}).then(function(r){
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text();
    }).then(function(t){
      if (n > drawn) { drawn = n; root.innerHTML = t; edges(); }  // an answer older than the one drawn is dropped
      after(1000);
    }).catch(function(){ after(5000); });
  }
  function listen(){
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    var ws = new WebSocket(scheme + location.host + '/events?run_id=' + encodeURIComponent(root.dataset.run) + q);
    ws.onmessage = function(){ clearTimeout(timer); timer = setTimeout(refresh, 50); };  // a burst: one fetch
    ws.onclose = function(){ if (live()) setTimeout(listen, 5000); };
  }
  edges(); window.addEventListener('resize', edges);
  if (live()) { listen(); after(1000); }
})();
""".replace("LIVE", json.dumps(list(UNFINISHED)))


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<link rel='icon' href='data:,'>"  # no icon: the browser asks for none (no 404 for /favicon.ico)
        f"<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>"
    )


def render_runs(rows: list[dict[str, Any]]) -> str:
    lines = "".join(
        f"<tr data-run='{html.escape(r['run_id'])}' data-status='{html.escape(str(r['status']))}'>"
        f"<td><a href='/runs/{html.escape(r['run_id'])}'>{html.escape(str(r['name']))}</a></td>"
        f"<td>{html.escape(str(r['status']))}</td><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['started']))}</td>"
        f"<td class='duration'{_duration_data(r['duration_ms'])}>{format_duration(r['duration_ms'])}"
        f"{' so far' if r['running'] and r['duration_ms'] is not None else ''}</td>"
        f"<td><code>{html.escape(r['run_id'])}</code></td></tr>"
        for r in rows
    )
    table = f"<table><tr><th>run</th><th>status</th><th>started</th><th>duration</th><th>id</th></tr>{lines}</table>"
    return page("namel3ss-celery runs", f"<h1>Recent runs</h1>{table}")


def _duration_data(duration_ms: float | None) -> str:
    return "" if duration_ms is None else f" data-duration-ms='{duration_ms:.0f}'"


def render_run(view: Mapping[str, Any], fragment: bool = False) -> str:
    columns: dict[int, list[str]] = {}
    for node in view["nodes"]:
        columns.setdefault(node["depth"], []).append(_node_html(node))
    graph = "".join(f"<div class='column'>{''.join(items)}</div>" for _d, items in sorted(columns.items()))
    inner = (
        f"<div data-run-status='{html.escape(view['status'])}' data-status='{html.escape(view['status'])}'>"
        f"<h1>{html.escape(view['kind'])} {html.escape(view['name'])}: {html.escape(view['status'])}</h1>"
        f"<p><code>{html.escape(view['run_id'])}</code></p><div class='graph'>{graph}</div></div>"
    )
    if fragment:
        return inner
    return page(
        f"run {view['name']}",
        f"<p><a href='/'>recent runs</a></p><div id='run' data-run='{html.escape(view['run_id'])}'>{inner}</div>",
    )


def _node_html(node: Mapping[str, Any]) -> str:
    after = f"<div class='after'>after {html.escape(', '.join(node['depends_on']))}</div>" if node["depends_on"] else ""
    race = ""
    if node["strategy"] in RACING and node["winner"] is not None:
        race = (
            f"<div>winner <b>{html.escape(node['winner'])}</b>; losers ran "
            f"{node['loser_seconds']:g} worker-seconds</div>"
        )
    steps = "".join(_step_html(s, node["strategy"] in RACING) for s in node["steps"])
    depends = f" data-after='{html.escape(json.dumps(node['depends_on']))}'" if node["depends_on"] else ""
    return (
        f"<section class='node' data-node='{html.escape(node['name'])}' data-status='{html.escape(node['status'])}'"
        f"{depends}>"
        f"<h2>{html.escape(node['name'])}</h2>{after}<div>{html.escape(node['strategy'])}, "
        f"{node['done']}/{node['total']} steps, {html.escape(node['status'])}</div>{race}<ul>{steps}</ul></section>"
    )


def _step_html(step: Mapping[str, Any], racing: bool) -> str:
    outcome = f" data-outcome='{html.escape(str(step['outcome']))}'" if racing and step.get("outcome") else ""
    took = f" {step['duration_ms']:.0f} ms" if step.get("duration_ms") is not None else ""
    shown = f" ({html.escape(str(step['outcome']))})" if step.get("outcome") else ""
    error = f"<div class='error'>{html.escape(str(step['error']))}</div>" if step.get("error") else ""
    return (
        f"<li data-step='{html.escape(step['name'])}' data-status='{html.escape(step['status'])}'{outcome}>"
        f"{html.escape(step['name'])}: {html.escape(step['status'])}{shown}{took}{error}</li>"
    )
