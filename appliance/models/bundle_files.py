"""A bundle's files, read safely: the manifest's schema, the listed files' hashes and sizes, and tar
archives walked without trusting them.

A tar is never unpacked on trust: its headers are walked and only ``manifest.json`` and
``manifest.sig`` are read (a size cap each); the signature is checked, then the members against the
manifest; only then are the listed files streamed out, each held byte by byte to its declared size
(``file_sizes``) and hash. A hostile tar (sparse member, decompression bomb, unlisted or oversized
member) is refused without holding its content in memory or writing it anywhere.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from appliance.errors import ModelError
from appliance.models.registry import kind_of
from appliance.updates.signing import SIGNATURE_FILE, SignaturePolicy, Signer

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 1 << 20  # manifest.json and manifest.sig each; read before anything else
MAX_MEMBERS = 10_000
TAR_READ_CAP = 2 << 20  # the largest single read tarfile may make (headers; member data comes in chunks)
TAR_OVERHEAD_BYTES = 64 << 20  # tar headers and padding allowed beyond the content limit
COPY_CHUNK = 1 << 20
FILE_SIZES = "file_sizes"  # manifest key: bytes of each listed file (bundles before it have hashes only)
REQUIRED_KEYS = (
    "schema_version",
    "model",
    "input_contract",
    "score",
    "variants",
    "files",
    "reference",
    "threshold",
)


class BundleError(ModelError):
    """A bundle that must not be used; the message says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _CappedStream:
    """A tar's (decompressed) bytes as tarfile reads them, with two limits tarfile does not have: no
    single read above ``read_cap`` (a header claiming a huge extended record is refused before its
    bytes are held) and no position past ``end_cap`` (a decompression bomb stops there)."""

    def __init__(self, raw: BinaryIO, label: str, read_cap: int, end_cap: int) -> None:
        self.raw, self.label, self.read_cap, self.end_cap = raw, label, read_cap, end_cap

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0 or n > self.read_cap:
            raise BundleError(
                f"{self.label}: a tar record of {'unbounded' if n is None or n < 0 else n} bytes "
                f"(more than {self.read_cap // 2**20} MiB at once); not a bundle tar"
            )
        self._check(self.raw.tell() + n)
        return self.raw.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._check(offset)
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def _check(self, position: int) -> None:
        if position > self.end_cap:
            raise BundleError(
                f"{self.label}: more than {self.end_cap // 2**20} MiB of tar data; "
                "a bundle is smaller (an oversized or decompression-bomb tar)"
            )


@dataclass
class _Listing:
    """What a bundle source holds, learnt without reading any model file: regular files (path relative
    to the bundle root -> size), and the manifest and signature bytes (None: absent)."""

    files: dict[str, int]
    manifest: bytes | None
    signature: bytes | None


class _WriteFailed(Exception):
    """Writing the staged copy failed (disk full...): an OSError of ours, not a fault of the bundle."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _read_tar(tar_path: Path, max_bytes: int) -> Iterator[tarfile.TarFile]:
    """A plain, gzip, bzip2 or xz tar (told apart by magic bytes) opened behind a :class:`_CappedStream`;
    any read error, here or in the caller's block, becomes one line of BundleError."""
    label = str(tar_path)
    try:
        with contextlib.ExitStack() as stack:
            raw: BinaryIO = stack.enter_context(tar_path.open("rb"))
            magic = raw.read(6)
            raw.seek(0)
            stream = raw
            if magic.startswith(b"\x1f\x8b"):
                stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            elif magic.startswith(b"BZh"):
                stream = stack.enter_context(bz2.BZ2File(raw))
            elif magic.startswith(b"\xfd7zXZ\x00"):
                stream = stack.enter_context(lzma.LZMAFile(raw))
            capped = _CappedStream(stream, label, TAR_READ_CAP, max_bytes + TAR_OVERHEAD_BYTES)
            try:
                tar = stack.enter_context(tarfile.open(fileobj=capped, mode="r:"))  # type: ignore[call-overload]
            except tarfile.ReadError as exc:
                raise BundleError(
                    f"{label}: not a tar archive ({_one_line(exc)}); a bundle is a .tar, plain or compressed"
                ) from None
            yield tar
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise BundleError(
            f"{label}: not a readable bundle tar ({_one_line(exc)}); the file may be truncated"
        ) from None


