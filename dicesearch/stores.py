"""What a store holds, checked before dicesearch writes into it or reads from it.

A sweep keeps its trials in an Optuna storage and mirrors them to an MLflow tracking store.
Both are URLs the user types, and both libraries create their tables in whatever they are
given: an Optuna storage pointed at another program's sqlite file adds fourteen tables to
it, and a read-only command (``dicesearch export``) given a file that does not exist leaves
an empty study database behind. This module looks first, reading only:

* :func:`check_optuna_storage`: a sqlite file that is not a database, or holds another
  program's tables (an MLflow store among them); a journal file that is not an Optuna
  journal; a server database with tables of Optuna's names that are not Optuna's. Each is
  refused in one line, before anything is written.
* :func:`require_optuna_storage`: for commands that only read (``export``): the storage must
  already hold Optuna's tables; if not, one line says there is no study, and nothing is made.
* :func:`tracking_store_problem`: the same questions for an MLflow sqlite store, answered
  with a line (or None), never raised: a tracking store that cannot be used is reported
  and the sweep goes on (the Optuna storage is the source of truth; see
  ``dicesearch.sweep.store.mlflow_mirror``).

Only what can be read cheaply is checked: a sqlite file's table names (opened read-only),
a journal file's first line, a server's table names. A database of the right program but
of an incompatible version is left to Optuna's and MLflow's own migrations and messages.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import quote

from dicesearch.errors import DicesearchError, one_line

__all__ = ["check_optuna_storage", "require_optuna_storage", "shown_url", "tracking_store_problem"]

SQLITE_PREFIX = "sqlite:///"
JOURNAL_SUFFIXES = (".journal", ".log")
# Optuna's schema (optuna/storages/_rdb/models.py): these two are in every version since 2.0
OPTUNA_TABLES = frozenset({"studies", "version_info"})
# MLflow's tracking schema (mlflow/store/tracking/dbmodels): experiments and runs, whatever the version
MLFLOW_TABLES = frozenset({"experiments", "runs"})
_SQLITE_MAGIC = b"SQLite format 3\x00"


def shown_url(url: str) -> str:
    """``url`` with any password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for other URLs and in-memory databases."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    name = url[len(SQLITE_PREFIX):].split("?", 1)[0]
    return None if name in ("", ":memory:") else Path(name)


def _is_journal(url: str) -> bool:
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def _sqlite_tables(path: Path) -> set[str]:
    """Table names of an existing sqlite file, opened read-only; raises ValueError (one line) if it is not a database."""
    with path.open("rb") as handle:
        head = handle.read(len(_SQLITE_MAGIC))
    if not head:
        return set()  # an empty file is an empty database to sqlite
    if head != _SQLITE_MAGIC:
        raise ValueError("is not an SQLite database (its first bytes are not SQLite's header)")
    try:
        connection = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise ValueError(f"cannot be opened ({one_line(exc)})") from None
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:  # a damaged file: "database disk image is malformed"
        raise ValueError(f"is not a readable SQLite database ({one_line(exc)})") from None
    finally:
        connection.close()


def _listed(tables: set[str], limit: int = 4) -> str:
    names = sorted(tables)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _foreign_sqlite_problem(tables: set[str], ours: frozenset[str], what: str) -> str | None:
    """Why a sqlite file holding ``tables`` is not (and cannot become) ``what``; None if it is, or is empty."""
    user_tables = {t for t in tables if not t.startswith("sqlite_")}
    if not user_tables or ours <= user_tables:
        return None
    if ours is not OPTUNA_TABLES and OPTUNA_TABLES <= user_tables:
        return "is an Optuna storage (it holds Optuna's tables), not an MLflow tracking store"
    if ours is not MLFLOW_TABLES and MLFLOW_TABLES <= user_tables:
        return "is an MLflow tracking store (it holds MLflow's tables), not an Optuna storage"
    return f"holds another program's tables ({_listed(user_tables)}), not {what}"


def _journal_problem(path: Path) -> str | None:
    """Why an existing, non-empty file is not an Optuna journal (one JSON operation a line); None if it is one."""
    with path.open("rb") as handle:
        first = handle.readline(65536)
    if not first.strip():
        return None
    try:
        entry = json.loads(first)
    except ValueError:
        return "is not an Optuna journal (its first line is not a JSON journal entry)"
    if not isinstance(entry, dict) or "op_code" not in entry:
        return "is not an Optuna journal (its first line has no op_code)"
    return None


