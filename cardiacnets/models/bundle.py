"""Bundles of trained models: versioned, hash-verified folders that can be committed (the reference models).

A bundle is a folder of components, each a saved-model folder (``save_pretrained``
of this package's models, or a diffusers pipeline folder with its subfolders),
plus ``bundle.json`` (format version, name, the package version that built it and
the versions that may load it, metadata, components, and the SHA-256 and size of
every file) and ``SHA256SUMS`` (every file, ``bundle.json`` included, in the
format of ``sha256sum -c``). Weights are safetensors only; pickle-based weight
files are refused. `export_bundle` stores floating-point tensors in float16 by
default (half the size in git), recording in each file's safetensors metadata
which tensors it converted; `load_bundle` verifies the bundle, then materialises
a float32 copy in a per-user cache (written atomically, reused while intact) and
never writes into the bundle itself. `seal_bundle` recomputes the hashes after
files such as a model card are added; `verify_bundle` only checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cardiacnets.errors import ConfigError, InputError

BUNDLE_FORMAT = 1
INFO_NAME = "bundle.json"
SUMS_NAME = "SHA256SUMS"
#: Written last into a materialised copy: the bundle's digest and the copy's file hashes.
CACHE_MARKER = ".cardiacnets-bundle-cache.json"
#: Safetensors metadata key: JSON ``{tensor name: original dtype}`` of the tensors stored as float16.
HALF_KEY = "cardiacnets.bundle.float16_from"
#: Weight files that unpickle (and may run code) when loaded: never part of a bundle.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})
REQUIRED_FIELDS = ("bundle_format", "name", "package_version", "requires", "components", "files")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RESERVED = {INFO_NAME, SUMS_NAME, CACHE_MARKER}


@dataclass
class Bundle:
    """A verified bundle and its materialised float32 copy.

    Attributes:
        path: the bundle folder (never written to).
        info: the contents of its ``bundle.json``.
        root: the materialised float32 copy (in the cache) that models are loaded from.
        folders: component key → its folder in `root`.
        digest: SHA-256 (hex) of ``bundle.json``'s bytes, which name every file's hash.
    """

    path: Path
    info: dict
    root: Path
    folders: dict[str, Path] = field(default_factory=dict)
    digest: str = ""


#: The reference bundle committed with the package (`cardiacnets/reference_models/`), which `make demo`
#: evaluates and the CMR realism benchmark encodes frames with.
COMMITTED_BUNDLE_NAME = "cardiacnets-reference-0.1.8"


def committed_bundle() -> Path:
    """The folder of the committed reference bundle (`COMMITTED_BUNDLE_NAME`)."""
    return Path(__file__).resolve().parents[1] / "reference_models" / COMMITTED_BUNDLE_NAME


# --- export and sealing -----------------------------------------------------------------------------------------
def default_requires(version: str) -> str:
    """The PEP 440 specifier of the package versions that may load a bundle built by `version`: same major.minor."""
    from packaging.version import InvalidVersion, Version

    try:
        major, minor = (Version(version).release + (0,))[:2]
    except InvalidVersion:
        raise ConfigError(f"cardiacnets.__version__ {version!r} is not a PEP 440 version") from None
    return f">={major}.{minor},<{major}.{minor + 1}"


def export_bundle(sources: dict[str, str | os.PathLike], out: str | os.PathLike, *, name: str,
                  metadata: dict | None = None, half: bool = True, requires: str | None = None) -> Path:
    """Copy saved-model folders into a new bundle, in float16 when `half`, and seal it.

    Args:
        sources: component key (a plain folder name such as ``align``) → saved-model folder; everything in the
            folder (files and subfolders) is copied to ``OUT/<key>/``.
        out: the bundle folder; must not exist or be empty. Written atomically (nothing is left on failure).
        name: the bundle's name (letters, digits, ``.``, ``_``, ``-``).
        metadata: recorded as given (seed, command, commit, figures...); must be JSON-serialisable.
        half: store float32/bfloat16 tensors as float16 (restored to float32 by `load_bundle`); refused for a
            tensor with finite values beyond float16's range.
        requires: PEP 440 specifier of the package versions that may load it (default: this major.minor).

    Returns:
        The bundle folder.

    Raises:
        InputError: a missing source, a pickle-based weight file, a tensor float16 cannot hold, `out` not empty.
        ConfigError: a bad name, component key, `requires` or metadata.
    """
    import cardiacnets

    out = Path(out)
    _check_name(name, "bundle name")
    requires = requires or default_requires(cardiacnets.__version__)
    _check_specifier(requires)
    try:
        json.dumps(metadata or {}, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bundle metadata is not JSON-serialisable ({err})") from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty folder; a bundle is written into a new or empty folder")
    files = _source_files(sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staging.chmod(0o755)
        for key, items in files.items():
            for rel, source in items:
                target = staging / key / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if half and source.suffix == ".safetensors":
                    _write_half(source, target)
                else:
                    shutil.copyfile(source, target)
        info = {"bundle_format": BUNDLE_FORMAT, "name": name, "package_version": cardiacnets.__version__,
                "requires": requires, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "half": bool(half), "metadata": metadata or {}, "components": {key: key for key in files},
                "files": {}}
        _write_info(staging, info)
        seal_bundle(staging)
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def seal_bundle(path: str | os.PathLike) -> str:
    """(Re)compute ``files`` in ``bundle.json`` and write ``SHA256SUMS``: call after adding files (a model card).

    Args:
        path: the bundle folder (written by `export_bundle`).

    Returns:
        The bundle's digest: SHA-256 (hex) of the new ``bundle.json``.

    Raises:
        InputError: no valid ``bundle.json``, a symbolic link, or a pickle-based weight file in the bundle.
    """
    root = Path(path)
    info, _ = _read_info(root, require_files=False)
    entries = {}
    for rel in _bundle_files(root):
        if Path(rel).suffix in PICKLE_SUFFIXES:
            raise InputError(root / rel, "is a pickle-based weight file; a bundle holds safetensors only")
        entries[rel] = _file_entry(root / rel)
    info["files"] = entries
    raw = _write_info(root, info)
    (root / SUMS_NAME).write_text(_sums_text(entries, raw), encoding="utf-8")
    return hashlib.sha256(raw).hexdigest()


def _source_files(sources: dict) -> dict[str, list[tuple[str, Path]]]:
    """Component key → [(path relative to the component, source file)], every check done before anything is written."""
    if not sources:
        raise ConfigError("a bundle needs at least one component")
    files = {}
    for key, folder in sources.items():
        _check_name(key, "component key")
        if key in _RESERVED:
            raise ConfigError(f"component key {key!r} is reserved for the bundle's own files")
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(folder, f"component {key!r}: no such model folder")
        items = []
        for dirpath, _, filenames in os.walk(folder, followlinks=True):
            for filename in filenames:
                source = Path(dirpath) / filename
                if source.suffix in PICKLE_SUFFIXES:
                    raise InputError(source, "is a pickle-based weight file; a bundle holds safetensors only "
                                             "(save with save_pretrained / safe_serialization=True)")
                if not source.is_file():
                    raise InputError(source, "is not a regular file (a broken link?)")
                items.append((source.relative_to(folder).as_posix(), source))
        if not items:
            raise InputError(folder, f"component {key!r}: the folder holds no files")
        files[key] = sorted(items)
    return files


def _write_half(source: Path, target: Path) -> None:
    """Copy a safetensors file with its float32/bfloat16 tensors in float16, recorded under `HALF_KEY`."""
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    tensors, converted = {}, {}
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            for tensor_name in handle.keys():
                tensors[tensor_name] = handle.get_tensor(tensor_name)
    except (OSError, SafetensorError) as err:
        raise InputError(source, f"not a readable safetensors file ({err})") from None
    for tensor_name, tensor in tensors.items():
        if tensor.dtype not in (torch.float32, torch.bfloat16):
            continue
        halved = tensor.to(torch.float16)
        overflow = torch.isfinite(tensor) & ~torch.isfinite(halved)
        if overflow.any():
            largest = tensor[torch.isfinite(tensor)].abs().max().item()
            raise InputError(source, f"tensor {tensor_name!r} has values up to {largest:.6g}, beyond float16's "
                                     "range (65504); export this bundle with half=False")
        tensors[tensor_name] = halved
        converted[tensor_name] = str(tensor.dtype).removeprefix("torch.")
    if not converted:
        shutil.copyfile(source, target)
        return
    previous = json.loads(metadata.get(HALF_KEY, "{}"))
    metadata[HALF_KEY] = json.dumps({**previous, **converted}, sort_keys=True)
    save_file(tensors, str(target), metadata=metadata)


def _write_info(root: Path, info: dict) -> bytes:
    raw = (json.dumps(info, indent=2) + "\n").encode("utf-8")
    (root / INFO_NAME).write_bytes(raw)
    return raw


# --- verification -----------------------------------------------------------------------------------------------
def verify_bundle(path: str | os.PathLike) -> dict:
    """Check a bundle without loading it: ``bundle.json``, the package version, every file's SHA-256, no extra file.

    Args:
        path: the bundle folder.

    Returns:
        A summary: ``name``, ``package_version``, ``requires``, ``files`` (count) and ``bytes`` (total), both with
        ``bundle.json`` and ``SHA256SUMS``, and ``sha256`` (the bundle's digest: SHA-256 of ``bundle.json``).

    Raises:
        InputError: naming the file and the problem (see `load_bundle`).
    """
    root = Path(path)
    info, raw = _verify(root)
    return {"name": info["name"], "package_version": info["package_version"], "requires": info["requires"],
            "files": len(info["files"]) + 2, "bytes": sum(e["bytes"] for e in info["files"].values())
            + len(raw) + (root / SUMS_NAME).stat().st_size, "sha256": hashlib.sha256(raw).hexdigest()}


def _verify(root: Path) -> tuple[dict, bytes]:
    """Every check of `verify_bundle`, cheapest first; returns ``bundle.json`` parsed and its bytes."""
    info, raw = _read_info(root, require_files=True)
    _check_version(info, root / INFO_NAME)
    expected = info["files"]
    present = set(_bundle_files(root))
    for rel in sorted(expected):
        if rel not in present:
            raise InputError(root / rel, "listed in bundle.json but missing from the bundle")
    extra = sorted(present - set(expected))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise InputError(root / extra[0], f"not listed in bundle.json{more}: added after the bundle was sealed "
                                          "(remove it, or seal the bundle again with seal_bundle)")
    for key, rel in info["components"].items():
        if not any(f.startswith(rel + "/") for f in expected):
            raise InputError(root / INFO_NAME, f"component {key!r} names folder {rel!r}, which holds no listed file")
    for rel, entry in sorted(expected.items()):
        if Path(rel).suffix in PICKLE_SUFFIXES:
            raise InputError(root / rel, "is a pickle-based weight file; a bundle holds safetensors only")
        if _file_entry(root / rel) != entry:
            raise InputError(root / rel, "SHA-256 differs from bundle.json: modified since the bundle was sealed")
    sums = root / SUMS_NAME
    if not sums.is_file():
        raise InputError(sums, "missing (every bundle has one); seal the bundle again with seal_bundle")
    if sums.read_text(encoding="utf-8", errors="replace") != _sums_text(expected, raw):
        raise InputError(sums, "does not match bundle.json (one of them was edited after sealing)")
    return info, raw


def _read_info(root: Path, require_files: bool) -> tuple[dict, bytes]:
    """``bundle.json`` parsed, with its fields' types and paths checked; and its bytes."""
    path = root / INFO_NAME
    if not root.is_dir():
        raise InputError(root, "no such bundle folder")
    if not path.is_file():
        raise InputError(root, f"not a cardiacnets bundle (no {INFO_NAME})")
    raw = path.read_bytes()
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"invalid JSON ({err})") from None
    if not isinstance(info, dict):
        raise InputError(path, "invalid bundle description (not a JSON object)")
    missing = [key for key in REQUIRED_FIELDS if key not in info and (require_files or key != "files")]
    if missing:
        raise InputError(path, f"missing field(s) {', '.join(missing)}")
    fmt = info["bundle_format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise InputError(path, f"bundle_format must be an integer, got {fmt!r}")
    if fmt > BUNDLE_FORMAT:
        raise InputError(path, f"bundle format {fmt} is newer than this cardiacnets reads ({BUNDLE_FORMAT}); "
                               "install a newer cardiacnets")
    if fmt != BUNDLE_FORMAT:
        raise InputError(path, f"unsupported bundle format {fmt} (this cardiacnets reads format {BUNDLE_FORMAT})")
    for key in ("name", "package_version", "requires"):
        if not isinstance(info[key], str) or not info[key]:
            raise InputError(path, f"field {key!r} must be a non-empty string")
    components = info["components"]
    if not isinstance(components, dict) or not components or not all(
            isinstance(k, str) and isinstance(v, str) and _safe_relative(v) for k, v in components.items()):
        raise InputError(path, "field 'components' must map component keys to folders inside the bundle")
    files = info.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(rel, str) and _safe_relative(rel) and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
            and isinstance(entry.get("bytes"), int) for rel, entry in files.items()):
        raise InputError(path, "field 'files' must map relative paths inside the bundle to {sha256, bytes}")
    return info, raw


