"""A throwaway PostgreSQL server for the test session: Debian's binaries, a temp folder, a unix socket only.

initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user. Set
BUDGET_MCP_REQUIRE_POSTGRES=1 (CI does) to fail instead of skipping when the binaries are missing.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    for folder in (os.environ.get("BUDGET_MCP_PG_BIN"), *BIN_DIRS):
        if folder and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def _as_owner() -> dict[str, Any]:
    """subprocess arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[str]:
    """Start a server, create database `budget`, yield its DSN; stop and delete everything afterwards.

    Tests run with fsync off (they kill clients, not the server); `durable=True` keeps PostgreSQL's defaults.
    """
    folder = find_bin()
    if folder is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql-15")
    base = Path(tempfile.mkdtemp(prefix="pg"))  # short: a socket path must stay under 108 bytes
    owner = _as_owner()
    if owner:
        os.chown(base, owner["user"], owner["group"])

    def run(program: str, *args: str) -> None:
        subprocess.run([str(folder / program), *args], check=True, capture_output=True, text=True, cwd=base, **owner)

    data = base / "data"
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-k {base} -c listen_addresses='' -c max_connections=200" + ("" if durable else " -c fsync=off")
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        try:
            run("createdb", "-h", str(base), "-U", "postgres", "budget")
            yield f"postgresql://postgres@/budget?host={base}"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