def check_optuna_storage(url: str, connect: bool = False) -> None:
    """Raise DicesearchError (one line) if ``url`` holds something other than an Optuna storage.

    Reads only. A sqlite file or journal file that does not exist yet, or is empty, is fine
    (the sweep creates it). ``connect``: also look into a server database (postgresql://,
    mysql://...), which needs a connection; off for the checks that must not connect.
    """
    path = _sqlite_path(url)
    if path is not None and path.is_file():
        try:
            problem = _foreign_sqlite_problem(_sqlite_tables(path), OPTUNA_TABLES, "an Optuna storage")
        except (OSError, ValueError) as exc:
            problem = str(exc)
        if problem:
            raise DicesearchError(
                f"storage {url}: the file {path} {problem}; give the study a file of its own (e.g. sqlite:///optuna.db), "
                "dicesearch will not write into it"
            )
        return
    if _is_journal(url) and Path(url).is_file():
        try:
            problem = _journal_problem(Path(url))
        except OSError as exc:
            problem = f"cannot be read ({one_line(exc)})"
        if problem:
            raise DicesearchError(f"storage {url}: the file {problem}; give the study a journal file of its own (e.g. runs/study.journal)")
        return
    if connect and "://" in url and path is None and not url.startswith("sqlite"):
        tables = _server_tables(url)
        clash = {"studies", "trials"} & tables
        if clash and not OPTUNA_TABLES <= tables:
            raise DicesearchError(
                f"storage {shown_url(url)}: the database holds a table {sorted(clash)[0]!r} that is not Optuna's (no "
                "version_info table beside it); give the study a database or schema of its own"
            )


def require_optuna_storage(url: str, study_name: str) -> None:
    """For commands that only read: raise DicesearchError (one line) unless ``url`` already
    holds Optuna's tables, so nothing is created by looking. Checks what it holds too."""
    advice = "run `dicesearch sweep` first, or give the storage it used (--storage)"
    path = _sqlite_path(url)
    if path is not None:
        if not path.is_file():
            raise DicesearchError(f"no study '{study_name}': the storage {url} does not exist ({path}); {advice}")
        check_optuna_storage(url)
        if not OPTUNA_TABLES <= _sqlite_tables(path):
            raise DicesearchError(f"no study '{study_name}': the storage {url} holds no Optuna study (an empty database); {advice}")
        return
    if _is_journal(url):
        if not Path(url).is_file() or Path(url).stat().st_size == 0:
            raise DicesearchError(f"no study '{study_name}': the journal file {url} does not exist or is empty; {advice}")
        check_optuna_storage(url)
        return
    if "://" in url and not url.startswith("sqlite"):
        check_optuna_storage(url, connect=True)
        if not OPTUNA_TABLES <= _server_tables(url):
            raise DicesearchError(f"no study '{study_name}': the database {shown_url(url)} holds no Optuna tables; {advice}")


def _server_tables(url: str) -> set[str]:
    """Table names in a server database's default schema; DicesearchError (one line) if it cannot be reached."""
    from sqlalchemy import create_engine, inspect

    try:
        engine = create_engine(url)
    except ImportError:
        return set()  # no driver: probe_storage names the package to install
    try:
        return set(inspect(engine).get_table_names())
    except Exception as exc:  # unreachable server, bad password, no such database
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DicesearchError(f"storage {shown_url(url)}: cannot open it ({first.strip()[:200]}); check the URL, the server and the database") from None
    finally:
        engine.dispose()


def tracking_store_problem(uri: str) -> str | None:
    """Why MLflow should not open the tracking store ``uri`` (one line), or None.

    Only sqlite stores are looked into: a file that is not a database, or holds another
    program's tables (MLflow would add its own to them). A store that does not exist yet is
    fine (MLflow creates it)."""
    path = _sqlite_path(uri)
    if path is None or not path.is_file():
        return None
    try:
        problem = _foreign_sqlite_problem(_sqlite_tables(path), MLFLOW_TABLES, "an MLflow tracking store")
    except (OSError, ValueError) as exc:
        problem = str(exc)
    if problem is None:
        return None
    return f"tracking store {uri}: the file {path} {problem}; give --tracking-uri (or tracking_uri:) a file of its own, e.g. sqlite:///mlflow.db"
