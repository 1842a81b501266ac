"""Atomic file output, safe directory replacement and small file helpers.

Every file medvlm writes goes through a temporary file in the same directory followed by
``os.replace``, so a crash (or SIGKILL) leaves either the old file or the new one, never half of one.

Directories medvlm writes whole (exported and consolidated models, run directories) carry a small
marker file, :data:`MARKER`, saying medvlm made them and as what. :func:`replace_dir` replaces a
destination only when it is absent, empty or one of medvlm's own replaceable outputs; a directory of
someone else's files needs ``overwrite``, and a run directory, the current or home directory and any
ancestor of a protected path (the source being exported, say) are never replaced.

Files a command writes at a path the user chose (scores, reports, converted data, a saved chat) are
the same promise for single files: :func:`check_new_output` lets a command replace only a file that
medvlm wrote there and nobody changed since (:data:`WRITTEN` records its size and digest beside it),
and someone else's file only with ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from medvlm.errors import DataError, OutputError
from medvlm.rundir import RECIPE

#: Written into every directory medvlm creates whole: {"written_by": "medvlm", "kind": ...}.
MARKER = ".medvlm-output.json"
#: The kind of a run directory (train, pipeline, continual): never replaced as a whole.
RUN = "run"
#: A run's claim on its output directory (see :mod:`medvlm.claims`); not content of the directory.
LOCK_FILE = ".medvlm.lock"
#: Beside files medvlm wrote at a user's path: {"written_by": "medvlm", "files": {name: {size, sha256}}}.
WRITTEN = ".medvlm-written.json"
#: A larger marker, lock or :data:`WRITTEN` record is not medvlm's (they hold a short entry per file at
#: most; a whole output of tens of thousands of files would read as someone else's: the safe side).
MAX_RECORD_BYTES = 1 << 20


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file the user asked for, not the hidden temporary beside it
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=indent, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def append_jsonl(handle: IO, *rows: dict) -> None:
    """Append one line per row and flush them to disk, so a killed run keeps every finished row."""
    handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    handle.flush()
    os.fsync(handle.fileno())


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse an output file path that is a directory, lies under a file or is one of the command's
    ``inputs`` (a data file answered into itself would be replaced), before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file path for this output")
    if path.exists() and not path.is_file():  # a device, pipe or socket (or a link to one)
        raise OutputError(f"{path}: is not a regular file (a device, pipe or socket); give a file path for this "
                          "output")
    if path.is_file():
        for source in inputs:
            if source is not None and Path(source).is_file() and os.path.samefile(path, source):
                raise OutputError(f"{path}: is also this command's input ({source}); writing there would "
                                  "replace it: give another output path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: cannot be created: {parent} is a file, not a directory")
            break


def _read_record(file: Path) -> dict[str, Any]:
    """One of medvlm's small JSON records (a marker, a lock, a :data:`WRITTEN` list); empty when it is
    missing, oversized, unreadable or not a JSON object — never an error, it is only evidence."""
    try:
        if file.stat().st_size > MAX_RECORD_BYTES:
            return {}
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _written_here(directory: Path) -> dict[str, Any]:
    """The files :data:`WRITTEN` in ``directory`` lists (name → size, sha256)."""
    files = _read_record(directory / WRITTEN).get("files")
    return files if isinstance(files, dict) else {}


def written_by_medvlm(path: str | os.PathLike) -> bool:
    """Whether the file ``path`` is exactly what a medvlm command last wrote there (unchanged since)."""
    path = Path(path)
    entry = _written_here(path.parent).get(path.name)
    if not isinstance(entry, dict) or not path.is_file():
        return False
    # the size first: a large file of someone else's is not read through to find out it differs
    return entry.get("size") == path.stat().st_size and entry.get("sha256") == sha256_file(path)


def check_new_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *,
                     overwrite: bool = False) -> None:
    """:func:`check_output_file`, and refuse an existing file medvlm did not write there (or that was
    changed since) unless ``overwrite``: a rerun replaces its own output, never someone's file."""
    check_output_file(path, inputs)
    path = Path(path)
    if path.is_file() and not overwrite and not written_by_medvlm(path):
        raise OutputError(f"{path}: exists and is not a file medvlm wrote (or it was changed since); give another "
                          "path, or pass --overwrite to replace it")


