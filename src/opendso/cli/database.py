"""Which database a command opens, and who the command-line actor is (``opendso users``, ``opendso audit``).

Every command that opens OpenDSO's database takes ``--data-dir`` and ``--database-url``
(:func:`add_database_arguments`) and resolves them the same way (:func:`database_of`). Changes
made on the command line are audited as ``cli:<operating-system account>`` (:func:`cli_actor`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatabaseChoice", "add_database_arguments", "cli_actor", "database_of"]


def cli_actor() -> str:
    """The actor of a command-line change: ``cli:`` and the operating-system account running it.

    Taken from the process's user id, not from ``$USER`` (which anyone can set).
    """
    import pwd

    try:
        account = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        account = f"uid{os.geteuid()}"
    return f"cli:{account}"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--database-url``, as every command that opens OpenDSO's database takes them."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data folder: its opendso.db, and the integrity key of any database "
        "(default: OPENDSO_DATA_DIR or ~/.local/share/opendso)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="database (default: OPENDSO_DATABASE_URL, else opendso.db in the data folder)",
    )


@dataclass(frozen=True)
class DatabaseChoice:
    """The database a command works on and where its integrity key is (None: the default place)."""

    url: str
    key_path: Path | None


def database_of(args: argparse.Namespace) -> DatabaseChoice:
    """``--database-url`` (else ``opendso.db`` in ``--data-dir``, else the default); the key in ``--data-dir``.

    With both options the database is the URL's and the integrity key the data folder's, as
    ``opendso run --data-dir X --database-url URL`` keeps them.
    """
    from opendso.store import default_database_url
    from opendso.store.integrity import KEY_FILE

    url = getattr(args, "database_url", None)
    folder = getattr(args, "data_dir", None)
    base = Path(folder).expanduser().resolve() if folder else None
    if url:
        return DatabaseChoice(str(url), base / KEY_FILE if base is not None else None)
    if base is not None:
        return DatabaseChoice(f"sqlite:///{base / 'opendso.db'}", None)
    return DatabaseChoice(default_database_url(), None)
