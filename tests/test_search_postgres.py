"""Workers sharing one study on a real PostgreSQL server (Debian's postgresql package, started
here on a free loopback port): every trial finishes once, and a worker killed mid-trial loses
no trial and duplicates none once the search is resumed."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from test_search import (
    assert_every_trial_once,
    kill_mid_trial,
    rows,
    slow_search_config,
    start_search,
    trials_of,
    write,
)

pytest.importorskip("psycopg2", reason="psycopg2 (pip install 'gradwise[postgres]')")


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return found[-1] if found else shutil.which("initdb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1: yields a function that returns the URL of
    a new empty database. As root, the server runs as the ``postgres`` user (it refuses root)."""
    initdb = _initdb()
    if initdb is None:
        pytest.skip("no initdb (Debian package 'postgresql')")
    bin_dir = os.path.dirname(initdb)
    root = tempfile.mkdtemp(prefix="gradwise-pg-")
    data, sockets = os.path.join(root, "data"), os.path.join(root, "sock")
    os.mkdir(sockets)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
        "--no-sync", "-E", "UTF8")
    for attempt in range(3):  # another process may take the free port before the server
        port = _free_port()
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100")
        try:
            run(os.path.join(bin_dir, "pg_ctl"), "-D", data, "-o", options, "-l",
                os.path.join(root, "log"), "-w", "-t", "60", "start")
            break
        except subprocess.CalledProcessError as exc:
            if attempt == 2:
                log_path = Path(root) / "log"
                log = log_path.read_text() if log_path.exists() else ""
                pytest.fail(f"postgres did not start: {exc.stderr}\n{log}")

    def new_database() -> str:
        import psycopg2

        name = "gw_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {name}")
        conn.close()
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([*as_user, os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_worker_processes_share_one_study(postgres, tmp_path):
    planned = 4
    storage = postgres()
    path = write(tmp_path / "s.yaml", slow_search_config(planned))
    proc = start_search(path, "--out", tmp_path / "out", "--storage", storage, "--workers", 2)
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    trials = trials_of(storage, "tiny:only")
    assert_every_trial_once(trials, planned, [])
    assert len({t.user_attrs["result"]["worker"] for t in trials}) == 2
    assert not (tmp_path / "out" / "study.db").exists()  # everything is in PostgreSQL
    assert sum(r["state"] == "COMPLETE" for r in rows(tmp_path / "out" / "results.csv")) == planned


def test_killed_worker_loses_and_duplicates_no_trial(postgres, tmp_path):
    """Two workers (two commands, as on two machines); one is killed mid-trial; the other
    re-runs the dead trial once its heartbeat is stale; the killed one is restarted with
    --resume and the stage still ends with exactly the planned trials."""
    planned = 4
    storage = postgres()
    path = write(tmp_path / "s.yaml", slow_search_config(planned))
    a = start_search(path, "--out", tmp_path / "a", "--storage", storage)
    b = start_search(path, "--out", tmp_path / "b", "--storage", storage)
    killed = kill_mid_trial(a, storage, "tiny:only", busy=2)  # A's trial and B's
    a2 = start_search(path, "--out", tmp_path / "a", "--storage", storage, "--resume")
    for proc in (a2, b):
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err
    trials = trials_of(storage, "tiny:only")
    dead = [t for t in trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and dead[0].number in {t.number for t in killed}
    assert_every_trial_once(trials, planned, dead, others_live=True)
    for out in ("a", "b"):  # both commands wrote the same table
        table = rows(tmp_path / out / "results.csv")
        assert sum(r["state"] == "COMPLETE" for r in table) == planned


def test_two_workers_run_each_grid_point_once(postgres, tmp_path):
    """Two commands share a grid stage (each enqueues the points it does not find): each
    point runs once. (The race of two enqueues is in test_a_grid_point_enqueued_twice_runs_once.)"""
    storage = postgres()
    config = slow_search_config(6)
    config["search"]["sampler"] = "grid"
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)"}  # 6 points
    path = write(tmp_path / "s.yaml", config)
    procs = [start_search(path, "--out", tmp_path / name, "--storage", storage)
             for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err
    trials = trials_of(storage, "tiny:only")
    assert_every_trial_once(trials, 6, [])
    assert sorted(t.user_attrs["grid_point"] for t in trials) == list(range(6))


def test_workers_opening_an_empty_database_together_all_get_the_storage(postgres):
    """The first workers on an empty database race to create Optuna's tables."""
    storage = postgres()
    code = ("import sys; from gradwise.search.stages import parse_settings; "
            "from gradwise.search.storage import open_storage; "
            "open_storage(sys.argv[1], parse_settings({'stages': [{'trials': 1, 'epochs': 1}]}))")
    procs = [subprocess.Popen([sys.executable, "-c", code, storage], stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
