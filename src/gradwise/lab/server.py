"""``gradwise lab --serve``: a local page to pick a surface and optimizers and watch the paths.

A ``ThreadingHTTPServer`` bound to 127.0.0.1 serves the page (three package data files under
``static/``, nothing from elsewhere) and a JSON endpoint; gradwise computes every path on the
server:

    GET  /              the page (static/index.html; also at /index.html)
    GET  /lab.js        its script; GET /lab.css its styles (nothing else under static/)
    GET  /api/options   surfaces, their parameters, optimizers and their hyperparameters
    POST /api/run       {"surface", "params", "optimizers", "hypers", "steps", "noise",
                         "seed", "start", "tol"} -> paths, metrics and the contour image;
                         400 {"error": message} on bad input

Requests must name the server's own host (127.0.0.1 or localhost, which keeps DNS rebinding
out) and a POST must be ``application/json`` (a cross-site form cannot send it unasked).
Only the built-in surfaces are offered: a web request never imports a module. Every check of a
request body is in :func:`read_request` (the JSON) and :func:`parse_request` (the fields); the
handler only speaks HTTP. A connection that stays silent for ``timeout`` seconds, or whose body
takes longer than that to arrive, is dropped.
"""

from __future__ import annotations

import base64
import json
import math
import reprlib
import socket
import sys
import threading
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from .._checks import integer, number
from ..config import MAX_SEED
from ..errors import UserError
from . import plots
from .runner import OPTIMIZERS, compare, default_lr, parse_optimizers
from .surfaces import SURFACES, Surface, get_surface

#: Limits of one request from the page.
MAX_STEPS = 5000
MAX_BODY = 64 * 1024
#: Seconds a connection may stay silent, and a request body may take to arrive, before the
#: server drops the connection (a stalled upload must not hold a thread forever).
REQUEST_TIMEOUT = 5.0
#: Limits of a request's JSON: [] and {} nested at most MAX_DEPTH deep, strings (names and
#: keys too) at most MAX_STRING characters, lists and objects at most MAX_ITEMS entries. No
#: field needs more, and they keep the error messages short.
MAX_DEPTH = 4
MAX_STRING = 200
MAX_ITEMS = 100
_FIELDS = ("surface", "params", "optimizers", "hypers", "steps", "noise", "seed", "start", "tol")
_HYPERS = "hypers must be an object {optimizer: {name: value}}"
_PLOT_LOCK = threading.Lock()

#: The page's files: URL path -> (file in static/, content type). Only these are served.
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/lab.js": ("lab.js", "text/javascript; charset=utf-8"),
    "/lab.css": ("lab.css", "text/css; charset=utf-8"),
}
#: The page loads its own script and styles, and the contour image as a data: URL.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def _show(value) -> str:
    """``repr(value)``, shortened for a message."""
    return _SHORT.repr(value)


@cache
def _static(name: str) -> bytes:
    """The page's file ``name`` from the installed package (a wheel, a zip or a checkout)."""
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def options() -> dict:
    """What the page offers: surfaces with parameters and defaults, optimizers with theirs
    (an unbounded range's end is None)."""
    surfaces = {}
    for name, (factory, params) in SURFACES.items():
        s = factory()
        surfaces[name] = dict(
            formula=s.formula, steps=s.steps, start=list(s.start),
            lrs={o: default_lr(s, o) for o in OPTIMIZERS},
            params={k: dict(default=p.default, low=p.low, high=p.high, help=p.help)
                    for k, p in params.items()})
    optimizers = {
        name: dict(title=o.title, color=plots.color(name),
                   hypers=[dict(name=h.name, kind=h.kind, default=h.default,
                                choices=list(h.choices), help=h.help) for h in o.hypers])
        for name, o in OPTIMIZERS.items()}
    return _finite(dict(surfaces=surfaces, optimizers=optimizers, max_steps=MAX_STEPS))


@lru_cache(maxsize=32)
def _background(name: str, params: tuple, window: tuple[float, float, float, float]) -> dict:
    surface = get_surface(name, dict(params))
    with _PLOT_LOCK:
        png, width, height = plots.background_png(surface, window, width_px=800)
    return dict(png="data:image/png;base64," + base64.b64encode(png).decode(), width=width,
                height=height)


