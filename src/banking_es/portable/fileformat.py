"""The export file: one gzip stream of JSON lines, written and read in one pass each.

    {"format": "banking-es-export", "format_version": 1, "source": {...}, "exported_at": ...}
    {"table": "events", "columns": ["position", ...]}
    [1, "acc-1", 1, ...]                                  one line per row
    {"end": "events", "rows": 1, "sha256": "<hex of the table's row lines>"}
    ...                                                   the next tables
    {"manifest": {"format_version": 1, "tables": {...}}, "sha256": "<hex of every line above>"}

The manifest comes last (a stream knows its counts only at its end): without it a file is
truncated.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

FORMAT = "banking-es-export"
FORMAT_VERSION = 1
#: Rows handed to the loader at a time.
READ_BATCH = 2000
#: gzip level: 1 compresses ~90% as well as 6 at about three times the speed on event JSON.
COMPRESS_LEVEL = 1


class ExportFileError(Exception):
    """The file cannot be imported (the message says why, in one line)."""


class DamagedFile(ExportFileError):
    """A checksum or count does not match, the file is truncated or not valid gzip/JSON."""


class UnsupportedFile(ExportFileError):
    """Not an export of banking-es, or of a format version this version cannot read."""


@dataclass(frozen=True, slots=True)
class Source:
    dialect: str
    schema_version: int


@dataclass(frozen=True, slots=True)
class Header:
    format_version: int
    source: Source
    exported_at: str


@dataclass(slots=True)
class Manifest:
    """Row count and SHA-256 of each table's row lines, in file order."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


class ExportWriter:
    """Writes an export to `path` through a private temporary file (mode 0600 whatever the
    umask); `finish()` links it into place, so `path` appears only when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # the umask can only take bits away; this sets exactly these
        self._raw: IO[bytes] = os.fdopen(fd, "wb")
        self._gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=COMPRESS_LEVEL, mtime=0
        )
        self._file_hash = hashlib.sha256()
        self._table: str | None = None
        self._table_hash = hashlib.sha256()
        self._rows = 0
        self.manifest = Manifest()

    def _write(self, data: bytes) -> None:
        self._gz.write(data)
        self._file_hash.update(data)

    def header(self, source: Source, exported_at: str) -> None:
        self._write(
            orjson.dumps(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "source": {"dialect": source.dialect, "schema_version": source.schema_version},
                    "exported_at": exported_at,
                }
            )
            + b"\n"
        )

    def begin_table(self, name: str, columns: tuple[str, ...]) -> None:
        self._table, self._table_hash, self._rows = name, hashlib.sha256(), 0
        self._write(orjson.dumps({"table": name, "columns": list(columns)}) + b"\n")

    def rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows (sequences of JSON-able values, datetimes included) to the open table."""
        if not rows:
            return
        data = b"\n".join(orjson.dumps(row) for row in rows) + b"\n"
        self._table_hash.update(data)
        self._write(data)
        self._rows += len(rows)

    def end_table(self) -> None:
        assert self._table is not None
        summary = {"rows": self._rows, "sha256": self._table_hash.hexdigest()}
        self.manifest.tables[self._table] = summary
        self._write(orjson.dumps({"end": self._table, **summary}) + b"\n")
        self._table = None

    def finish(self) -> None:
        trailer = {
            "manifest": {"format_version": FORMAT_VERSION, "tables": self.manifest.tables},
            "sha256": self._file_hash.hexdigest(),
        }
        self._gz.write(orjson.dumps(trailer) + b"\n")
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.link(self._partial, self.path)  # fails rather than replace a file made meanwhile
        os.unlink(self._partial)

    def abort(self) -> None:
        """Drop the partial file (after a failure)."""
        try:
            self._gz.close()
            self._raw.close()
        finally:
            self._partial.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class TableStart:
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rows:
    rows: list[list[Any]]


@dataclass(frozen=True, slots=True)
class TableEnd:
    name: str
    rows: int


Item = TableStart | Rows | TableEnd


