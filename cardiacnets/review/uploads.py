"""Uploaded ECG files: checked, stored under generated names, parsed by the package's readers.

Two kinds are accepted: a UK Biobank / GE CardioSoft XML file, or a WFDB record
(header plus signal file) packed in a ``.zip``. Each upload gets a random id and
its own folder ``APP_DIR/uploads/<id>/``; the client's file name is kept only
as display text. A zip's members are checked before anything is extracted:
regular files only, no absolute paths or ``..``, only ``.hea``/``.dat``/``.mat``,
exactly one header, bounded count and uncompressed size (zip bombs); each is
written under its bare base name, so nothing can land outside the folder. The
header is then checked by the WFDB reader's rules (plain signal file names,
plausible values) and every signal file it names must be a member of the same
zip, before the record is read. XML
with a document type declaration is refused (UK Biobank files have none, and
entity expansion is a classic attack). An encrypted member, or one stored with
a compression method the zip module cannot read, is refused with a one-line
message. Files are only ever parsed by `cardiacnets.io.ecg.read_ecg` (never
unpickled), and `read_upload` runs it in a separate worker process (started
from a clean fork server or spawned, never forked from the web server's
threads) whose address space is capped (``RLIMIT_AS``, default
`PARSE_MEMORY_BYTES`) and which is stopped after `PARSE_TIMEOUT_S`: a
decompression bomb inside a MATLAB ``.mat`` file or an XML that takes forever
fails that worker with a clear error, not the server.
"""

from __future__ import annotations

import lzma
import multiprocessing
import re
import secrets
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cardiacnets.errors import InputError

UPLOAD_KINDS = {".xml": "UK Biobank ECG XML", ".zip": "WFDB record in a .zip (.hea with .dat or .mat)"}
WFDB_MEMBER_SUFFIXES = (".hea", ".dat", ".mat")
MAX_ZIP_MEMBERS = 16
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
PARSE_MEMORY_BYTES = 2 << 30  # address space of the parsing worker (2 GiB)
PARSE_TIMEOUT_S = 30.0
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0
# What zipfile and the decompressors raise on a member they cannot read.
_ZIP_READ_ERRORS = (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError,
                    OSError)
_UPLOAD_ID = re.compile(r"^[0-9a-f]{24}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class StoredUpload:
    """An accepted upload.

    Attributes:
        upload_id: random hex id (the folder name and the URL key).
        folder: ``APP_DIR/uploads/<upload_id>``.
        ecg_path: the file to read (the XML, or the WFDB header).
        original_name: the client's file name (display only).
        kind: ``xml`` or ``wfdb_zip``.
    """

    upload_id: str
    folder: Path
    ecg_path: Path
    original_name: str
    kind: str


def is_upload_id(text: str) -> bool:
    """Whether `text` has the form of an upload id (24 lowercase hex digits)."""
    return bool(_UPLOAD_ID.match(text))


def display_name(name: str | None) -> str:
    """The client's file name cut to its last path part and 120 printable characters."""
    name = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:120]
    return name or "upload"