def read_request(body: bytes) -> object:
    """The JSON value in a request body; UserError where the body is not strict JSON (``NaN``
    and ``Infinity`` are not JSON) or nests too deeply for the parser."""
    def constant(token: str):
        raise ValueError(f"{token} is not a JSON value")

    try:
        return json.loads(body, parse_constant=constant)
    except RecursionError:
        raise UserError(f"the request nests too deeply; it has at most {MAX_DEPTH} levels of "
                        "[] and {}") from None
    except ValueError as exc:  # not JSON, not UTF-8, an integer of thousands of digits, NaN
        raise UserError(f"the request is not JSON ({exc})") from None


@dataclass(frozen=True)
class LabRequest:
    """A checked request from the page: what :func:`compare` runs. ``steps`` None means the
    surface's; ``options`` holds those of noise, seed, tol and start that the request gives."""

    surface: Surface
    optimizers: list[str]
    steps: int | None
    hypers: dict[str, dict]
    options: dict


def _where(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = key if key.isprintable() and key and key.strip() == key else _show(key)
    return f"{path}.{name}" if path else name


def _check_json(value, path: str = "", depth: int = 0) -> None:
    """Raise UserError where a JSON value exceeds the limits (:data:`MAX_DEPTH`,
    :data:`MAX_STRING`, :data:`MAX_ITEMS`) or holds an integer too large for a float."""
    where = path or "the request"
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise UserError(f"the request nests too deeply at {where}; it has at most "
                            f"{MAX_DEPTH} levels of [] and {{}}")
        kind = "an object" if isinstance(value, dict) else "a list"
        if len(value) > MAX_ITEMS:
            raise UserError(f"{where}: {kind} of {len(value)} items is too long; at most "
                            f"{MAX_ITEMS}")
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str) and len(key) > MAX_STRING:
                raise UserError(f"{where}: a name of {len(key)} characters is too long; at "
                                f"most {MAX_STRING}")
            _check_json(item, _where(path, key), depth + 1)
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise UserError(f"{where}: a string of {len(value)} characters is too long; at "
                            f"most {MAX_STRING}")
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            raise UserError(f"{where}={_show(value)} is invalid; a number must be finite, at "
                            f"most {sys.float_info.max:.3g} in size") from None


def parse_request(payload: object) -> LabRequest:
    """Check a decoded request from the page, field by field (a missing field or null means the
    default); UserError names the field and what it accepts. The values themselves are checked
    by :func:`get_surface`, :func:`parse_optimizers` and :func:`compare`, as on the command
    line."""
    if not isinstance(payload, dict):
        raise UserError('the request must be a JSON object {"surface": ..., "optimizers": '
                        f"[...], ...}}; got {_show(payload)}")
    unknown = sorted(set(payload) - set(_FIELDS))
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(map(_show, unknown[:5]))}; accepted: "
                        f"{', '.join(_FIELDS)}")
    _check_json(payload)
    given = {key: value for key, value in payload.items() if value is not None}

    name = given.get("surface", "taco")
    if not isinstance(name, str):
        raise UserError(f"surface={_show(name)} is invalid; surface must be a name, one of: "
                        f"{', '.join(SURFACES)}")
    if name not in SURFACES:
        raise UserError(f"unknown surface {name!r}; accepted: {', '.join(SURFACES)}")
    params = given.get("params", {})
    if not isinstance(params, dict):
        raise UserError(f"params={_show(params)} is invalid; params must be an object "
                        "{name: value}")
    surface = get_surface(name, params)

    optimizers = given.get("optimizers", [])
    if not isinstance(optimizers, list):
        raise UserError(f"optimizers={_show(optimizers)} is invalid; optimizers must be a list "
                        f'of names such as ["sgd", "adam"]; accepted: {", ".join(OPTIMIZERS)}')
    for i, item in enumerate(optimizers):
        if not isinstance(item, str):
            raise UserError(f"optimizers[{i}]={_show(item)} is invalid; accepted: "
                            f"{', '.join(OPTIMIZERS)}")
    optimizers = parse_optimizers(optimizers)
    hypers = given.get("hypers", {})
    if not isinstance(hypers, dict):
        raise UserError(f"hypers={_show(hypers)} is invalid; {_HYPERS}")
    for key, values in hypers.items():
        if not isinstance(values, dict):
            raise UserError(f"{_where('hypers', key)}={_show(values)} is invalid; {_HYPERS}")

    steps = given.get("steps")
    if steps is not None:
        steps = integer("steps", steps, 1)
        if steps > MAX_STEPS:
            raise UserError(f"steps={steps} is invalid; the page runs at most {MAX_STEPS}")
    options: dict[str, object] = {}
    if "noise" in given:
        options["noise"] = number("noise", given["noise"], 0)
    if "tol" in given:
        options["tol"] = number("tol", given["tol"], 0, open_low=True)
    if "seed" in given:
        options["seed"] = integer("seed", given["seed"], 0, maximum=MAX_SEED)
    if "start" in given:
        start = given["start"]
        if not isinstance(start, list) or len(start) != 2:
            raise UserError(f"start={_show(start)} is invalid; start must be [x, y], two "
                            "finite numbers")
        for i, value in enumerate(start):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise UserError(f"start[{i}]={_show(value)} is invalid; start must be [x, y], "
                                "two finite numbers")
        options["start"] = (float(start[0]), float(start[1]))
    return LabRequest(surface, optimizers, steps, hypers, options)