def _check_version(info: dict, path: Path) -> None:
    """Refuse a bundle whose ``requires`` excludes the installed package version."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    import cardiacnets

    installed = cardiacnets.__version__
    try:
        compatible = SpecifierSet(info["requires"]).contains(Version(installed), prereleases=True)
    except InvalidSpecifier:
        raise InputError(path, f"'requires' {info['requires']!r} is not a PEP 440 version specifier") from None
    except InvalidVersion:
        raise InputError(path, f"the installed cardiacnets version {installed!r} is not a PEP 440 version") from None
    if not compatible:
        raise InputError(path, f"bundle {info['name']!r} was built for cardiacnets {info['package_version']} "
                               f"(loads with cardiacnets{info['requires']}), but cardiacnets {installed} is "
                               "installed: rebuild it with `cardiacnets reference build`, or install a matching "
                               "cardiacnets version")


# --- loading ----------------------------------------------------------------------------------------------------
def load_bundle(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Bundle:
    """Verify a bundle and return its components as folders of a float32 copy, ready for ``from_pretrained``.

    The copy is materialised once per bundle digest in ``CACHE/bundles/<name>-<digest[:16]>`` (written into a
    temporary folder and renamed into place, so concurrent loaders never see a partial copy), and reused while
    its files still have the hashes recorded in its marker; a damaged copy is rebuilt.

    Args:
        path: the bundle folder (may be read-only; never written).
        cache_dir: the cache root (default ``$CARDIACNETS_CACHE``, else ``$XDG_CACHE_HOME/cardiacnets``, else
            ``~/.cache/cardiacnets``).

    Returns:
        The `Bundle`.

    Raises:
        InputError: no or invalid ``bundle.json``, an unsupported format, a package version outside
            ``requires``, a listed file missing or modified, a file not listed, an unwritable cache.
    """
    root = Path(path).resolve()
    info, raw = _verify(root)
    digest = hashlib.sha256(raw).hexdigest()
    copy = _materialise(root, info, digest, default_cache_dir() if cache_dir is None else Path(cache_dir))
    folders = {key: copy / rel for key, rel in info["components"].items()}
    return Bundle(path=root, info=info, root=copy, folders=folders, digest=digest)


def default_cache_dir() -> Path:
    """``$CARDIACNETS_CACHE``, else ``$XDG_CACHE_HOME/cardiacnets``, else ``~/.cache/cardiacnets``."""
    if os.environ.get("CARDIACNETS_CACHE"):
        return Path(os.environ["CARDIACNETS_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "cardiacnets"
    return Path.home() / ".cache" / "cardiacnets"


def _materialise(root: Path, info: dict, digest: str, cache_dir: Path) -> Path:
    """The float32 copy of the bundle in the cache: reused when intact, else written and renamed into place."""
    bundles = cache_dir / "bundles"
    target = bundles / f"{info['name'] if _NAME.fullmatch(info['name']) else 'bundle'}-{digest[:16]}"
    if _cache_intact(target, digest):
        return target
    try:
        bundles.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=bundles))
    except OSError as err:
        raise InputError(bundles, f"cannot write the bundle cache ({err.strerror}); set CARDIACNETS_CACHE to a "
                                  "writable folder") from None
    try:
        staging.chmod(0o755)
        written = {}
        for rel in [INFO_NAME, *info["files"]]:
            target_file = staging / rel
            target_file.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".safetensors"):
                _restore_float32(root / rel, target_file)
            else:
                shutil.copyfile(root / rel, target_file)
            written[rel] = _file_entry(target_file)
        marker = {"digest": digest, "bundle": str(root), "files": written}
        (staging / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _install(staging, target, digest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _install(staging: Path, target: Path, digest: str) -> None:
    """Rename `staging` to `target`; when another loader got there first, keep its copy if intact."""
    try:
        os.rename(staging, target)  # atomic; fails when target is a non-empty folder
        return
    except OSError:
        if _cache_intact(target, digest):
            return
    stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, stale)
    except FileNotFoundError:
        pass
    try:
        os.rename(staging, target)
    except OSError as err:
        if not _cache_intact(target, digest):
            raise InputError(target, f"cannot install the materialised bundle ({err.strerror})") from None
    if stale.is_dir():
        shutil.rmtree(stale, ignore_errors=True)
    elif stale.exists():
        stale.unlink()


def _cache_intact(target: Path, digest: str) -> bool:
    """Whether `target` is a complete copy of the bundle with this digest: marker, file set and hashes."""
    try:
        marker = json.loads((target / CACHE_MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        if marker["digest"] != digest or set(_bundle_files(target, skip=(CACHE_MARKER,))) != set(files):
            return False
        return all(_file_entry(target / rel) == entry for rel, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError, InputError):
        return False


def _restore_float32(source: Path, target: Path) -> None:
    """Copy a bundle's safetensors file with the tensors recorded under `HALF_KEY` back in float32."""
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()} if HALF_KEY in metadata else {}
    except SafetensorError as err:
        raise InputError(source, f"not a readable safetensors file ({err})") from None
    if HALF_KEY not in metadata:
        shutil.copyfile(source, target)
        return
    try:
        converted = json.loads(metadata.pop(HALF_KEY))
        unknown = [tensor_name for tensor_name in converted if tensor_name not in tensors]
    except (ValueError, TypeError):
        raise InputError(source, f"malformed {HALF_KEY!r} metadata") from None
    if unknown:
        raise InputError(source, f"{HALF_KEY!r} metadata names tensors the file lacks: {unknown[:3]}")
    for tensor_name in converted:
        tensors[tensor_name] = tensors[tensor_name].to(torch.float32)
    save_file(tensors, str(target), metadata=metadata or None)