def record_written(*paths: str | os.PathLike) -> None:
    """Note files just written at a user's path in their directory's :data:`WRITTEN` record, so that
    :func:`check_new_output` lets a rerun replace them. Entries of files since removed are dropped.

    Two processes recording into one directory at the same instant may lose one entry; that file then
    needs ``overwrite`` to be replaced: the safe side.
    """
    by_directory: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        by_directory.setdefault(path.parent, []).append(path)
    for directory, written in by_directory.items():
        files = {name: entry for name, entry in _written_here(directory).items() if (directory / name).is_file()}
        for path in written:
            files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        write_json(directory / WRITTEN, {"written_by": "medvlm", "files": files})


def parse_json(text: str | bytes, *, file: str, line: int | None = None) -> Any:
    """``json.loads`` with one-line errors naming the file (and the line of a JSONL file).

    Bytes must be UTF-8 (never replaced silently); nesting deeper than the interpreter's recursion
    limit (~1000 levels) is a clear error instead of a ``RecursionError`` traceback.
    """
    where = f"line {line}" if line is not None else None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", file=file, record=where) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = (f"not valid JSON (column {exc.colno}: {exc.msg})" if line is not None
                   else f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        raise DataError(message, file=file, record=where) from None
    except RecursionError:
        raise DataError("JSON nested too deeply to read (more than ~1000 levels)", file=file, record=where) from None


def read_appended_rows(path: str | os.PathLike, is_row: Callable[[Any], bool], what: str) -> list[Any]:
    """The rows of a JSONL file a command appends to as it works (answers, reviews), for resuming.

    A torn last line after complete rows (a run killed mid-write) is cut off so appends stay valid. Any
    other line that is not JSON or not ``what`` (``is_row``) is an error naming the file and line: the
    rows after it are never dropped, and a file that is not such a log at all is never cut.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[Any] = []
    good_bytes, size = 0, path.stat().st_size
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = parse_json(line, file=str(path), line=number)
                valid = is_row(row)
            except DataError:
                valid = False
            if not valid:
                if rows and good_bytes + len(line) == size and not line.endswith(b"\n"):
                    break  # the torn last line of a killed run
                raise DataError(f"line {number} is not {what}; fix or remove it before resuming, or write to a "
                                "new file", file=str(path))
            rows.append(row)
            good_bytes += len(line)
    if good_bytes < size:
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return rows


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; not found, not UTF-8, not JSON or nested absurdly deep are one-line errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    return parse_json(path.read_bytes(), file=str(path))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Directories medvlm writes whole
# --------------------------------------------------------------------------------------------------


def _files_under(path: Path) -> list[str]:
    """Every file (and link) under ``path``, relative to it; medvlm's own bookkeeping files left out."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if (p.is_symlink() or not p.is_dir()) and p.name not in (MARKER, LOCK_FILE))


def mark_dir(path: str | os.PathLike, kind: str) -> None:
    """Say that medvlm created ``path`` (as ``kind``): later runs may then replace or reuse it.

    A whole output (anything but a run directory, which fills as it runs) also lists the files it
    holds, so a file someone adds to it later makes it theirs again (:func:`has_foreign_files`).
    """
    path = Path(path)
    record: dict[str, Any] = {"written_by": "medvlm", "kind": kind}
    if kind != RUN:
        record["files"] = _files_under(path)
    write_json(path / MARKER, record)


def dir_kind(path: str | os.PathLike) -> str | None:
    """What medvlm made ``path`` as (its marker's kind; ``run`` for a pre-marker run directory), else None."""
    path = Path(path)
    kind = _read_record(path / MARKER).get("kind")
    if kind is None and (path / RECIPE).is_file():  # run directories written before markers existed
        return RUN
    return str(kind) if kind is not None else None