def _tar_listing(
    tar: tarfile.TarFile, label: str, max_bytes: int
) -> tuple[_Listing, str, dict[str, tarfile.TarInfo]]:
    """Walk the tar's headers only: refuse unsafe entries at once and read just the manifest and its
    signature (each at most MAX_MANIFEST_BYTES). Returns the listing, the bundle root's prefix inside
    the tar ("" or "top/") and the regular-file members by their path in the tar."""
    members: dict[str, tarfile.TarInfo] = {}
    dirs: set[str] = set()
    small: dict[str, bytes] = {}  # at most 4: [top/]manifest.json and [top/]manifest.sig
    first_top: str | None = None
    total = count = 0
    while (m := tar.next()) is not None:
        count += 1
        if count > MAX_MEMBERS:
            raise BundleError(f"{label}: more than {MAX_MEMBERS} entries in the tar; not a bundle")
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{label}: unsafe path {m.name!r} in the tar (absolute or '..')")
        if not (m.isfile() or m.isdir()):
            raise BundleError(f"{label}: {m.name!r} is a link or device; bundles hold regular files only")
        if m.issparse():
            raise BundleError(f"{label}: {m.name!r} is a sparse file; bundles hold regular files only")
        key = p.as_posix()
        if not p.parts:  # "." itself
            continue
        first_top = first_top or p.parts[0]
        if key in members or (key in dirs and not m.isdir()):
            raise BundleError(f"{label}: {key!r} appears twice in the tar")
        if m.isdir():
            dirs.add(key)
            continue
        members[key] = m
        total += m.size
        if total > max_bytes:
            raise BundleError(f"{label}: more than {max_bytes // 2**20} MiB of content")
        if p.name in (MANIFEST, SIGNATURE_FILE) and (len(p.parts) == 1 or p.parent.as_posix() == first_top):
            if m.size > MAX_MANIFEST_BYTES:
                raise BundleError(
                    f"{label}: {key} is {m.size // 2**20} MiB; a bundle's {p.name} is at most "
                    f"{MAX_MANIFEST_BYTES // 2**20} MiB"
                )
            src = tar.extractfile(m)
            data = src.read(m.size) if src is not None else b""
            if len(data) != m.size:
                raise BundleError(f"{label}: {key} is truncated")
            small[key] = data
    tops = {PurePosixPath(k).parts[0] for k in [*members, *dirs]}
    top = next(iter(tops)) if len(tops) == 1 else None
    is_folder = top is not None and (top in dirs or any(k.startswith(f"{top}/") for k in members))
    prefix = f"{top}/" if is_folder else ""
    files = {k[len(prefix) :]: m.size for k, m in members.items() if k.startswith(prefix)}
    listing = _Listing(files, small.get(prefix + MANIFEST), small.get(prefix + SIGNATURE_FILE))
    return listing, prefix, members