# --- files and hashes -------------------------------------------------------------------------------------------
def _bundle_files(root: Path, skip: tuple[str, ...] = (INFO_NAME, SUMS_NAME)) -> list[str]:
    """Relative POSIX paths of every file under `root` except the top-level `skip`; links and odd names refused."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            item = Path(dirpath) / entry
            if item.is_symlink():
                raise InputError(item, "is a symbolic link; a bundle holds plain files only")
            if any(c in entry for c in "\\\n\r"):
                raise InputError(item, "has a backslash or line break in its name")
        for filename in filenames:
            rel = (Path(dirpath) / filename).relative_to(root).as_posix()
            if rel not in skip:
                files.append(rel)
    return sorted(files)


def _file_entry(path: Path) -> dict:
    """``{"sha256": hex, "bytes": size}`` of a file, read in 1 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _sums_text(files: dict, info_raw: bytes) -> str:
    """``SHA256SUMS`` in ``sha256sum`` text format: every listed file and ``bundle.json``, sorted by path."""
    hashes = {rel: entry["sha256"] for rel, entry in files.items()}
    hashes[INFO_NAME] = hashlib.sha256(info_raw).hexdigest()
    return "".join(f"{hashes[rel]}  {rel}\n" for rel in sorted(hashes))


def _safe_relative(rel: str) -> bool:
    """Whether `rel` is a relative POSIX path that stays inside the bundle (no ``..``, no absolute path)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and "\\" not in rel


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{what} {value!r} must be 1-100 letters, digits, '.', '_' or '-' (not starting with "
                          "'.', '_' or '-')")


def _check_specifier(requires: str) -> None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(requires)
    except InvalidSpecifier:
        raise ConfigError(f"bundle requires {requires!r} is not a PEP 440 version specifier") from None