def run_token() -> str:
    """Names staging paths: the same in every process of one run, different between concurrent runs.

    A single process: host and pid. A distributed launch (torchrun, deepspeed): the rendezvous
    address and port, which every process shares and no two live runs can.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"{os.environ.get('MASTER_ADDR', 'localhost')}-{os.environ.get('MASTER_PORT', '0')}"
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def unique_staging(final: str | os.PathLike) -> Path:
    """A hidden sibling of ``final`` that no other run writes (see :func:`run_token`)."""
    final = Path(final)
    return final.with_name(f".{final.name}.staging-{run_token()}")


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_protected(final: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse to replace or clear ``final`` when it is, or contains, a protected path, the current
    directory or the home directory."""
    target = Path(final).resolve()
    for guarded in [*protect, Path.cwd(), Path.home()]:
        if _is_within(Path(guarded).resolve(), target):
            raise OutputError(f"{final}: refusing to replace or clear it: it holds {guarded}; choose a new "
                              "directory")


def read_lock(lock: Path) -> dict:
    """The holder a lock file names (pid, host, start time); empty if it is missing or unreadable."""
    return _read_record(lock)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):
        return False
    return True


def holder_may_run(holder: dict) -> bool:
    """Whether a lock's holder may still be running: a live process on this host, or any process on
    another host (whose liveness cannot be checked from here, so is never guessed)."""
    pid, host = holder.get("pid"), holder.get("host")
    return isinstance(pid, int) and (host != socket.gethostname() or _pid_alive(pid))


def held_by_this_process(holder: dict) -> bool:
    """Whether a lock's holder is the calling process itself."""
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _check_not_in_use(directory: Path) -> None:
    """Refuse a directory another live medvlm process holds (a run writing into it), ``overwrite`` or not."""
    holder = read_lock(directory / LOCK_FILE)
    pid, host = holder.get("pid"), holder.get("host")
    if holder_may_run(holder) and not held_by_this_process(holder):
        raise OutputError(f"{directory}: in use by a medvlm run (pid {pid} on host {host}); refusing to replace "
                          "it; wait for that run to finish or choose another directory")


def has_foreign_files(path: str | os.PathLike) -> bool:
    """Whether the directory ``path`` holds files medvlm did not write: any file, when medvlm did not
    create it; a file its marker does not list, when it did (its lock file never counts)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if dir_kind(path) is None:
        return any(child.name != LOCK_FILE for child in path.iterdir())
    listed = _read_record(path / MARKER).get("files")
    if not isinstance(listed, list):  # a run directory, or an output marked before markers listed files
        return False
    return not set(_files_under(path)) <= set(map(str, listed))


def clear_dir(path: str | os.PathLike, *, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Empty ``path`` (``output.overwrite``), keeping the run's lock file; protected paths are refused."""
    path = Path(path)
    check_protected(path, protect)
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def check_replaceable(final: str | os.PathLike, *, overwrite: bool = False,
                      protect: Iterable[str | os.PathLike] = ()) -> None:
    """Raise :class:`OutputError` unless the directory ``final`` may be replaced as a whole.

    Always refused: ``final`` is, or contains, a protected path, the current directory or the home
    directory; ``final`` is a run directory, or a directory a live medvlm run holds (its lock file:
    replacing it would pull it from under the run). Refused without ``overwrite``: a file, or a
    non-empty directory without medvlm's marker (someone's own files).
    """
    final = Path(final)
    check_protected(final, protect)
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{final}: cannot be created: {parent} is a file, not a directory")
            break
    if not final.exists() and not final.is_symlink():
        return
    if final.is_dir() and not final.is_symlink():
        _check_not_in_use(final)
        kind = dir_kind(final)
        if kind == RUN:
            raise OutputError(f"{final}: is a medvlm run directory (checkpoints, logs, provenance); refusing to "
                              "replace it; choose a new directory")
        if not has_foreign_files(final) or overwrite:
            return
        raise OutputError(f"{final}: exists and holds files medvlm did not write; choose a new directory, "
                          "or pass --overwrite to replace it")
    if not overwrite:
        raise OutputError(f"{final}: exists and is not a directory; choose another path, or pass --overwrite "
                          "to replace it")


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike, *, kind: str = "output",
                overwrite: bool = False, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Move a completely written directory into place, replacing a previous one :func:`check_replaceable`
    allows; ``final`` gets medvlm's marker (as ``kind``).

    ``os.replace`` cannot swap non-empty directories, so an existing target is first renamed aside
    and deleted only after the new one is in place.
    """
    staging, final = Path(staging), Path(final)
    check_replaceable(final, overwrite=overwrite, protect=protect)
    mark_dir(staging, kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