def store_upload(uploads_dir: Path, original_name: str | None, data: bytes, max_bytes: int) -> StoredUpload:
    """Check an uploaded file and store it under a generated name.

    Args:
        uploads_dir: ``APP_DIR/uploads``.
        original_name: the client's file name (its extension picks the kind).
        data: the file's bytes.
        max_bytes: size limit.

    Returns:
        The stored upload (not yet parsed: see `read_upload`).

    Raises:
        InputError: naming the client's file and the problem (size, type, zip content).
    """
    shown = display_name(original_name)
    suffix = Path(shown).suffix.lower()
    if len(data) > max_bytes:
        raise InputError(shown, f"file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")
    if not data:
        raise InputError(shown, "file is empty")
    if suffix not in UPLOAD_KINDS:
        raise InputError(shown, "unsupported file type; upload " + " or ".join(UPLOAD_KINDS.values()))
    upload_id = secrets.token_hex(12)
    folder = uploads_dir / upload_id
    folder.mkdir(parents=True, exist_ok=False)
    try:
        if suffix == ".xml":
            head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
            if not head.startswith(b"<"):
                raise InputError(shown, "not an XML file")
            if b"<!DOCTYPE" in data[:65536].upper() or b"<!ENTITY" in data[:65536].upper():
                raise InputError(shown, "XML with a document type declaration is not accepted")
            ecg_path = folder / "ecg.xml"
            ecg_path.write_bytes(data)
            return StoredUpload(upload_id, folder, ecg_path, shown, "xml")
        ecg_path = _extract_wfdb_zip(shown, data, folder)
        return StoredUpload(upload_id, folder, ecg_path, shown, "wfdb_zip")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _extract_wfdb_zip(shown: str, data: bytes, folder: Path) -> Path:
    import io

    if not data.startswith(b"PK\x03\x04"):
        raise InputError(shown, "not a zip file")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise InputError(shown, f"not a readable zip file ({err})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise InputError(shown, "zip holds no files")
        if len(members) > MAX_ZIP_MEMBERS:
            raise InputError(shown, f"zip holds {len(members)} files; a WFDB record needs at most {MAX_ZIP_MEMBERS}")
        total = 0
        names: dict[str, zipfile.ZipInfo] = {}
        for member in members:
            name = member.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise InputError(shown, f"zip member {name!r} has an unsafe path")
            file_type = stat.S_IFMT(member.external_attr >> 16)  # 0 when the zip tool stored no Unix mode
            if file_type and file_type != stat.S_IFREG:
                raise InputError(shown, f"zip member {name!r} is not a regular file")
            base = parts[-1]
            if parts[0] == "__MACOSX" or base.startswith("._"):
                continue  # macOS resource forks, added by Finder's "Compress"
            if not _SAFE_NAME.match(base) or Path(base).suffix.lower() not in WFDB_MEMBER_SUFFIXES:
                raise InputError(shown, f"zip member {name!r}: only WFDB files "
                                        f"({', '.join(WFDB_MEMBER_SUFFIXES)}) with plain names are accepted")
            if base in names:
                raise InputError(shown, f"zip holds two files named {base!r}")
            if member.flag_bits & _ZIP_ENCRYPTED:
                raise InputError(shown, f"zip member {name!r} is encrypted; upload a zip without a password")
            if member.compress_type not in _ZIP_METHODS:
                raise InputError(shown, f"zip member {name!r} uses compression method {member.compress_type}, which "
                                        "cannot be read; use deflate or no compression")
            total += member.file_size
            if total > MAX_UNCOMPRESSED_BYTES:
                raise InputError(shown, f"zip expands to more than {MAX_UNCOMPRESSED_BYTES // 2**20} MB")
            names[base] = member
        headers = [n for n in names if n.lower().endswith(".hea")]
        if len(headers) != 1:
            raise InputError(shown, f"zip must hold exactly one WFDB header (.hea), found {len(headers)}")
        for base, member in names.items():
            written = 0
            try:
                source = archive.open(member)
            except _ZIP_READ_ERRORS as err:
                raise _unreadable_member(shown, base, err) from None
            with source, open(folder / base, "wb") as target:
                while True:
                    try:
                        chunk = source.read(1 << 20)
                    except _ZIP_READ_ERRORS as err:
                        raise _unreadable_member(shown, base, err) from None
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > member.file_size or written > MAX_UNCOMPRESSED_BYTES:
                        raise InputError(shown, f"zip member {base!r} is larger than its header says")
                    target.write(chunk)
    _check_header_files_in_zip(shown, folder / headers[0], set(names))
    return folder / headers[0]


def _unreadable_member(shown: str, base: str, err: BaseException) -> InputError:
    """A one-line error for a zip member that cannot be decompressed (encrypted, unknown method, damaged)."""
    reason = " ".join(str(err).split())[:200] or type(err).__name__
    return InputError(shown, f"zip member {base!r} cannot be read: {reason}")


def _check_header_files_in_zip(shown: str, header_path: Path, members: set[str]) -> None:
    """The header passes the WFDB reader's checks and names only files packed beside it."""
    from cardiacnets.io.wfdb_io import record_file_names

    try:
        needed = record_file_names(header_path)
    except InputError as err:
        raise InputError(shown, f"{header_path.name}: {err.problem}") from None
    absent = [name for name in needed if name not in members]
    if absent:
        listed = ", ".join(repr(name[:80]) for name in absent)
        raise InputError(
            shown, f"WFDB header {header_path.name} names {listed}, which the zip does not hold; "
                   "pack the header with its signal files"
        )


def read_upload(upload: StoredUpload, *, memory_bytes: int = PARSE_MEMORY_BYTES,
                timeout_s: float = PARSE_TIMEOUT_S):
    """Parse a stored upload with the package's ECG readers, in a memory- and time-limited worker process.

    Args:
        upload: the stored upload.
        memory_bytes: the worker's address-space limit (``RLIMIT_AS``).
        timeout_s: the worker is stopped after this many seconds.

    Returns:
        The `ECGRecord`.

    Raises:
        InputError: naming the client's file (not the internal path) and the problem,
            including a reader that needs more than `memory_bytes`, takes longer than
            `timeout_s` or stops unexpectedly.
    """
    context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                                          else "spawn")
    if context.get_start_method() == "forkserver":
        # Imported once in the fork server, not again in every worker.
        context.set_forkserver_preload(["cardiacnets.review.uploads", "cardiacnets.io.ecg", "cardiacnets.io.wfdb_io",
                                        "cardiacnets.io.ukb_xml"])
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_parse_in_worker, args=(sender, str(upload.ecg_path), int(memory_bytes),
                                                            float(timeout_s)), daemon=True)
    worker.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise InputError(upload.original_name, f"reading the ECG took longer than {timeout_s:g} s; refused")
        outcome, value = receiver.recv()
    except EOFError:  # the worker ended without answering: killed (memory) or crashed
        worker.join(5.0)
        raise InputError(upload.original_name, f"the ECG reader stopped unexpectedly (exit code {worker.exitcode}); "
                                               "the file may need more memory than allowed") from None
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join(5.0)
        receiver.close()
    if outcome == "ok":
        return value
    if outcome == "memory":
        raise InputError(upload.original_name, f"reading the ECG needs more than {memory_bytes / 2**20:.0f} MB of "
                                               "memory; refused")
    raise InputError(upload.original_name, value)