class ExportReader:
    """Reads an export in one pass: `header` at once, then `items()` (rows decoded only when
    `decode`), checking every count and checksum; any fault raises `ExportFileError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._gz = gzip.GzipFile(filename=str(path), mode="rb")
        self._file_hash = hashlib.sha256()
        try:
            first = self._gz.readline()
        except (OSError, EOFError, zlib.error) as exc:
            self._gz.close()
            raise UnsupportedFile(f"{path} is not an export of banking-es ({exc})") from None
        self.header = _header(path, first)
        self._file_hash.update(first)

    def close(self) -> None:
        self._gz.close()

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _lines(self) -> Iterator[list[bytes]]:
        """The lines after the header, a megabyte at a time, each with its newline (a last
        line without one is a cut line)."""
        rest = b""
        try:
            while chunk := self._gz.read(1 << 20):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield [line + b"\n" for line in lines]
        except (OSError, EOFError, zlib.error) as exc:
            raise DamagedFile(f"{self.path} is damaged or truncated ({exc})") from None
        if rest:
            yield [rest]

    def items(self, *, decode: bool = True) -> Iterator[Item]:
        table: TableStart | None = None
        table_hash, count = hashlib.sha256(), 0
        seen: dict[str, dict[str, Any]] = {}
        batch: list[list[Any]] = []
        finished = False
        for lines in self._lines():
            for line in lines:
                if finished:
                    raise DamagedFile(f"{self.path} has data after its manifest")
                if not line.endswith(b"\n"):
                    raise DamagedFile(f"{self.path} is truncated (its last line is cut)")
                if line.startswith(b"[") and table is not None:
                    table_hash.update(line)
                    self._file_hash.update(line)
                    count += 1
                    if decode:
                        batch.append(_json(self.path, line))
                        if len(batch) >= READ_BATCH:
                            yield Rows(batch)
                            batch = []
                    continue
                entry = _json(self.path, line)
                if not isinstance(entry, dict):
                    raise DamagedFile(f"{self.path} has a row outside any table")
                if "manifest" in entry:
                    self._check_manifest(entry, seen, table)
                    finished = True  # read on to the end: gzip checks its CRC there
                    continue
                self._file_hash.update(line)
                if "table" in entry and table is None:
                    table = TableStart(str(entry["table"]), tuple(entry["columns"]))
                    if table.name in seen:
                        raise DamagedFile(f"{self.path} holds table {table.name} twice")
                    table_hash, count = hashlib.sha256(), 0
                    yield table
                elif "end" in entry and table is not None and entry["end"] == table.name:
                    if batch:
                        yield Rows(batch)
                        batch = []
                    summary = {"rows": count, "sha256": table_hash.hexdigest()}
                    if {"rows": entry.get("rows"), "sha256": entry.get("sha256")} != summary:
                        raise DamagedFile(f"{self.path}: table {table.name} fails its checksum")
                    seen[table.name] = summary
                    yield TableEnd(table.name, count)
                    table = None
                else:
                    raise DamagedFile(f"{self.path} has an unexpected line: {line[:60]!r}")
        if not finished:
            raise DamagedFile(f"{self.path} is truncated (no manifest at its end)")

    def _check_manifest(
        self, entry: dict[str, Any], seen: dict[str, dict[str, Any]], table: TableStart | None
    ) -> None:
        manifest = entry["manifest"]
        if table is not None or not isinstance(manifest, dict):
            raise DamagedFile(f"{self.path}: the manifest comes before a table's end")
        if entry.get("sha256") != self._file_hash.hexdigest():
            raise DamagedFile(f"{self.path} fails its checksum")
        if manifest.get("tables") != seen:
            raise DamagedFile(f"{self.path}: the manifest does not match the tables")


def _json(path: Path, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise DamagedFile(f"{path} is damaged (a line is not JSON: {line[:60]!r})") from None


def _header(path: Path, first: bytes) -> Header:
    try:
        entry = orjson.loads(first)
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            raise ValueError
        version = entry["format_version"]
        source = Source(str(entry["source"]["dialect"]), int(entry["source"]["schema_version"]))
        exported_at = str(entry["exported_at"])
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
        raise UnsupportedFile(f"{path} is not an export of banking-es") from None
    if version != FORMAT_VERSION:
        raise UnsupportedFile(
            f"{path} has format version {version!r}; this banking-es reads version"
            f" {FORMAT_VERSION} only"
        )
    return Header(version, source, exported_at)
