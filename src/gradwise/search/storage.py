"""The Optuna storage of a search: a local SQLite file (``OUT/study.db``) or a shared
PostgreSQL database, opened with heartbeats, and the names of its studies (``<name>:<stage>``).

A shared storage is trusted for trial results and bookkeeping only; what a trial runs comes
from each worker's own config (:mod:`gradwise.search.study` checks every stored plan).
"""

from __future__ import annotations

import importlib.util
import inspect
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import exc as sql_errors

from ..errors import UserError
from .spec import SearchSpec
from .stages import Settings, Stage
from .workers import retry_stale

#: times a worker tries to open a database whose tables another worker is creating
SCHEMA_ATTEMPTS = 5


def default_storage(out: str | Path) -> str:
    """The storage of a search without ``--storage``: ``sqlite:///OUT/study.db``."""
    return f"sqlite:///{Path(out) / 'study.db'}"


def open_storage(url: str, settings: Settings) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url`` with heartbeats every ``settings.heartbeat`` seconds; a
    trial silent for ``settings.grace`` seconds is failed and its params enqueued again
    (:func:`gradwise.search.workers.retry_stale`). A missing driver, a bad URL or a server that
    does not answer is a UserError (the password left out)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats are "experimental" in Optuna and "meant for Study.optimize"; gradwise sends
    # its own (see workers.Heartbeat), so these warnings say nothing to a gradwise user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    url = with_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    # Optuna < 5 names the callback failed_trial_callback
    callback: dict[str, Any] = {
        "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
        inspect.signature(optuna.storages.RDBStorage).parameters
        else "failed_trial_callback": retry_stale}
    attempts = 0
    try:
        while True:
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=settings.heartbeat,
                    grace_period=settings.grace, **callback)
            except Exception as exc:
                # workers started together on an empty database race to create Optuna's
                # tables; the loser sees a duplicate table or key and finds them next time
                attempts += 1
                if attempts == SCHEMA_ATTEMPTS or not schema_race(exc):
                    raise
                time.sleep(0.2 * attempts)
    except ImportError as exc:
        raise UserError(f"--storage {url.split('://')[0]}://...: a driver is missing ({exc}); "
                        "for PostgreSQL: pip install 'gradwise[postgres]'") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, a server that does not answer
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise UserError(f"cannot open the storage {redact(url)}: {type(exc).__name__}: "
                        f"{first}") from None


def schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is what a worker sees when another created Optuna's tables first."""
    return isinstance(exc, sql_errors.IntegrityError) or "already exists" in str(exc)


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver installed: SQLAlchemy 2.1 defaults to psycopg 3,
    gradwise's ``postgres`` extra installs psycopg2.

    >>> with_driver("sqlite:///x.db")
    'sqlite:///x.db'
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{rest}"
    return url


def redact(url: str) -> str:
    """``url`` without its user and password, for messages.

    >>> redact("postgresql://me:secret@db.example/search")
    'postgresql://***@db.example/search'
    """
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def study_name(spec: SearchSpec, stage: Stage) -> str:
    """The Optuna study of a stage: ``<search name>:<stage name>``."""
    return f"{spec.name}:{stage.name}"


def existing_studies(storage: optuna.storages.BaseStorage) -> set[str]:
    """The names of the studies in ``storage``."""
    return {s.study_name for s in storage.get_all_studies()}
