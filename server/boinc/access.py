"""Who may read, write or run a file, computed from ``os.stat`` like the kernel does (owner, group, other bits;
every parent directory searchable), for users other than the one running: the project user, the web server's
user. Used by ``openastro boinc install`` (refuse launchers the project user cannot run) and ``boinc doctor``."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

READ, WRITE, EXECUTE = 4, 2, 1


@dataclass(frozen=True)
class Account:
    """A user as the kernel checks file access: uid and every group id."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def of_uid(cls, uid: int) -> "Account":
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(str(uid), uid, frozenset())
        return cls(pw.pw_name, uid, frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid)))

    @classmethod
    def named(cls, name: str) -> "Account | None":
        try:
            return cls.of_uid(pwd.getpwnam(name).pw_uid)
        except KeyError:
            return None


def may_access(st: os.stat_result, account: Account, want: int) -> bool:
    """Whether ``account`` has the ``want`` bits (READ|WRITE|EXECUTE) on a file with stat ``st``."""
    mode = st.st_mode
    if account.uid == 0:
        return not (want & EXECUTE) or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if st.st_uid == account.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in account.gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def access_problem(path: Path, account: Account, want: int) -> str | None:
    """Why ``account`` cannot access ``path`` with ``want`` (every parent must be searchable); None if it can."""
    path = Path(os.path.abspath(path))
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        if not may_access(st, account, EXECUTE):
            return f"{account.name} cannot enter {parent} (mode {stat.filemode(st.st_mode)}, owner " \
                   f"{_owner(st)})"
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not may_access(st, account, want):
        what = {READ: "read", WRITE: "write", EXECUTE: "execute", READ | EXECUTE: "read and execute",
                READ | WRITE | EXECUTE: "write into"}.get(want, "access")
        return f"{account.name} cannot {what} {path} (mode {stat.filemode(st.st_mode)}, owner {_owner(st)})"
    return None


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def program_problem(program: Path, account: Account) -> str | None:
    """Why ``account`` cannot run ``program`` (a script: its interpreter too; symlinks: their targets)."""
    seen: set[Path] = set()
    todo = [Path(program)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        problem = access_problem(path, account, READ | EXECUTE if path.is_file() and _is_script(path)
                                 else EXECUTE)
        if problem:
            return problem
        if path.is_symlink():
            todo.append(Path(os.path.realpath(path)))
        if _is_script(path):
            interpreter = _shebang(path)
            if interpreter is not None:
                todo.append(interpreter)
    return None


def _is_script(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


def _shebang(path: Path) -> Path | None:
    with open(path, "rb") as fh:
        line = fh.readline(4096).decode("utf-8", "replace")[2:].strip()
    if not line:
        return None
    first = line.split()[0]
    return Path(first) if first != "/usr/bin/env" else None


def launcher_programs(launcher: Path) -> list[Path]:
    """The programs a launcher written by ``openastro boinc install`` execs (its ``exec`` line's first word)."""
    import shlex

    for line in launcher.read_text(encoding="utf-8").splitlines():
        if line.startswith("exec "):
            words = shlex.split(line[5:])
            return [Path(words[0])] if words else []
    return []


def launcher_problems(project: Path, launchers, owner: Account) -> list[tuple[str, str]]:
    """(launcher name, problem) for each launcher in ``project/bin`` that ``owner`` cannot run (or is missing)."""
    out = []
    for name in launchers:
        path = Path(project) / "bin" / name
        if not path.is_file():
            out.append((name, f"{path} is missing"))
            continue
        problems = [program_problem(path, owner)] + [program_problem(p, owner) for p in launcher_programs(path)]
        problem = next((p for p in problems if p), None)
        if problem:
            out.append((name, problem))
    return out


def project_owner(project: Path) -> Account:
    """The project user: the owner of the project's config.xml (make_project ran as that user)."""
    return Account.of_uid((Path(project) / "config.xml").stat().st_uid)


RUNNABLE_FIX = ("install OpenAstro into a virtual environment made from a Python the project user can read "
                "(e.g. /usr/bin/python3 -m venv /opt/openastro), then re-run `openastro boinc install` with that "
                "environment's openastro")