def _dir_listing(src: Path, max_bytes: int) -> _Listing:
    """A bundle directory's listing (like :func:`_tar_listing`): links, devices and oversized
    content refused, nothing but the manifest and its signature read."""
    files: dict[str, int] = {}
    total = 0
    for path in sorted(src.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BundleError(
                f"{src}: {path.relative_to(src)} is a link or device; bundles hold regular files only"
            )
        if path.is_file():
            files[path.relative_to(src).as_posix()] = size = path.stat().st_size
            total += size
            if total > max_bytes:
                raise BundleError(f"{src}: more than {max_bytes // 2**20} MiB of content")
            if len(files) > MAX_MEMBERS:
                raise BundleError(f"{src}: more than {MAX_MEMBERS} files; not a bundle")

    def small(name: str) -> bytes | None:
        if name not in files:
            return None
        if files[name] > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{src}: {name} is {files[name] // 2**20} MiB; a bundle's {name} is at most "
                f"{MAX_MANIFEST_BYTES // 2**20} MiB"
            )
        with (src / name).open("rb") as fh:
            return fh.read(MAX_MANIFEST_BYTES + 1)

    return _Listing(files, small(MANIFEST), small(SIGNATURE_FILE))


def _admit(listing: _Listing, label: str, signatures: SignaturePolicy | None) -> tuple[dict, Signer | None]:
    """Decide on a bundle from its listing before any model file is read: the signature first (when a
    policy is given), then the manifest, then that the files are exactly those it lists, at the sizes
    it declares (``file_sizes``; bundles from before it are held to their hashes while streamed)."""
    if listing.manifest is None:
        raise BundleError(f"{label}: no {MANIFEST}; not a model bundle")
    signer = signatures.verify_bytes(listing.manifest, listing.signature, label) if signatures else None
    manifest = _parse_manifest(listing.manifest, f"{label}: {MANIFEST}")
    listed, declared = manifest["files"], manifest.get(FILE_SIZES, {})
    for rel in listed:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or rel in (MANIFEST, SIGNATURE_FILE):
            raise BundleError(f"{label}: manifest lists an unsafe path {rel!r}")
    extra = sorted(set(listing.files) - set(listed) - {MANIFEST, SIGNATURE_FILE})
    if extra:
        raise BundleError(f"{label}: files not listed in the manifest: {', '.join(extra[:5])}")
    for rel in listed:
        if rel not in listing.files:
            raise BundleError(f"{label}: missing file {rel} listed in the manifest")
        if rel in declared and listing.files[rel] != declared[rel]:
            raise BundleError(_size_mismatch(label, rel, listing.files[rel], declared[rel]))
    return manifest, signer


def _size_mismatch(label: str, rel: str, size: int, declared: int) -> str:
    return (
        f"{label}: {rel} does not match its SHA-256 in the manifest (corrupt or altered: {size} bytes "
        f"where the manifest declares {declared}); refused without reading it"
    )


def _copy_checked(
    src: BinaryIO,
    target: Path,
    size: int,
    digest: str,
    label: str,
    rel: str,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Copy exactly ``size`` bytes, hashing as they pass; stop at the first byte beyond ``size``."""
    h = hashlib.sha256()
    done = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("xb")
    except OSError as exc:
        raise _WriteFailed(exc) from None
    with out:
        while chunk := src.read(min(COPY_CHUNK, size - done + 1)):
            done += len(chunk)
            if done > size:
                raise BundleError(f"{label}: {rel} holds more than the {size} bytes it declares")
            h.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteFailed(exc) from None
            if progress is not None:
                progress("extracting")
    if done != size:
        raise BundleError(f"{label}: {rel} is truncated ({done} of {size} bytes)")
    if h.hexdigest() != digest:
        raise BundleError(f"{label}: {rel} does not match its SHA-256 in the manifest (corrupt or altered)")


def _write_small(listing: _Listing, root: Path) -> None:
    """The manifest and signature bytes that were verified, written as they were read."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        for name, data in ((MANIFEST, listing.manifest), (SIGNATURE_FILE, listing.signature)):
            if data is not None:
                with (root / name).open("xb") as fh:
                    fh.write(data)
    except OSError as exc:
        raise _WriteFailed(exc) from None


def extract_verified(
    tar_path: Path,
    dest: Path,
    max_bytes: int = MAX_BUNDLE_BYTES,
    signatures: SignaturePolicy | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, Signer | None]:
    """Unpack a bundle tar into ``dest`` only after its manifest is verified; returns its root and signer.

    The headers are walked first (unsafe entries, links, devices, sparse files, duplicates and content
    over ``max_bytes`` refused), reading only ``manifest.json`` and ``manifest.sig``; the signature is
    checked (with ``signatures``), then the listing against the manifest; only then are the listed
    files streamed out, each held to its size and hash. A refusal never holds a member in memory and
    writes no model file. ``progress("extracting")`` is called as bytes are written.
    """
    tar_path = Path(tar_path)
    label = str(tar_path)
    try:
        with _read_tar(tar_path, max_bytes) as tar:
            listing, prefix, members = _tar_listing(tar, label, max_bytes)
            manifest, signer = _admit(listing, label, signatures)
            root = dest / prefix if prefix else dest
            for rel, digest in manifest["files"].items():
                member = members[prefix + rel]
                src = tar.extractfile(member)
                if src is None:
                    raise BundleError(f"{label}: cannot read {rel}")
                _copy_checked(src, root / rel, member.size, digest, label, rel, progress)
            _write_small(listing, root)
    except _WriteFailed as exc:
        raise exc.error from None
    return root, signer


def safe_extract(
    tar_path: Path,
    dest: Path,
    max_bytes: int = MAX_BUNDLE_BYTES,
    signatures: SignaturePolicy | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Extract a bundle tar (see :func:`extract_verified`); returns the bundle directory (the tar's
    single top-level folder, or ``dest`` itself)."""
    return extract_verified(tar_path, dest, max_bytes, signatures, progress)[0]


def safe_copy_dir(
    src: Path,
    dest: Path,
    max_bytes: int = MAX_BUNDLE_BYTES,
    signatures: SignaturePolicy | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Copy a bundle directory like :func:`extract_verified` unpacks a tar: manifest and signature
    checked first, then only the listed files copied, each held to its size and hash."""
    src = Path(src)
    listing = _dir_listing(src, max_bytes)
    manifest, _ = _admit(listing, str(src), signatures)
    try:
        for rel, digest in manifest["files"].items():
            with (src / rel).open("rb") as fh:
                _copy_checked(fh, dest / rel, listing.files[rel], digest, str(src), rel, progress)
        _write_small(listing, dest)
    except _WriteFailed as exc:
        raise exc.error from None
    return dest


def peek_manifest(path: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> dict:
    """A bundle's manifest (directory or tar) read without unpacking or verifying anything else: for
    facts such as its model version, never to run it."""
    path = Path(path)
    if path.is_dir():
        return read_manifest(path)
    label = str(path)
    with _read_tar(path, max_bytes) as tar:
        listing = _tar_listing(tar, label, max_bytes)[0]
    if listing.manifest is None:
        raise BundleError(f"{label}: no {MANIFEST}; not a model bundle")
    return _parse_manifest(listing.manifest, f"{label}: {MANIFEST}")


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (tarfile's and zlib's can span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def read_manifest(root: Path) -> dict:
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; not a model bundle")
    return _parse_manifest(mpath.read_bytes(), str(mpath))


def _parse_manifest(data: bytes, label: str) -> dict:
    """A manifest's JSON, with the schema version, required keys and the file table checked."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{label}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{label}: expected a JSON object")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{label}: schema_version must be an integer, found {version!r}")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{label}: schema version {version} is not supported (this appliance reads {SCHEMA_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{label}: missing keys {', '.join(missing)}")
    files, sizes = manifest["files"], manifest.get(FILE_SIZES, {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleError(f"{label}: 'files' must map each path to its SHA-256")
    if not isinstance(sizes, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes.values()
    ):
        raise BundleError(f"{label}: '{FILE_SIZES}' must map paths to byte counts")
    if not isinstance(manifest["model"], dict) or not isinstance(manifest["variants"], dict):
        raise BundleError(f"{label}: 'model' and 'variants' must be JSON objects")
    return manifest


def verify_files(root: Path, manifest: dict) -> None:
    listed: dict[str, str] = manifest["files"]
    for rel, digest in listed.items():
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{root}: manifest lists an unsafe path {rel!r}")
        f = root / rel
        if f.is_symlink():
            raise BundleError(f"{root}: {rel} is a symbolic link; bundles hold regular files only")
        if not f.is_file():
            raise BundleError(f"{root}: missing file {rel} listed in the manifest")
        declared = manifest.get(FILE_SIZES, {}).get(rel)
        if declared is not None and f.stat().st_size != declared:
            raise BundleError(_size_mismatch(str(root), rel, f.stat().st_size, declared))
        if sha256_file(f) != digest:
            raise BundleError(
                f"{root}: {rel} does not match its SHA-256 in the manifest (corrupt or altered)"
            )
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    extra = sorted(present - set(listed) - {MANIFEST, SIGNATURE_FILE})
    if extra:
        raise BundleError(f"{root}: files not listed in the manifest: {', '.join(extra[:5])}")
    try:
        graphs = kind_of(manifest).variant_files
    except ModelError:
        graphs = ()  # a kind this software does not know: refused by name when it is installed or opened
    for variant, spec in manifest["variants"].items():
        for key in graphs:
            if spec.get(key) not in listed:
                raise BundleError(f"{root}: variant {variant}: {key} {spec.get(key)!r} is not in the bundle")
