"""The bytes of a dataset file, before any parsing: its type from the name, what its first
bytes say it really is, decompression within limits, and lines of bounded length.

    fmt, comp = split_suffix("train.jsonl.gz")     # (".jsonl", ".gz")
    chunks = open_chunks(path, comp, label)        # decompressed, about 1 MiB at a time
    for line in lines(chunks): ...                 # None in place of a line over the limit

Limits, so a hostile file stops with one DataError instead of filling memory or hanging:
a row (JSON line, CSV field) holds at most MAX_ROW_BYTES (16 MiB); a compressed file yields
at most MAX_DECOMPRESSED (4 GiB), and past RATIO_AFTER (4 MiB) at most MAX_RATIO (100) bytes
per compressed byte. Text compresses 3-10:1; a zip bomb reaches 1000:1 (gzip) or far more.
"""

import bz2
import gzip
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

from finetune.data.errors import DataError, where

FORMATS = {".jsonl": "JSON Lines", ".json": "JSON", ".csv": "CSV", ".tsv": "TSV", ".parquet": "Parquet"}
COMPRESSIONS = {".gz": (lambda f: gzip.GzipFile(fileobj=f), b"\x1f\x8b", "gzip"), ".bz2": (bz2.BZ2File, b"BZh", "bzip2"),
                ".xz": (lzma.LZMAFile, b"\xfd7zXZ\x00", "xz")}
BOM = b"\xef\xbb\xbf"
MiB = 1 << 20
MAX_ROW_BYTES = 16 * MiB
MAX_DECOMPRESSED = 4096 * MiB
MAX_RATIO, RATIO_AFTER = 100, 4 * MiB
CHUNK = MiB
SNIFF = 8192  # bytes looked at to tell text from binary

