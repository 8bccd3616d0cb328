"""The lab's page and its JSON API (``gradwise lab --serve``): a real server on 127.0.0.1."""

from __future__ import annotations

import fnmatch
import json
import math
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gradwise import lab
from gradwise.lab import server as lab_server_module

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "gradwise" / "lab" / "static"


@pytest.fixture()
def lab_server():
    server = lab.make_server(0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _strict_json(data: bytes):
    """JSON as a browser reads it: NaN and Infinity are not JSON."""
    def reject(token):
        raise AssertionError(f"the reply holds {token}, which is not JSON")
    return json.loads(data, parse_constant=reject)


def _post(url, body, content_type="application/json", host=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "api/run", data=data, method="POST",
                                     headers={"Content-Type": content_type})
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, _strict_json(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _strict_json(exc.read())


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# -- the page's files ---------------------------------------------------------------------------


def test_page_files_are_served_with_their_content_types(lab_server):
    for path, name, content_type in [("", "index.html", "text/html"),
                                     ("index.html", "index.html", "text/html"),
                                     ("lab.js", "lab.js", "text/javascript"),
                                     ("lab.css", "lab.css", "text/css")]:
        status, headers, body = _get(lab_server + path)
        assert status == 200, path
        assert headers["Content-Type"] == f"{content_type}; charset=utf-8", path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body == (STATIC / name).read_bytes(), path
    _, headers, page = _get(lab_server)
    assert b'<script src="lab.js"></script>' in page and b'href="lab.css"' in page
    assert b"<style" not in page and b"<script>" not in page  # no inline code left
    assert "script-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    "static/lab.js", "static/index.html", "lab.js/", "../server.py", "%2e%2e/server.py",
    "static/../server.py", "server.py", "__init__.py", "LAB.JS", "lab.js%00", ".%2fstatic/lab.js",
])
def test_nothing_else_is_served(lab_server, path):
    # urllib would normalise "../"; send the path as written
    port = int(lab_server.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 404"), reply[:200]
    assert "no such page" in _strict_json(body)["error"]


def test_the_package_data_ships_every_static_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["gradwise.lab"]
    files = sorted(p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir())
    assert {"static/index.html", "static/lab.js", "static/lab.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


# -- the JSON API -------------------------------------------------------------------------------


def test_json_endpoint_computes_paths_and_rejects_bad_input(lab_server):
    status, data = _post(lab_server, {"surface": "taco", "optimizers": ["sgd", "adam"],
                                      "steps": 30, "hypers": {"adam": {"lr": 0.2}}})
    assert status == 200
    direct = lab.run(lab.get_surface("taco"), "adam", 30, hypers={"lr": 0.2})
    np.testing.assert_array_equal(np.array(data["runs"][1]["path"]), direct.path)
    assert data["background"]["png"].startswith("data:image/png;base64,")
    for body, message in [
        ({"surface": "moon", "optimizers": ["sgd"]}, "unknown surface 'moon'"),
        ({"surface": "python:os:getcwd", "optimizers": ["sgd"]}, "unknown surface"),
        ({"optimizers": ["sgd"], "hypers": {"sgd": {"lr": "x"}}}, "sgd.lr='x' is invalid"),
        ({"optimizers": ["sgd"], "steps": 10 ** 6}, "at most 5000"),
        ({"optimizers": ["sgd"], "colour": 1}, "unknown field(s) 'colour'"),
        ({"optimizers": []}, "no optimizers given"),
        ([1, 2], "must be a JSON object"),
    ]:
        status, data = _post(lab_server, body)
        assert status == 400 and message in data["error"], (body, data)
    assert _post(lab_server, b"{not json")[0] == 400
    assert _post(lab_server, {"optimizers": ["sgd"]}, content_type="text/plain")[0] == 415
    assert _post(lab_server, {"optimizers": ["sgd"]}, host="evil.example")[0] == 403


@pytest.mark.parametrize("body, message", [
    ({"surface": ["taco"]}, "surface=['taco'] is invalid; surface must be a name, one of: taco"),
    ({"surface": 5}, "surface=5 is invalid; surface must be a name, one of: taco"),
    ({"optimizers": 5}, "optimizers=5 is invalid; optimizers must be a list of names"),
    ({"optimizers": {"sgd": 1}}, "optimizers={'sgd': 1} is invalid; optimizers must be a list"),
    ({"optimizers": [["sgd"]]}, "optimizers[0]=['sgd'] is invalid; accepted: sgd, momentum"),
    ({"seed": 1e26}, "seed=1e+26 is invalid; seed must be an integer"),
    ({"seed": 10 ** 30}, "seed=1000000000000000000000000000000 is invalid; seed must be an "
                         "integer in [0, 4294967295]"),
    ({"hypers": []}, "hypers=[] is invalid; hypers must be an object {optimizer: {name: value}}"),
    ({"hypers": {"sgd": 1}}, "hypers.sgd=1 is invalid; hypers must be an object"),
    ({"params": "x"}, "params='x' is invalid; params must be an object {name: value}"),
    ({"params": []}, "params=[] is invalid; params must be an object"),
    ({"params": {"cond": 10 ** 400}}, "params.cond=" + "1" + "0" * 16),
    ({"params": {"cond": 10 ** 400}}, "is invalid; a number must be finite"),
    ({"hypers": {"sgd": {"lr": 10 ** 400}}}, "hypers.sgd.lr=100000"),
    ({"noise": 10 ** 400}, "noise=10000"),
    ({"start": [10 ** 400, 1]}, "start[0]=10000"),
    ({"start": "ab"}, "start='ab' is invalid; start must be [x, y]"),
    ({"steps": "10"}, "steps='10' is invalid; steps must be an integer >= 1"),
    ({"steps": 10.0}, "steps=10.0 is invalid"),
    ({"tol": []}, "tol=[] is invalid; tol must be a finite number > 0"),
    ({"noise": True}, "noise=True is invalid; noise must be a finite number >= 0"),
    ({"hypers": {"sgd": {"lr": "x" * 5000}}}, "hypers.sgd.lr: a string of 5000 characters is "
                                              "too long"),
    ({"optimizers": ["sgd"] * 1000}, "optimizers: a list of 1000 items is too long"),
])
def test_wrong_json_types_get_400_naming_the_field(lab_server, body, message):
    body = {"optimizers": ["sgd"], "steps": 5, **body}
    status, data = _post(lab_server, body)
    assert status == 400, (body, status, data)
    assert message in data["error"], data["error"]
    assert len(data["error"]) < 400


def test_non_finite_results_are_sent_as_null(lab_server):
    # a legal but huge Rosenbrock: the minimum (a, a^2) overflows, the path diverges
    status, data = _post(lab_server, {"surface": "rosenbrock", "params": {"a": 1e300, "b": 1e300},
                                      "optimizers": ["sgd", "newton"], "steps": 5})
    assert status == 200  # and _post read it as strict JSON
    assert data["surface"]["minimum"][1] is None


@pytest.mark.parametrize("body, message", [
    (b"[" * 20000 + b"]" * 20000, "nests too deeply"),
    (b'{"optimizers": ' + b"[" * 20000 + b"]" * 20000 + b"}", "nests too deeply"),
    (b'{"hypers": {"sgd": {"lr": [[[1]]]}}, "optimizers": ["sgd"]}',
     "nests too deeply at hypers.sgd.lr[0]"),
    (b'{"seed": ' + b"7" * 5000 + b"}", "the request is not JSON"),
    (b'{"optimizers": ["sgd"], "noise": NaN}', "NaN is not a JSON value"),
    (b'{"optimizers": ["sgd"], "noise": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"optimizers": ["sgd"]', "the request is not JSON"),
    (b"\xff\xfe\x00", "the request is not JSON"),
])
def test_bodies_that_break_the_json_parser_get_400(lab_server, body, message):
    status, data = _post(lab_server, body)
    assert status == 400 and message in data["error"], data


def _raw_exchange(port: int, data: bytes, wait: float) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection, then read until the server closes it (or ``wait``
    seconds pass); the reply and the seconds it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            pass
        return reply, time.monotonic() - started


@pytest.mark.parametrize("data", [
    b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n",                      # headers, then no body
    b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"optimizers": ',        # half a body
    b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\n",   # half the headers
])
def test_a_stalled_upload_is_dropped_after_the_timeout(data):
    server = lab.make_server(0, timeout=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reply, seconds = _raw_exchange(server.server_address[1], data, wait=20)
        assert seconds < 10, "the server held a stalled connection"
        assert reply == b"" or reply.startswith(b"HTTP/1.0 408"), reply[:200]
        # and it still serves others
        assert _get(f"http://127.0.0.1:{server.server_address[1]}/lab.css")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_default_timeout_is_a_few_seconds():
    server = lab.make_server(0)
    try:
        assert 1 <= server.request_timeout <= 30
    finally:
        server.server_close()


# -- fuzz ---------------------------------------------------------------------------------------

#: Values that are wrong somewhere (or everywhere): types, sizes, NaN, unicode, nesting.
_ODD = [None, True, False, 0, -1, 1, 2, 0.5, -0.0, 1e-320, 1e308, -1e308, 10 ** 30, 10 ** 400,
        -(10 ** 400), 2 ** 64, float("nan"), float("inf"), -float("inf"), "", " ", "x", "1e999",
        "nan", "-1", "0.1", "taco", "sgd", "true", "\u00fc\u2202\U0001f600", "\ud800", "\x00",
        "a" * 300, [], [1, 2], [1, 2, 3], ["sgd"], [[1], 2], {}, {"a": 1}, {"sgd": {"lr": 1}}]


def _nested(depth: int, rng: random.Random):
    value = rng.choice([1, "x", None])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _valid_payload(rng: random.Random) -> dict:
    """A request the page could send, with few steps."""
    options = lab_server_module.options()
    name = rng.choice(list(options["surfaces"]))
    surface = options["surfaces"][name]
    optimizers = rng.sample(list(options["optimizers"]), rng.randint(1, 3))
    payload = {"surface": name, "optimizers": optimizers, "steps": rng.randint(1, 6)}
    if surface["params"] and rng.random() < 0.5:
        key = rng.choice(list(surface["params"]))
        payload["params"] = {key: surface["params"][key]["default"]}
    hypers = {}
    for opt in optimizers:
        if rng.random() < 0.5:
            h = rng.choice(options["optimizers"][opt]["hypers"])
            default = h["default"]
            if h["kind"] == "float" and default is not None:
                default = default * rng.choice([1, 0.5, 1.5])
            hypers[opt] = {h["name"]: default if default is not None else "0.01"}
    if hypers:
        payload["hypers"] = hypers
    for key, value in [("noise", rng.choice([0, 0.5, 2])), ("seed", rng.randint(0, 99)),
                       ("tol", rng.choice([1e-3, 0.5])),
                       ("start", [rng.uniform(-2, 2), rng.uniform(-2, 2)])]:
        if rng.random() < 0.3:
            payload[key] = value
    return payload


def _odd(rng: random.Random):
    return _nested(rng.randint(1, 500), rng) if rng.random() < 0.08 else rng.choice(_ODD)


def _mutate(payload: dict, rng: random.Random) -> dict:
    """One to three of: a field set to an odd value, deleted or added; an odd value inside
    params, hypers, optimizers or start."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.choices(range(6), weights=[4, 2, 1, 3, 2, 3])[0]
        fields = list(lab_server_module._FIELDS)
        if kind == 0:
            payload[rng.choice(fields)] = _odd(rng)
        elif kind == 1 and payload:
            del payload[rng.choice([k for k in payload if k != "steps"] or ["steps"])]
        elif kind == 2:
            payload[rng.choice(["colour", "", "\u00e9t\u00e9", "steps "])] = _odd(rng)
        elif kind == 3 and isinstance(payload.get("hypers"), dict) and payload["hypers"]:
            opt = rng.choice(list(payload["hypers"]))
            inner = payload["hypers"][opt]
            if isinstance(inner, dict):
                inner[rng.choice(list(inner) + ["lr", "nope"])] = _odd(rng)
        elif kind == 4 and isinstance(payload.get("optimizers"), list):
            payload["optimizers"].append(_odd(rng))
        elif kind == 5:
            if rng.random() < 0.5:
                key = rng.choice(["cond", "angle", "tilt", "a", "b", "q"])
                payload["params"] = {key: _odd(rng)}
            else:
                payload["start"] = [_odd(rng), _odd(rng)][:rng.randint(0, 2)] + (
                    [_odd(rng)] if rng.random() < 0.2 else [])
    if isinstance(payload.get("steps"), int) and not isinstance(payload["steps"], bool):
        payload["steps"] = min(payload["steps"], 6) if payload["steps"] > 0 else payload["steps"]
    if "steps" not in payload:
        payload["steps"] = 3  # the surfaces' defaults run hundreds of steps: too slow here
    return payload


def _encode(payload, rng: random.Random) -> bytes:
    """The payload as JSON (Python writes NaN and Infinity, and huge integers, as they are),
    now and then with a deeply nested field added, cut short or with a byte changed."""
    data = json.dumps(payload).encode()
    r = rng.random()
    if r < 0.03:  # deeper than json.dumps writes: up to 40,000 brackets
        depth = rng.randint(500, 20000)
        return data[:-1] + b', "params": ' + b"[" * depth + b"]" * depth + b"}"
    if r < 0.05:
        return data[:rng.randrange(1, len(data))]
    if r < 0.1:
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    return data


#: How many requests the fuzz test sends: valid ones, mutated ones and broken JSON.
FUZZ_CASES = 400


def test_fuzzed_requests_get_200_or_one_clear_400(lab_server):
    """400 seeded random requests (about 1 in 6 valid, the rest mutated; 1 in 10 of those cut
    short or with a byte changed) through POST /api/run: never a 500 or a dropped connection;
    each runs or gets one short message."""
    rng = random.Random(20240611)
    seen = {200: 0, 400: 0}
    started = time.monotonic()
    for case in range(FUZZ_CASES):
        payload = _valid_payload(rng)
        if case % 6:
            payload = _mutate(payload, rng)
        body = _encode(payload, rng)
        try:
            status, data = _post(lab_server, body)
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError) as exc:
            pytest.fail(f"case {case}: no answer ({exc!r}) to {body[:300]!r}")
        assert status in (200, 400), (case, status, data, body[:300])
        seen[status] += 1
        if status == 200:
            sent = json.loads(body)  # a changed byte may still be JSON, another request
            assert len(data["runs"]) == len(sent["optimizers"]), (case, body[:300])
            for run in data["runs"]:
                assert all(v is None or math.isfinite(v) for p in run["path"] for v in p)
        else:
            message = data["error"]
            assert isinstance(message, str) and message.strip(), (case, data)
            assert "\n" not in message and len(message) < 1000, (case, message)
            assert "internal error" not in message and "Traceback" not in message
    assert seen[200] > 40 and seen[400] > 200, seen  # both kinds were exercised
    assert time.monotonic() - started < 60


def test_lbfgs_on_the_saddle_runs(lab_server):
    """Along L-BFGS's search direction the saddle x^2 - y^2 is exactly quadratic, which once
    made the line search's cubic step divide by zero (a 500)."""
    status, data = _post(lab_server, {"surface": "saddle", "optimizers": ["lbfgs"], "steps": 5})
    assert status == 200, data


# -- the command and the page in a browser ------------------------------------------------------


def test_serve_command_listens_on_loopback_until_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "gradwise.cli", "lab", "--serve", "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("serving on ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.status == 200 and b"gradwise optimizer lab" in reply.read()
        with urllib.request.urlopen(url + "lab.js", timeout=30) as reply:
            assert reply.status == 200 and b"/api/run" in reply.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_page_draws_the_paths_the_server_computes(lab_server, page):
    page.goto(lab_server)
    status = page.locator("#status")
    status.filter(has_text="done").wait_for(timeout=20000)
    assert page.locator("svg polyline.path").count() == 4  # sgd, momentum, nesterov, adam
    assert page.locator("#controls").evaluate("e => getComputedStyle(e).width") == "330px"

    page.select_option("#surface", "saddle")
    page.uncheck("#use-nesterov")
    page.uncheck("#use-adam")
    page.check("#use-newton")
    page.fill("#steps", "200")
    page.fill("#hyper-momentum-lr", "0.02")
    page.click("#run")
    page.locator("#status", has_text="done: 3 paths, 200 steps").wait_for(timeout=20000)
    paths = page.locator("svg polyline.path")
    assert paths.count() == 3
    assert [paths.nth(i).get_attribute("data-optimizer") for i in range(3)] == [
        "sgd", "momentum", "newton"]
    assert len(paths.nth(0).get_attribute("points").split()) == 201
    assert page.locator("#table tr").count() == 4
    assert page.errors == []

    page.fill("#hyper-momentum-lr", "-1")
    page.click("#run")
    page.locator("#status.error", has_text="momentum.lr=-1").wait_for(timeout=20000)
    assert [e for e in page.errors if "400" not in e] == []
