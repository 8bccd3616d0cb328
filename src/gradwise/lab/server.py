"""``gradwise lab --serve``: a local page to pick a surface and optimizers and watch the paths.

A ``ThreadingHTTPServer`` bound to 127.0.0.1 serves one self-contained page (inline CSS and
JS, no CDN) and a JSON endpoint; gradwise computes every path on the server:

    GET  /              the page
    GET  /api/options   surfaces, their parameters, optimizers and their hyperparameters
    POST /api/run       {"surface", "params", "optimizers", "hypers", "steps", "noise",
                         "seed", "start", "tol"} -> paths, metrics and the contour image;
                         400 {"error": message} on bad input

Requests must name the server's own host (127.0.0.1 or localhost, which keeps DNS rebinding
out) and a POST must be ``application/json`` (a cross-site form cannot send it unasked).
Only the built-in surfaces are offered: a web request never imports a module.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .._checks import integer, number
from ..errors import UserError
from . import plots
from .runner import OPTIMIZERS, compare, parse_optimizers
from .surfaces import SURFACES, get_surface

#: Limits of one request from the page.
MAX_STEPS = 5000
MAX_BODY = 64 * 1024
_FIELDS = ("surface", "params", "optimizers", "hypers", "steps", "noise", "seed", "start", "tol")
_PLOT_LOCK = threading.Lock()


def options() -> dict:
    """What the page offers: surfaces with parameters and defaults, optimizers with theirs."""
    surfaces = {}
    for name, (factory, params) in SURFACES.items():
        s = factory()
        surfaces[name] = dict(
            formula=s.formula, steps=s.steps, start=list(s.start),
            lrs={o: s.default_lr(o) for o in OPTIMIZERS},
            params={k: dict(default=p.default, low=_json_num(p.low), high=_json_num(p.high),
                            help=p.help) for k, p in params.items()})
    optimizers = {
        name: dict(title=o.title, color=plots.color(name),
                   hypers=[dict(name=h.name, kind=h.kind, default=h.default,
                                choices=list(h.choices), help=h.help) for h in o.hypers])
        for name, o in OPTIMIZERS.items()}
    return dict(surfaces=surfaces, optimizers=optimizers, max_steps=MAX_STEPS)


def _json_num(value: float):
    return value if abs(value) != float("inf") else None


@lru_cache(maxsize=32)
def _background(name: str, params: tuple) -> dict:
    surface = get_surface(name, dict(params))
    with _PLOT_LOCK:
        png, width, height = plots.background_png(surface, surface.window, width_px=800)
    return dict(png="data:image/png;base64," + base64.b64encode(png).decode(), width=width,
                height=height)


def compute(payload) -> dict:
    """Validate a request from the page and run it; UserError names what is wrong."""
    if not isinstance(payload, dict):
        raise UserError("the request must be a JSON object")
    unknown = sorted(set(payload) - set(_FIELDS))
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: "
                        f"{', '.join(_FIELDS)}")
    name = payload.get("surface", "taco")
    if name not in SURFACES:
        raise UserError(f"unknown surface {name!r}; accepted: {', '.join(SURFACES)}")
    params = payload.get("params") or {}
    hypers = payload.get("hypers") or {}
    if not isinstance(params, dict):
        raise UserError("params must be an object {name: value}")
    if not isinstance(hypers, dict) or not all(isinstance(v, dict) for v in hypers.values()):
        raise UserError("hypers must be an object {optimizer: {name: value}}")
    optimizers = parse_optimizers(payload.get("optimizers") or [])
    surface = get_surface(name, params)
    kwargs = {}
    steps = payload.get("steps")
    if steps is not None:
        steps = integer("steps", steps, 1)
        if steps > MAX_STEPS:
            raise UserError(f"steps={steps} is invalid; the page runs at most {MAX_STEPS}")
    for key in ("noise", "tol"):
        if payload.get(key) is not None:
            kwargs[key] = payload[key]
    if payload.get("seed") is not None:
        kwargs["seed"] = payload["seed"]
    start = payload.get("start")
    if start is not None:
        if not isinstance(start, list | tuple) or len(start) != 2:
            raise UserError(f"start={start!r} is invalid; start must be [x, y]")
        kwargs["start"] = (number("start[0]", start[0]), number("start[1]", start[1]))
    runs = compare(surface, optimizers, steps, hypers=hypers, **kwargs)
    key = tuple(sorted((k, float(v)) for k, v in surface.params.items()))
    return dict(
        surface=dict(name=surface.name, formula=surface.formula, window=list(surface.window),
                     minimum=surface.minimum, saddle=surface.saddle,
                     start=runs[0].path[0].tolist()),
        background=_background(name, key),
        runs=[dict(optimizer=r.optimizer, color=plots.color(r.optimizer), hypers=r.hypers,
                   path=[[plots.finite_or_none(a), plots.finite_or_none(b)]
                         for a, b in r.path.tolist()],
                   summary={k: plots.finite_or_none(v) if isinstance(v, float) else v
                            for k, v in r.summary().items()})
              for r in runs])


class _Handler(BaseHTTPRequestHandler):
    server_version = "gradwise-lab"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
        if not self._host_ok():
            return self._json(403, {"error": "use http://127.0.0.1 or http://localhost"})
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        if path == "/api/options":
            return self._json(200, options())
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        return self._json(404, {"error": f"no such page {path!r}"})

    def do_POST(self):
        if not self._host_ok():
            return self._json(403, {"error": "use http://127.0.0.1 or http://localhost"})
        if urlsplit(self.path).path != "/api/run":
            return self._json(404, {"error": "POST goes to /api/run"})
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "send the request as application/json"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._json(413 if length > MAX_BODY else 400,
                              {"error": f"the request body must be 1..{MAX_BODY} bytes"})
        try:
            payload = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return self._json(400, {"error": f"the request is not JSON ({exc})"})
        try:
            return self._json(200, compute(payload))
        except UserError as exc:
            return self._json(400, {"error": str(exc)})
        except Exception as exc:  # a bug: answer, keep serving
            return self._json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})


def make_server(port: int = 0) -> ThreadingHTTPServer:
    """The lab's HTTP server on ``127.0.0.1:port`` (0: a free port), not yet serving."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    except OSError as exc:
        raise UserError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                        "pick another port or 0 for a free one") from None
    server.daemon_threads = True
    return server


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def serve(port: int = 8765) -> None:
    """Serve the page until Ctrl-C."""
    server = make_server(port)
    print(f"gradwise lab: serving on {url(server)}  (loopback only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("gradwise lab: stopped", file=sys.stderr)
    finally:
        server.server_close()


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gradwise optimizer lab</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0; display: flex; color: #222; }
 #controls { width: 330px; padding: 12px; border-right: 1px solid #ddd; height: 100vh;
             overflow-y: auto; box-sizing: border-box; }
 #view { flex: 1; padding: 12px; overflow: auto; }
 h1 { font-size: 17px; margin: 0 0 8px; }
 fieldset { border: 1px solid #ddd; margin: 0 0 10px; padding: 6px 8px; }
 legend { font-weight: 600; }
 label { display: block; margin: 2px 0; }
 .hyper { display: grid; grid-template-columns: 1fr 92px; gap: 2px 6px; margin: 2px 0 6px 22px; }
 .hyper input, .hyper select { width: 92px; box-sizing: border-box; }
 .off .hyper { display: none; }
 .opt { border-left: 6px solid; padding-left: 6px; margin: 4px 0; }
 #status { margin: 6px 0; font-weight: 600; }
 #status.error { color: #b00; }
 svg { border: 1px solid #ccc; background: #fff; max-width: 100%; height: auto; }
 table { border-collapse: collapse; margin-top: 10px; font-size: 13px; }
 th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 button { font-size: 14px; padding: 4px 14px; }
</style>
</head>
<body>
<div id="controls">
 <h1>gradwise optimizer lab</h1>
 <fieldset><legend>surface</legend>
  <select id="surface"></select>
  <div id="formula"></div>
  <div id="params" class="hyper"></div>
 </fieldset>
 <fieldset><legend>run</legend>
  <div class="hyper" style="margin-left:0">
   <span>steps</span><input id="steps" type="text">
   <span>gradient noise</span><input id="noise" type="text" value="0">
   <span>seed</span><input id="seed" type="text" value="0">
  </div>
 </fieldset>
 <fieldset><legend>optimizers</legend><div id="optimizers"></div></fieldset>
 <button id="run">Run</button>
 <div id="status">loading...</div>
</div>
<div id="view">
 <svg id="plot" xmlns="http://www.w3.org/2000/svg" width="640" height="320"
      viewBox="0 0 640 320"></svg>
 <table id="table"></table>
</div>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const DEFAULT_ON = ["sgd", "momentum", "nesterov", "adam"];
let OPTIONS = null, timer = null, ticket = 0, frame = null;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function schedule() { clearTimeout(timer); timer = setTimeout(run, 350); }

function buildSurface() {
  const s = OPTIONS.surfaces[$("surface").value];
  $("formula").textContent = "f = " + s.formula;
  const box = $("params");
  box.replaceChildren();
  for (const [name, p] of Object.entries(s.params)) {
    box.append(el("span", {title: p.help}, name));
    const input = el("input", {type: "text", id: "param-" + name, "data-param": name,
                               value: String(p.default)});
    input.addEventListener("input", schedule);
    box.append(input);
  }
  $("steps").value = String(s.steps);
  for (const [name, lr] of Object.entries(s.lrs)) {
    const input = $("hyper-" + name + "-lr");
    if (input) input.placeholder = short(lr);
  }
}

function short(v) { return String(Number(Number(v).toPrecision(4))); }

function buildOptimizers() {
  const box = $("optimizers");
  for (const [name, o] of Object.entries(OPTIONS.optimizers)) {
    const div = el("div", {class: "opt", style: "border-color:" + o.color});
    const check = el("input", {type: "checkbox", id: "use-" + name, "data-optimizer": name});
    check.checked = DEFAULT_ON.includes(name);
    div.classList.toggle("off", !check.checked);
    check.addEventListener("change", () => {
      div.classList.toggle("off", !check.checked);
      schedule();
    });
    const label = el("label");
    label.append(check, " " + name + " ");
    label.append(el("small", {}, o.title));
    const grid = el("div", {class: "hyper"});
    for (const h of o.hypers) {
      grid.append(el("span", {title: h.help}, h.name));
      let input;
      if (h.kind === "bool") {
        input = el("input", {type: "checkbox"});
        input.checked = !!h.default;
      } else if (h.kind === "choice") {
        input = el("select");
        for (const c of h.choices) input.append(el("option", {value: c}, c));
        input.value = h.default;
      } else {
        input = el("input", {type: "text", placeholder: h.default === null ? "" :
                                                          String(h.default)});
      }
      input.id = "hyper-" + name + "-" + h.name;
      input.dataset.kind = h.kind;
      input.addEventListener(h.kind === "bool" || h.kind === "choice" ? "change" : "input",
                             schedule);
      grid.append(input);
    }
    div.append(label, grid);
    box.append(div);
  }
}

function request() {
  const surface = $("surface").value;
  const params = {};
  for (const input of $("params").querySelectorAll("input")) {
    if (input.value.trim() !== "") params[input.dataset.param] = numberOrText(input.value);
  }
  const optimizers = [], hypers = {};
  for (const [name, o] of Object.entries(OPTIONS.optimizers)) {
    if (!$("use-" + name).checked) continue;
    optimizers.push(name);
    const given = {};
    for (const h of o.hypers) {
      const input = $("hyper-" + name + "-" + h.name);
      if (h.kind === "bool") { if (input.checked !== !!h.default) given[h.name] = input.checked; }
      else if (h.kind === "choice") { if (input.value !== h.default) given[h.name] = input.value; }
      else if (input.value.trim() !== "") given[h.name] = numberOrText(input.value);
    }
    if (Object.keys(given).length) hypers[name] = given;
  }
  return {surface, params, optimizers, hypers, steps: numberOrText($("steps").value),
          noise: numberOrText($("noise").value), seed: numberOrText($("seed").value)};
}

function numberOrText(text) {
  const t = text.trim();
  return t !== "" && Number.isFinite(Number(t)) ? Number(t) : t;
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function run() {
  const mine = ++ticket;
  cancelAnimationFrame(frame);  // the previous run's animation must not report "done" now
  const body = request();
  if (!body.optimizers.length) { setStatus("pick at least one optimizer", true); return; }
  setStatus("running...");
  let reply, data;
  try {
    reply = await fetch("/api/run", {method: "POST", body: JSON.stringify(body),
                                     headers: {"Content-Type": "application/json"}});
    data = await reply.json();
  } catch (err) {
    if (mine === ticket) setStatus("no answer from the server: " + err, true);
    return;
  }
  if (mine !== ticket) return;
  if (!reply.ok) { setStatus(data.error || ("error " + reply.status), true); return; }
  for (const r of data.runs) {
    const lr = $("hyper-" + r.optimizer + "-lr");
    if (lr && lr.value.trim() === "") lr.placeholder = short(r.hypers.lr);
  }
  draw(data);
}

function draw(data) {
  const svg = $("plot");
  const bg = data.background, [x0, x1, y0, y1] = data.surface.window;
  const W = bg.width, H = bg.height;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const X = (x) => (x - x0) / (x1 - x0) * W, Y = (y) => (y1 - y) / (y1 - y0) * H;
  svg.replaceChildren(el("svg:image", {href: bg.png, x: 0, y: 0, width: W, height: H,
                                       preserveAspectRatio: "none"}));
  const lines = data.runs.map((r) => {
    const pts = r.path.filter((p) => p[0] !== null && p[1] !== null)
                      .map((p) => X(p[0]).toFixed(2) + "," + Y(p[1]).toFixed(2));
    const line = el("svg:polyline", {class: "path", "data-optimizer": r.optimizer,
                                     fill: "none", stroke: r.color, "stroke-width": 1.8,
                                     points: pts[0]});
    svg.append(line);
    return {line, pts};
  });
  const [sx, sy] = data.surface.start;
  svg.append(el("svg:circle", {cx: X(sx), cy: Y(sy), r: 5, fill: "black"}));
  data.runs.forEach((r, i) => {
    svg.append(el("svg:rect", {x: 8, y: 8 + 16 * i, width: 12, height: 10, fill: r.color}));
    svg.append(el("svg:text", {x: 24, y: 17 + 16 * i, "font-size": 12}, r.optimizer));
  });
  table(data.runs);
  const longest = Math.max(...lines.map((l) => l.pts.length));
  const started = performance.now(), duration = Math.min(2000, 20 * longest);
  cancelAnimationFrame(frame);
  const step = (now) => {
    const k = duration ? Math.min(1, (now - started) / duration) : 1;
    const upto = Math.max(1, Math.round(k * longest));
    for (const l of lines) l.line.setAttribute("points", l.pts.slice(0, upto).join(" "));
    if (k < 1) { frame = requestAnimationFrame(step); return; }
    const steps = Math.max(...data.runs.map((r) => r.summary.steps));
    setStatus(`done: ${data.runs.length} paths, ${steps} steps`);
  };
  setStatus("drawing...");
  frame = requestAnimationFrame(step);
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(3);
  return String(v);
}

function table(runs) {
  const cols = ["optimizer", "first_step", "final_loss", "final_distance", "steps_to_tol",
                "escape_step", "evals", "status"];
  const t = $("table");
  t.replaceChildren();
  const head = el("tr");
  for (const c of cols) head.append(el("th", {}, c.replace(/_/g, " ")));
  t.append(head);
  for (const r of runs) {
    const row = el("tr");
    for (const c of cols) row.append(el("td", {}, fmt(c === "optimizer" ? r.optimizer
                                                                        : r.summary[c])));
    t.append(row);
  }
}

async function init() {
  OPTIONS = await (await fetch("/api/options")).json();
  for (const name of Object.keys(OPTIONS.surfaces)) {
    $("surface").append(el("option", {value: name}, name));
  }
  $("surface").addEventListener("change", () => { buildSurface(); schedule(); });
  for (const id of ["steps", "noise", "seed"]) $(id).addEventListener("input", schedule);
  $("run").addEventListener("click", () => { clearTimeout(timer); run(); });
  buildOptimizers();
  buildSurface();
  run();
}
init();
</script>
</body>
</html>
"""