_MAGIC = (  # first bytes -> what the file really is, what to do about it
    (b"PK\x03\x04", "a ZIP archive (.zip, or an .xlsx/.docx/.ods document)",
     "unzip it, or export the sheet as CSV (UTF-8)"),
    (b"\x1f\x8b", "gzip-compressed data", "name it {name}.gz, or decompress it"),
    (b"PAR1", "a Parquet file", "give it the suffix .parquet"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "name it {name}.xz, or decompress it"),
    (b"\x28\xb5\x2f\xfd", "zstandard-compressed data", "decompress it (zstd -d)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document (.xls/.doc)", "export the sheet as CSV (UTF-8)"),
    (b"%PDF-", "a PDF document", "extract the examples into a .jsonl or .csv file"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV or JSON Lines"),
    (b"ARROW1", "an Arrow IPC file", "write it as Parquet instead"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
)


def mib(n: int) -> str:
    return f"{n / MiB:g} MiB"


def split_suffix(name: str) -> tuple[str, str]:
    """(format suffix, compression suffix or ''): 'a.jsonl.gz' -> ('.jsonl', '.gz'), 'a.csv' -> ('.csv', '')."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    comp = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else ""
    rest = suffixes[:-1] if comp else suffixes
    return (rest[-1] if rest else ""), comp


def identify(head: bytes, path: Path | None = None) -> tuple[str, str] | None:
    """(what the file is, what to do) when its first bytes are a known binary format, else None."""
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bzip2-compressed data", "name it {name}.bz2, or decompress it"
    for magic, what, hint in _MAGIC:
        if head.startswith(magic):
            if magic == b"PK\x03\x04" and path is not None and _is_workbook(path):
                return "an Excel workbook (.xlsx)", "export the sheet as CSV (UTF-8)"
            return what, hint
    return None


def _is_workbook(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.startswith("xl/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_text(head: bytes, fmt: str, label: str, path: Path | None = None) -> None:
    """Raise when the start of a text-format file is a known binary format or holds NUL bytes."""
    found = identify(head, path)
    name = Path(label).name
    if found:
        what, hint = found
        raise DataError(f"{label}: this file is {what}, not {FORMATS[fmt]} text; {hint.format(name=name)}")
    nul = head.find(b"\x00", 0, SNIFF)
    if nul >= 0:
        raise DataError(f"{label}: binary data, not {FORMATS[fmt]} text (a NUL byte at offset {nul}); a text "
                        "file saved as UTF-16 looks like this too: save it as UTF-8")


def check_parquet(path: Path, label: str) -> None:
    """Raise, saying what the file is, when a .parquet file does not start with the Parquet magic."""
    with open(path, "rb") as f:
        head = f.read(SNIFF)
    if head.startswith(b"PAR1"):
        return
    if not head:
        raise DataError(f"{label}: file is empty; expected a Parquet file")
    found = identify(head, path)
    what = found[0] if found else ("binary data" if b"\x00" in head else f"text starting {head[:40]!r}")
    raise DataError(f"{label}: not a Parquet file (no PAR1 magic at its start); it is {what}")


def open_chunks(path: Path, comp: str, label: str) -> Iterator[bytes]:
    """The file's bytes, decompressed for .gz/.bz2/.xz, in chunks of at most CHUNK bytes."""
    with open(path, "rb") as raw:
        if comp:
            opener, magic, kind = COMPRESSIONS[comp]
            head = raw.read(len(magic))
            if head and not head.startswith(magic):
                raise DataError(f"{label}: named {comp} but not {kind}-compressed (it starts with {head!r}); "
                                f"remove {comp} from its name if it is plain text")
            raw.seek(0)
            stream = opener(raw)
        yield from _bounded(stream if comp else raw, raw, comp, label)


def _bounded(stream, raw, comp: str, label: str) -> Iterator[bytes]:
    total = 0
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # corrupt or truncated archive
            raise DataError(f"{label}: not a valid {COMPRESSIONS[comp][2]} file ({e})") from None
        if not chunk:
            return
        total += len(chunk)
        if comp:
            _check_bomb(total, raw.tell(), label)
        yield chunk


def _check_bomb(out: int, read: int, label: str) -> None:
    if out > MAX_DECOMPRESSED:
        raise DataError(f"{label}: decompresses to more than {mib(MAX_DECOMPRESSED)} (the limit for a "
                        "compressed file); decompress it yourself if it is that large")
    if out > RATIO_AFTER and out > MAX_RATIO * max(read, 1):
        raise DataError(f"{label}: decompresses to over {MAX_RATIO} bytes per compressed byte ({mib(out)} from "
                        f"{read} bytes); text compresses about 3-10:1, so this looks like a zip bomb (decompress it yourself "
                        "if it is genuine)")


def lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its ending) for each non-empty line; the line is None when longer
    than MAX_ROW_BYTES, and its rest is read and dropped, so memory stays bounded whatever the file.
    Endings are \n, \r\n or \r; empty lines are counted, not yielded (a file of newlines is quick)."""
    buf, skipping, n = b"", False, 0
    for chunk in chunks:
        if skipping:  # inside an over-long line, already reported: drop up to its end
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            chunk, skipping, n = chunk[cut + 1:], False, n + 1
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            n += 1
            if not line:
                continue
            if len(line) > MAX_ROW_BYTES:
                yield n, None
            elif b"\r" in line:  # CRLF, or lines ended by a lone CR
                parts = line.splitlines()
                yield from ((n + k, part) for k, part in enumerate(parts) if part)
                n += max(len(parts) - 1, 0)
            else:
                yield n, line
        if len(buf) > MAX_ROW_BYTES:
            yield n + 1, None
            buf, skipping = b"", True
    yield from ((n + 1 + k, part) for k, part in enumerate(buf.splitlines()) if part)


def text_of(data: bytes, label: str) -> str:
    """The whole file as text (a UTF-8 BOM dropped); DataError at the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{where(label, line=line)}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); "
                        "save the file as UTF-8") from None
