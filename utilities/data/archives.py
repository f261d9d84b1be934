"""Reading a zip archive nobody vouches for (a model package downloaded or shared) by the rules
of ``tarfile``'s ``data`` filter and pip's wheel installer.

Before any member is read, the member list (the zip's central directory) is checked:

- at most :data:`MAX_MEMBERS` members;
- every name relative, normalised and inside the archive: no absolute path, no ``..``, no
  ``.`` or empty part, no drive letter, backslash or control character;
- no symbolic link or other special file (the Unix mode in the external attributes), no
  encrypted member, no compression but stored and deflated;
- no name twice, also not in another letter case (one would hide the other);
- a declared size of at most :data:`MAX_MEMBER_BYTES` a member and :data:`MAX_TOTAL_BYTES`
  together, and no member of over :data:`RATIO_FLOOR` bytes declaring more than
  :data:`MAX_RATIO` times its compressed size (a zip bomb).

Members are then read in chunks that stop at the declared size and at the caller's limit, so
no header, true or false, makes a read unbounded; the CRC of each is checked as it is read.
A member is only ever written to the path the caller names, never under its own name, and a
JSON member with a repeated key is refused (the second value would replace the first
silently). Every refusal is a one-line ``ValueError`` that starts with the caller's label
(``--model package.zip``).
"""
from __future__ import annotations

import io
import json
import re
import stat
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utilities.core.textdata import loads_json
from utilities.data.io import atomic_path

__all__ = ["MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_RATIO", "RATIO_FLOOR", "name_problem",
           "UntrustedZip"]

#: Members an archive may hold.
MAX_MEMBERS = 64
#: Declared size of one member, bytes (the largest network's weights are 25 MiB).
MAX_MEMBER_BYTES = 256 * 2**20
#: Declared size of all members together, bytes.
MAX_TOTAL_BYTES = 1024 * 2**20
#: Declared size over compressed size a member may reach (weights deflate to ~0.9 of their size) ...
MAX_RATIO = 100
#: ... once it declares more than this many bytes (a small text may compress better).
RATIO_FLOOR = 2**20
#: Bytes read at a time.
CHUNK = 2**20
_MAX_NAME = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe relative path inside an archive (``None``: it is one):
    forward slashes only, no absolute path, drive letter, ``..``, ``.`` or empty part."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if len(name) > _MAX_NAME or not name.isprintable():
        return f"is longer than {_MAX_NAME} characters" if len(name) > _MAX_NAME else "holds a control character"
    if "\\" in name:
        return "holds a backslash (not a relative path with forward slashes)"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of its folder (..)"
    if any(part in ("", ".") for part in parts):
        return "is not a normalised path (an empty or '.' part)"
    return None


def _kind_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not a plain file or folder: a link, a device, a pipe; encrypted; compressed
    with a method other than stored or deflated."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a special file (device, pipe or socket)"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in _COMPRESSIONS:
        return f"uses compression method {info.compress_type} (only stored and deflated are read)"
    return None


def _size_problem(info: zipfile.ZipInfo) -> str | None:
    if info.file_size > MAX_MEMBER_BYTES:
        return f"declares {info.file_size} bytes (at most {MAX_MEMBER_BYTES} are read)"
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        ratio = info.file_size // max(info.compress_size, 1)
        return (f"declares {info.file_size} bytes from {info.compress_size} compressed ({ratio} times; at most "
                f"{MAX_RATIO} are read)")
    return None


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename[:-1] if info.is_dir() else info.filename
    return name_problem(name) or _kind_problem(info) or _size_problem(info)


class UntrustedZip:
    """A zip archive whose member list passed the checks of this module (see there), read member
    by member within bounds. ``label`` starts every message (``--model package.zip``); ``expected``
    says what to pass instead of a refused archive, ``again`` what to do about a damaged one.

    Raises:
        zipfile.BadZipFile: ``path`` is not a zip archive (or a truncated one).
        ValueError: the member list breaks a rule of this module.
    """

    def __init__(self, path: str | Path, label: str, expected: str, again: str) -> None:
        self.label, self.expected, self.again = label, expected, again
        self._zip = zipfile.ZipFile(path)
        try:
            self._members = self._checked(self._zip.infolist())
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> UntrustedZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def refuse(self, problem: str) -> ValueError:
        """The one-line error for an archive that breaks a rule: ``<label> is refused: <problem>``."""
        return ValueError(f"{self.label} is refused: {problem}; pass {self.expected}")

    def _checked(self, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        if len(infos) > MAX_MEMBERS:
            raise self.refuse(f"it holds {len(infos)} members (at most {MAX_MEMBERS} are read)")
        members: dict[str, zipfile.ZipInfo] = {}
        folded: set[str] = set()
        for info in infos:
            problem = _member_problem(info)
            if problem is None and info.filename.casefold() in folded:
                problem = "appears twice (also counting names that differ only in letter case)"
            if problem is not None:
                raise self.refuse(f"member {info.filename!r} {problem}")
            members[info.filename] = info
            folded.add(info.filename.casefold())
        total = sum(info.file_size for info in infos)
        if total > MAX_TOTAL_BYTES:
            raise self.refuse(f"its members declare {total} bytes together (at most {MAX_TOTAL_BYTES} are read)")
        return members

    def file(self, name: str) -> zipfile.ZipInfo | None:
        """The member ``name`` when it is a file (not a folder) of the archive."""
        info = self._members.get(name)
        return None if info is None or info.is_dir() else info

    def _stream(self, info: zipfile.ZipInfo, write: Callable[[bytes], object], limit: int) -> None:
        """Decompress ``info`` chunk by chunk into ``write``; at most ``limit`` bytes, never more
        than the member declares; a CRC or decompression failure is a one-line error."""
        if info.file_size > limit:
            raise self.refuse(f"member {info.filename!r} declares {info.file_size} bytes (at most {limit} are read)")
        total = 0
        try:
            with self._zip.open(info) as source:
                while chunk := source.read(CHUNK):
                    total += len(chunk)
                    if total > min(limit, info.file_size):
                        raise self.refuse(f"member {info.filename!r} holds more than the {info.file_size} bytes it "
                                          "declares")
                    write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.label} is damaged (member {info.filename!r}: {detail}); {self.again}") from None

    def read_json(self, info: zipfile.ZipInfo, limit: int) -> Any:
        """A JSON member of at most ``limit`` bytes; a repeated key, bad UTF-8 or JSON, or nesting
        too deep to parse is a one-line error."""
        buffer = io.BytesIO()
        self._stream(info, buffer.write, limit)
        try:
            return loads_json(buffer.getvalue().decode("utf-8"), f"{self.label}: {info.filename}")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            detail = str(e)[:160] if not isinstance(e, RecursionError) else "nested too deep"
            raise ValueError(f"{self.label} has a damaged {info.filename} ({type(e).__name__}: {detail}); "
                             f"{self.again}") from None

    def extract(self, info: zipfile.ZipInfo, target: Path) -> Path:
        """Write member ``info`` to ``target`` (a path the caller chose, in a folder it owns);
        a failed write names the member and the label, not the caller's folder."""
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                self._stream(info, out.write, MAX_MEMBER_BYTES)
        except OSError as e:  # atomic_path's message names the caller's (temporary) folder: say why only
            reason = getattr(e.__cause__, "strerror", None) or e.strerror or "write failed"
            raise OSError(f"cannot extract member {info.filename!r} of {self.label} into the temporary folder "
                          f"({reason}); free space there or point TMPDIR to another disk") from None
        return target
