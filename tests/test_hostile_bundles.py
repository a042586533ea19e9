"""Hostile and unwanted bundles: refused from their manifest before their content costs memory or disk;
downgrades and versions the daemon marked bad are refused unless the technician says otherwise;
refusals are one line naming the file once.

Crafted tars are built here byte by byte (a GNU sparse member, a gzip bomb made of repeated gzip
members, oversized and unlisted members) around the real starter bundle; the memory and bytes written
of a refusal are measured in a child process (VmHWM after resetting it, ``wchar`` of /proc/self/io).
``benchmarks/hostile_bundles.py`` reuses the builders at the issue's 500 MiB.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from appliance.config import load_config
from appliance.errors import ModelError, UpdateRefused
from appliance.models.bundle import BundleError, open_bundle
from appliance.service.demo import STARTER_LSTM_BUNDLE as STARTER_BUNDLE
from appliance.updates.compatibility import version_key
from appliance.updates.inbox import Inbox
from appliance.updates.signing import generate_key_pair, sign_manifest
from appliance.updates.store import ModelStore
from tests.conftest import ROOT, write_appliance_config

MIB = 1 << 20
TOP = "starter-walking-lstm-vae"  # the starter tar's top-level folder


# -- building crafted tars ------------------------------------------------------------------------


@dataclass
class Zeros:
    """``size`` zero bytes of payload, never held in memory (gzip: one compressed MiB, repeated)."""

    size: int


Segment = bytes | Zeros


def _pad(n: int) -> bytes:
    return bytes(-n % tarfile.BLOCKSIZE)


def member(name: str, payload: bytes | Zeros) -> list[Segment]:
    """A regular-file member: header, payload, padding."""
    info = tarfile.TarInfo(name)
    info.size = payload.size if isinstance(payload, Zeros) else len(payload)
    info.mode = 0o644
    return [info.tobuf(tarfile.GNU_FORMAT), payload, _pad(info.size)]


def folder(name: str) -> list[Segment]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return [info.tobuf(tarfile.GNU_FORMAT)]


def sparse_member(name: str, real_size: int, data: bytes = b"x" * 512) -> list[Segment]:
    """An old-GNU sparse member: ``data`` stored, then holes up to ``real_size`` (what `tar -S` writes)."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = len(data), tarfile.GNUTYPE_SPARSE, 0o644
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:410] = tarfile.itn(0, 12, tarfile.GNU_FORMAT) + tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
    buf[482] = 0  # no extension blocks
    buf[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\x00" % sum(buf)
    return [bytes(buf), data, _pad(len(data))]


def bundle_members(root: Path, top: str = TOP) -> list[Segment]:
    """A bundle folder as ``export.bundle.write_tar`` lays it out (sorted, under one top folder)."""
    out = folder(top)
    for path in sorted(root.rglob("*")):
        name = f"{top}/{path.relative_to(root).as_posix()}"
        out += folder(name) if path.is_dir() else member(name, path.read_bytes())
    return out


def write_segments(path: Path, segments: list[Segment], gz: bool = False) -> Path:
    """Write a tar (gzip-compressed when ``gz``; zero runs cost one compressed MiB, repeated)."""
    segments = [*segments, bytes(2 * tarfile.BLOCKSIZE)]  # end of archive
    zero_mib = gzip.compress(bytes(MIB), 1)
    with path.open("wb") as fh:
        for seg in segments:
            if isinstance(seg, Zeros):
                whole, rest = divmod(seg.size, MIB)
                for _ in range(whole):
                    fh.write(zero_mib if gz else bytes(MIB))
                fh.write(gzip.compress(bytes(rest), 1) if gz else bytes(rest))
            elif seg:
                fh.write(gzip.compress(seg, 1) if gz else seg)
    return path


def unpacked_starter(dest: Path) -> Path:
    """The starter bundle unpacked with tarfile itself (not the code under test)."""
    with tarfile.open(STARTER_BUNDLE) as tar:
        tar.extractall(dest, filter="data")
    return dest / TOP


def release(work: Path, key: Path, version: str, sizes: bool = False, name: str | None = None) -> Path:
    """The starter re-released as ``version`` and signed; ``sizes`` adds ``file_sizes`` as new exports do."""
    root = unpacked_starter(work / f"src-{version}-{sizes}-{name}")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["model"]["version"] = version
    if name is not None:
        manifest["model"]["name"] = name
    if sizes:
        manifest["file_sizes"] = {rel: (root / rel).stat().st_size for rel in manifest["files"]}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_manifest(root, key)
    return root


def release_tar(work: Path, key: Path, version: str, **kw) -> Path:
    root = release(work, key, version, **kw)
    return write_segments(work / f"release-{version}-{kw.get('name')}.tar", bundle_members(root))


# the crafted cases: (build(work, key, big) -> tar, words the refusal must contain)
def _sparse_unsigned(work: Path, key: Path, big: int) -> Path:
    root = unpacked_starter(work / "sparse")
    segs = bundle_members(root) + sparse_member(f"{TOP}/onnx-fp32/padding.bin", big)
    return write_segments(work / "sparse.tar", segs)


def _gzip_bomb_unsigned(work: Path, key: Path, big: int) -> Path:
    root = unpacked_starter(work / "bomb")
    segs = bundle_members(root) + member(f"{TOP}/onnx-fp32/zeros.bin", Zeros(big))
    return write_segments(work / "bomb.tar.gz", segs, gz=True)


def swapped_sequence_tar(root: Path, out: Path, big: int) -> Path:
    """The release in ``root`` as a gzip tar whose onnx-fp32/sequence.onnx is a `big`-byte member."""
    segs = folder(TOP)
    for path in sorted(root.rglob("*")):
        name = f"{TOP}/{path.relative_to(root).as_posix()}"
        if path.is_dir():
            segs += folder(name)
        elif path.name == "sequence.onnx" and path.parent.name == "onnx-fp32":
            segs += member(name, Zeros(big))
        else:
            segs += member(name, path.read_bytes())
    return write_segments(out, segs, gz=True)


def _larger_than_declared(work: Path, key: Path, big: int) -> Path:
    return swapped_sequence_tar(release(work, key, "1.2.1", sizes=True), work / "larger.tar.gz", big)


def _unlisted_member(work: Path, key: Path, big: int) -> Path:
    root = release(work, key, "1.2.1")
    segs = bundle_members(root) + member(f"{TOP}/onnx-fp32/extra.bin", Zeros(big))
    return write_segments(work / "unlisted.tar.gz", segs, gz=True)


def _random_bytes(work: Path, key: Path, big: int) -> Path:
    path = work / "random.tar"
    path.write_bytes(random.Random(14).randbytes(6 * MIB))
    return path


def _truncated(work: Path, key: Path, big: int) -> Path:
    data = release_tar(work, key, "1.2.1").read_bytes()
    path = work / "truncated.tar"
    path.write_bytes(data[: len(data) // 2])
    return path


CASES: dict[str, tuple[Callable[[Path, Path, int], Path], str]] = {
    "sparse member, unsigned": (_sparse_unsigned, "is a sparse file"),
    "gzip bomb, unsigned": (_gzip_bomb_unsigned, "the bundle is not signed"),
    "member larger than declared": (_larger_than_declared, "where the manifest declares"),
    "unlisted member": (_unlisted_member, "files not listed in the manifest: onnx-fp32/extra.bin"),
    "random bytes": (_random_bytes, "not a tar archive"),
    "truncated": (_truncated, "truncated"),
}

# -- measuring a refusal in a child process -----------------------------------------------------

MEASURE = r"""
import json, sys
from pathlib import Path
from appliance.config import load_config
from appliance.errors import UpdateRefused
from appliance.updates.store import ModelStore

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

def wchar():
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))

cfg = load_config(sys.argv[1])
store = ModelStore(cfg.state_dir)
store.state(), store.installed()
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # peak RSS := current RSS
except OSError:
    pass
rss, written = status("VmRSS"), wchar()
try:
    store.install(Path(sys.argv[2]), cfg)
    refused, message = False, ""
except UpdateRefused as exc:
    refused, message = True, str(exc)
print(json.dumps({"refused": refused, "message": message,
                  "peak_rss_delta": status("VmHWM") - rss, "bytes_written": wchar() - written}))
"""


def measure_install(cfg_path: Path, bundle: Path) -> dict:
    """Install ``bundle`` in a fresh process; its refusal, peak RSS growth and bytes written."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(cfg_path), str(bundle)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("keys")
    private, public, kid = generate_key_pair(d / "acme")
    trusted = d / "trusted-keys"
    trusted.mkdir()
    shutil.copy(public, trusted / "acme.pub")
    return {"private": private, "trusted": trusted, "key_id": kid}


@pytest.fixture(scope="module")
def releases(keys, tmp_path_factory) -> dict[str, Path]:
    """The starter model signed as 0.0.1, 1.2.1, 1.2.2 and 1.2.3 (tars, manifests without sizes)."""
    d = tmp_path_factory.mktemp("releases")
    return {v: release_tar(d, keys["private"], v) for v in ("0.0.1", "1.2.1", "1.2.2", "1.2.3")}


def config(tmp_path: Path, keys: dict, **model) -> Path:
    camera = {
        "id": "workcell",
        "source": str(ROOT / "appliance" / "assets" / "demo-dancing.mp4"),
        "fps": None,
    }
    return write_appliance_config(
        tmp_path / "appliance.yaml",
        camera,
        model={"bundle": str(STARTER_BUNDLE), "trusted_keys": str(keys["trusted"]), **model},
    )


def appliance_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


# -- item 6: hostile bundles ------------------------------------------------------------------------


def test_the_crafted_sparse_member_really_expands_to_its_declared_size(tmp_path):
    """The builder makes what `tar -S` makes: tarfile reads 8 MiB from a 9 KiB member."""
    path = write_segments(tmp_path / "s.tar", sparse_member("b/big.bin", 8 * MIB))
    with tarfile.open(path) as tar:
        (m,) = tar.getmembers()
        assert m.issparse() and m.size == 8 * MIB
        assert len(tar.extractfile(m).read()) == 8 * MIB
    assert path.stat().st_size < 16 * 1024


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_bundle_is_refused_for_under_50_mb_of_memory_and_writes_nothing(case, tmp_path, keys):
    """Before: the tar was unpacked (members read whole into memory) before its signature was checked:
    +200 MiB of RSS and 200 MiB staged for a 200 MiB member. Now the manifest decides first."""
    build, needle = CASES[case]
    crafted = build(tmp_path, keys["private"], 200 * MIB)
    cfg_path = config(tmp_path, keys)
    result = measure_install(cfg_path, crafted)
    assert result["refused"] and needle in result["message"], result["message"]
    assert result["message"].startswith(f"{crafted}: ") and "\n" not in result["message"]
    assert result["peak_rss_delta"] < 50 * MIB, f"{result['peak_rss_delta'] / MIB:.0f} MiB"
    assert result["bytes_written"] < 1 * MIB, f"{result['bytes_written'] / MIB:.0f} MiB written"
    state = load_config(cfg_path).state_dir
    assert files_under(state) == ["models/.lock", "models/updates.jsonl"]  # nothing staged, nothing left
    assert ModelStore(state).state().active is None


def test_a_bundle_with_declared_sizes_installs_and_each_file_is_held_to_its_size(tmp_path, keys):
    cfg = load_config(config(tmp_path, keys))
    root = release(tmp_path, keys["private"], "1.2.1", sizes=True)
    result = ModelStore(cfg.state_dir).install(
        write_segments(tmp_path / "sized.tar", bundle_members(root)), cfg
    )
    assert result.version_id.endswith("-1.2.1") and result.signer.name == "acme"
    # the same manifest over a folder whose model file grew after signing: refused before it is read
    with (root / "onnx-int8" / "sequence.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(UpdateRefused, match=r"sequence.onnx does not match its SHA-256 .* declares"):
        ModelStore(cfg.state_dir).install(root, cfg)


def test_a_folder_bundle_with_an_unlisted_sparse_file_is_refused_without_copying_it(tmp_path, keys):
    cfg_path = config(tmp_path, keys)
    root = release(tmp_path, keys["private"], "1.2.1")
    with (root / "onnx-fp32" / "huge.bin").open("wb") as fh:
        fh.truncate(200 * MIB)  # a sparse 200 MiB file
    result = measure_install(cfg_path, root)
    assert result["refused"] and "files not listed in the manifest: onnx-fp32/huge.bin" in result["message"]
    assert result["bytes_written"] < 1 * MIB and result["peak_rss_delta"] < 50 * MIB


def test_a_second_manifest_later_in_the_tar_is_refused(tmp_path, keys):
    """A signed manifest first, a forged one after it (tar extractors let the last one win)."""
    root = release(tmp_path, keys["private"], "1.2.1")
    forged = json.loads((root / "manifest.json").read_text())
    forged["threshold"]["default"] = 1e9
    segs = bundle_members(root) + member(f"{TOP}/manifest.json", json.dumps(forged).encode())
    with pytest.raises(BundleError, match="appears twice"):
        open_bundle(write_segments(tmp_path / "twice.tar", segs))


def test_a_tar_with_its_manifest_last_and_no_top_folder_opens(tmp_path, keys):
    """`tar -C bundle -cf x.tar onnx-int8 onnx-fp32 manifest.sig manifest.json`: the headers are walked
    first, so the manifest need not come first."""
    from appliance.updates.signing import SignaturePolicy

    root = release(tmp_path, keys["private"], "1.2.1")
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: "manifest" in p.name)
    segs = [seg for p in files for seg in member(f"./{p.relative_to(root).as_posix()}", p.read_bytes())]
    bundle = open_bundle(
        write_segments(tmp_path / "last.tar", segs), signatures=SignaturePolicy(keys["trusted"])
    )
    assert bundle.signer.name == "acme" and bundle.manifest["model"]["version"] == "1.2.1"


def _bytes_written() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))


def test_a_bundle_tar_opened_directly_is_checked_against_its_signature_before_unpacking(tmp_path, keys):
    """open_bundle(tar, signatures=...) (the daemon's factory bundle) refuses before writing anything:
    before, the 64 MiB member was unpacked to a temporary folder first."""
    from appliance.updates.signing import SignaturePolicy

    policy = SignaturePolicy(keys["trusted"])
    crafted = _gzip_bomb_unsigned(tmp_path, keys["private"], 64 * MIB)
    written = _bytes_written()
    with pytest.raises(ModelError, match="the bundle is not signed"):
        open_bundle(crafted, signatures=policy)
    assert _bytes_written() - written < 1 * MIB
    assert (
        open_bundle(release_tar(tmp_path, keys["private"], "1.2.1"), signatures=policy).signer.name == "acme"
    )


# -- downgrades -------------------------------------------------------------------------------------


def test_version_numbers_compare_numerically():
    assert version_key("1.0.10") > version_key("1.0.9") > version_key("1.0") == version_key("1.0.0")
    assert version_key("v2.0.0-rc1") == (2,) and version_key("nightly") is None


def test_a_lower_version_of_the_active_model_is_refused_unless_allowed(tmp_path, keys, releases):
    cfg = load_config(config(tmp_path, keys))
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.2"], cfg)
    with pytest.raises(UpdateRefused) as refused:
        store.install(releases["1.2.1"], cfg)
    message = str(refused.value)
    assert "older than the active model (starter-walking-lstm-vae 1.2.2" in message
    assert "--allow-downgrade" in message and message.startswith(f"{releases['1.2.1']}: ")
    assert store.state().active == "0001-starter-walking-lstm-vae-1.2.2"
    assert store.log.entries(1)[-1]["result"] == "refused"
    # the technician says so: installed
    out = appliance_cli(
        "update", str(releases["1.2.1"]), "--allow-downgrade", "--config", str(tmp_path / "appliance.yaml")
    )
    assert out.returncode == 0, out.stderr
    assert store.state().active == "0002-starter-walking-lstm-vae-1.2.1"
    # a rollback is explicit: always allowed
    assert store.rollback(cfg) == "0001-starter-walking-lstm-vae-1.2.2"
    assert (
        store.rollback(cfg, to="0002-starter-walking-lstm-vae-1.2.1") == "0002-starter-walking-lstm-vae-1.2.1"
    )


def test_an_old_release_does_not_silently_replace_the_factory_model_but_another_model_may(
    tmp_path, keys, releases
):
    """The issue's case: a signed 0.0.1 replaced the running model. The factory bundle is 1.2.0."""
    cfg_path = config(tmp_path, keys)
    out = appliance_cli("update", str(releases["0.0.1"]), "--config", str(cfg_path))
    assert out.returncode == 3 and "starter-walking-lstm-vae 1.2.0, the configured bundle" in out.stderr
    assert out.stderr.count("\n") == 1
    other = release_tar(tmp_path, keys["private"], "0.0.1", name="another-model")
    out = appliance_cli("update", str(other), "--config", str(cfg_path))
    assert out.returncode == 0, out.stderr  # a different model replaces, it does not downgrade


# -- versions marked bad ----------------------------------------------------------------------------


def test_a_version_marked_bad_is_refused_again_under_any_name_unless_forced(tmp_path, keys, releases):
    cfg_path = config(tmp_path, keys)
    cfg = load_config(cfg_path)
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.1"], cfg)
    bad = store.install(releases["1.2.2"], cfg).version_id
    store.bad.mark(bad, "3 starts in a row did not become healthy", failed_starts=3)
    assert store.rollback(cfg, reason="auto_rollback") == "0001-starter-walking-lstm-vae-1.2.1"
    assert ModelStore(cfg.state_dir).bad.of(bad)["reason"] == "3 starts in a row did not become healthy"
    renamed = tmp_path / "renamed-on-a-usb-stick.tar"
    shutil.copy(releases["1.2.2"], renamed)
    with pytest.raises(UpdateRefused) as refused:
        store.install(renamed, cfg)
    message = str(refused.value)
    assert message.startswith(
        f"{renamed}: starter-walking-lstm-vae 1.2.2 ({bad}) was marked bad after 3 failed "
    )
    assert "3 starts in a row did not become healthy; use `appliance update --force`" in message
    assert store.state().active == "0001-starter-walking-lstm-vae-1.2.1"
    # the inbox (which never forces) sets it aside with that reason
    inbox = Inbox(tmp_path / "inbox", lambda p: str(store.install(p, cfg)), settle_s=0.0)
    (tmp_path / "inbox").mkdir()
    shutil.copy(releases["1.2.2"], tmp_path / "inbox" / "again.tar")
    inbox.poll(), inbox.poll()
    inbox.wait(120)
    assert "marked bad" in (tmp_path / "inbox" / "refused" / "again.tar.txt").read_text()
    # `appliance models` shows it
    listing = appliance_cli("models", "--config", str(cfg_path))
    assert (
        f"{bad}" in listing.stdout
        and "BAD" in listing.stdout
        and "marked bad after 3 failed starts" in listing.stdout
    )
    assert (
        json.loads(appliance_cli("models", "--config", str(cfg_path), "--json").stdout)["bad"][0]["version"]
        == bad
    )
    # forced by the technician: installed, and the mark is cleared
    out = appliance_cli("update", str(renamed), "--force", "--config", str(cfg_path))
    assert out.returncode == 0, out.stderr
    assert store.state().active == bad and store.bad.of(bad) is None
    assert "installed with --force although marked bad" in store.log.entries(1)[-1]["message"]


def test_rolling_back_from_a_bad_version_skips_bad_ones_down_to_the_factory_model(tmp_path, keys, releases):
    cfg = load_config(config(tmp_path, keys, keep_versions=5))
    store = ModelStore(cfg.state_dir)
    ids = [store.install(releases[v], cfg).version_id for v in ("1.2.1", "1.2.2", "1.2.3")]
    store.bad.mark(ids[1], "failed starts")
    store.bad.mark(ids[2], "failed starts")
    assert store.rollback(cfg, reason="auto_rollback") == ids[0]  # skips 1.2.2
    store.bad.mark(ids[0], "failed starts")
    assert store.rollback(cfg, reason="auto_rollback") == "factory"
    with pytest.raises(UpdateRefused, match=r"was marked bad on .*: failed starts; use `appliance rollback"):
        store.rollback(cfg, to=ids[2])
    assert store.rollback(cfg, to=ids[2], force=True) == ids[2]


# -- item 13: one line, the path once ---------------------------------------------------------------


def test_refusals_name_the_file_once_on_one_line_in_the_cli_and_in_appliance_models(tmp_path, keys):
    cfg_path = config(tmp_path, keys)
    raw = yaml.safe_load(cfg_path.read_text())
    raw["model"]["bundle"] = os.path.relpath(STARTER_BUNDLE, tmp_path)  # relative to the config: "../../.."
    cfg_path.write_text(yaml.safe_dump(raw))
    noise = _random_bytes(tmp_path, keys["private"], 0)
    out = appliance_cli("update", str(noise), "--config", str(cfg_path))
    assert out.returncode == 3 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"appliance: error: {noise}: not a tar archive")
    unsigned = tmp_path / "a.tar"
    shutil.copy(STARTER_BUNDLE, unsigned)
    assert appliance_cli("update", str(unsigned), "--config", str(cfg_path)).returncode == 3
    listing = appliance_cli("models", "--config", str(cfg_path)).stdout
    line = next(ln for ln in listing.splitlines() if "not signed" in ln)
    assert line.count(str(unsigned)) == 1 and line.endswith(
        f"{unsigned}: the bundle is not signed; sign it with "
        "`appliance-export sign BUNDLE --key KEY` (or set "
        "model.allow_unsigned: true on a development appliance)"
    )
    factory = next(ln for ln in listing.splitlines() if ln.strip().startswith(("factory", "* factory")))
    assert ".." not in factory and str(STARTER_BUNDLE) in factory


def test_a_smoke_test_refusal_names_the_bundle_file_and_a_nan_reference_is_refused(tmp_path, keys):
    """A NaN reference score passed every comparison (NaN > tolerance is False): installed before."""
    cfg = load_config(config(tmp_path, keys))
    root = release(tmp_path, keys["private"], "1.2.1")
    manifest = json.loads((root / "manifest.json").read_text())
    for v in manifest["variants"].values():
        v["reference_score"] = float("nan")
    (root / "manifest.json").write_text(json.dumps(manifest))
    sign_manifest(root, keys["private"])
    nan = write_segments(tmp_path / "nan.tar", bundle_members(root))
    with pytest.raises(UpdateRefused) as refused:
        ModelStore(cfg.state_dir).install(nan, cfg)
    assert str(refused.value).startswith(f"{nan}: variant onnx-int8: the manifest's reference score nan")
    assert ModelStore(cfg.state_dir).state().active is None