def _finite(value):
    """``value`` for JSON, which has no NaN or infinity: those floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def compute(payload: object) -> dict:
    """Check a decoded request from the page (:func:`parse_request`) and run it: the surface,
    its contour image and each optimizer's path and metrics. UserError names what is wrong."""
    request = parse_request(payload)
    surface = request.surface
    runs = compare(surface, request.optimizers, request.steps, hypers=request.hypers,
                   **request.options)
    key = tuple(sorted((k, float(v)) for k, v in surface.params.items()))
    window = plots.plot_window(surface, runs)  # the surface's own (the page offers built-ins)
    return _finite(dict(
        surface=dict(name=surface.name, formula=surface.formula, window=list(window),
                     minimum=surface.minimum, saddle=surface.saddle,
                     start=runs[0].path[0].tolist()),
        background=_background(surface.name, key, window),
        runs=[dict(optimizer=r.optimizer, color=plots.color(r.optimizer), hypers=r.hypers,
                   path=r.path.tolist(), summary=r.summary()) for r in runs]))


class _Handler(BaseHTTPRequestHandler):
    server_version = "gradwise-lab"
    server: LabServer

    def setup(self) -> None:
        # StreamRequestHandler.setup() sets self.timeout on the socket; typeshed declares it a
        # ClassVar, but a per-server value has to be set on the instance.
        self.timeout = self.server.request_timeout  # type: ignore[misc]
        super().setup()

    def log_message(self, format, *args):
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
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _read_body(self, length: int) -> bytes | None:
        """``length`` bytes of body within the timeout (TimeoutError otherwise); None where the
        client closes the connection early."""
        deadline = time.monotonic() + self.server.request_timeout
        chunks, left = [], length
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = self.rfile.read1(left)  # waits at most `timeout` for each piece
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def do_GET(self):
        if not self._host_ok():
            return self._json(403, {"error": "use http://127.0.0.1 or http://localhost"})
        path = urlsplit(self.path).path
        if path in _STATIC:
            name, content_type = _STATIC[path]
            return self._send(200, _static(name), content_type)
        if path == "/api/options":
            return self._json(200, options())
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        return self._json(404, {"error": f"no such page {_show(path)}"})

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
            body = self._read_body(length)
        except TimeoutError:
            self.close_connection = True
            return self._json(408, {"error": f"the request body did not arrive within "
                                             f"{self.timeout:g} s"})
        if body is None:
            self.close_connection = True
            return self._json(400, {"error": f"the request body ended before its "
                                             f"Content-Length ({length} bytes)"})
        try:
            return self._json(200, compute(read_request(body)))
        except UserError as exc:
            return self._json(400, {"error": str(exc)})
        except Exception as exc:  # a bug: answer, keep serving
            return self._json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})


class LabServer(ThreadingHTTPServer):
    """The lab's HTTP server: one thread per connection, each dropped after ``request_timeout``
    seconds of silence."""

    daemon_threads = True

    def __init__(self, port: int, request_timeout: float):
        self.request_timeout = request_timeout
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket],
                     client_address: tuple[str, int]) -> None:
        """A client that went away or stalled (an OSError) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def make_server(port: int = 0, *, timeout: float = REQUEST_TIMEOUT) -> LabServer:
    """The lab's HTTP server on ``127.0.0.1:port`` (0: a free port), not yet serving; a
    connection silent for ``timeout`` seconds is dropped."""
    try:
        return LabServer(port, timeout)
    except OSError as exc:
        raise UserError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                        "pick another port or 0 for a free one") from None


def url(server: ThreadingHTTPServer) -> str:
    """The page's address."""
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