def _parse_in_worker(sender, ecg_path: str, memory_bytes: int, timeout_s: float) -> None:
    """The worker process: cap memory and CPU time, read the ECG, send ``(outcome, value)`` back."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no rlimits, the server's timeout still applies
        resource = None
    if resource is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes if hard == resource.RLIM_INFINITY
                                                else min(memory_bytes, hard), hard))
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        cpu_s = int(timeout_s) + 5  # a backstop should the server not stop the worker
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s if hard == resource.RLIM_INFINITY else min(cpu_s, hard), hard))
    try:
        from cardiacnets.io.ecg import read_ecg

        try:
            outcome = ("ok", read_ecg(ecg_path))
        except InputError as err:  # a reader's MemoryError may come wrapped in its "cannot read" error
            outcome = ("memory", None) if isinstance(err.__context__, MemoryError) else ("error", err.problem)
        except MemoryError:
            outcome = ("memory", None)
        except Exception as err:  # a reader bug or an unforeseen file: one line, not a traceback or a server path
            reason = " ".join(str(err).replace(str(Path(ecg_path).parent), "<upload>").split())[:200]
            outcome = ("error", f"cannot be read ({type(err).__name__}: {reason})")
        try:
            sender.send(outcome)
        except MemoryError:  # the record itself is too large to send back
            sender.send(("memory", None))
    finally:
        sender.close()
