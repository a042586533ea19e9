"""The systemd units in ``systemd/``: they verify, their sandbox scores <= 1.5, and they install.

How the checks run without a running systemd (``systemd-analyze`` from the ``systemd`` apt package):

- ``systemd-analyze verify`` refuses a unit whose ``ExecStart=`` binary does not exist, and
  ``--root=DIR`` then needs a whole unit tree (sysinit.target, ...) inside DIR. What works: install
  the units with ``install_service(tmp, prefix=tmp/"prefix")`` so that ``ExecStart=`` points at a stub
  ``appliance`` script that exists, and verify the installed files by path. verify loads drop-ins
  from ``<unit>.d/`` next to the file, so the GPU examples are verified by copying them there as
  ``.conf``. Unknown keys and bad values are only warnings (exit code 0), so stderr must not
  mention our files at all.
- ``systemd-analyze security --offline=yes FILE`` scores a unit file without a manager.
- ``MemoryDenyWriteExecute=yes`` is emulated with systemd's own seccomp rules (v252: mmap with
  PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC fail with EPERM),
  loaded through libseccomp with ctypes, before onnxruntime and LiteRT (XNNPACK) run a model.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.service.install import install_service

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
SERVICES = ("appliance.service", "appliance-calibrate@.service")
DROP_INS = ("nvidia.conf.example", "jetson.conf.example")
MAX_EXPOSURE = 1.5
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def parse_unit(path: Path) -> dict[str, list[str]]:
    """Key -> values (in order) of every ``Key=value`` line, all sections merged."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def sandbox_section(path: Path) -> str:
    """The text from the '--- Sandbox' marker to [Install] (or the end)."""
    text = path.read_text()
    start = text.index("# --- Sandbox")
    end = text.find("[Install]", start)
    return text[start : end if end >= 0 else None].strip()


def installed(tmp_path: Path) -> Path:
    """Install into tmp_path/root with a stub binary; return the unit directory."""
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    stub = prefix / "bin" / "appliance"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    install_service(tmp_path / "root", prefix=str(prefix))
    return tmp_path / "root" / "etc" / "systemd" / "system"


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, timeout=60, check=False
    )


def exposure(unit: Path) -> float:
    """'Overall exposure level for X: 1.4 OK' -> 1.4."""
    out = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, f"no exposure in output:\n{out.stdout}\n{out.stderr}"
    return float(match.group(1))


@needs_analyze
def test_units_verify_cleanly(tmp_path: Path) -> None:
    unit_dir = installed(tmp_path)
    # A concrete instance of the template, as systemctl would start it.
    instance = unit_dir / "appliance-calibrate@line3-east.service"
    shutil.copy(unit_dir / "appliance-calibrate@.service", instance)
    result = verify(unit_dir / "appliance.service", unit_dir / "appliance-calibrate@.service", instance)
    ours = [line for line in result.stderr.splitlines() if "appliance" in line]
    assert result.returncode == 0, result.stderr
    assert not ours, "\n".join(ours)


@needs_analyze
@pytest.mark.parametrize("drop_in", DROP_INS)
def test_gpu_drop_ins_verify_and_keep_the_score(tmp_path: Path, drop_in: str) -> None:
    unit_dir = installed(tmp_path)
    conf_dir = unit_dir / "appliance.service.d"
    shutil.copy(conf_dir / drop_in, conf_dir / drop_in.removesuffix(".example"))
    result = verify(unit_dir / "appliance.service")
    ours = [line for line in result.stderr.splitlines() if "appliance" in line]
    assert result.returncode == 0 and not ours, result.stderr
    assert exposure(unit_dir / "appliance.service") <= MAX_EXPOSURE


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_exposure_within_budget(name: str) -> None:
    score = exposure(UNITS / name)
    assert score <= MAX_EXPOSURE, f"{name}: exposure {score} > {MAX_EXPOSURE}"


def test_daemon_unit_settings() -> None:
    unit = parse_unit(UNITS / "appliance.service")
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] and unit["TimeoutStopSec"] and unit["RestartSec"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StartLimitIntervalSec"] and unit["StartLimitBurst"]
    assert unit["ExecStart"] == ["/usr/local/bin/appliance run --config /etc/appliance/appliance.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["StateDirectory"] == ["appliance"]
    assert unit["ConfigurationDirectory"] == ["appliance"]
    assert unit["LogsDirectory"] == ["appliance"]
    assert unit["LoadCredential"] == ["mqtt-password:/etc/appliance/credentials/mqtt-password"]
    assert unit["User"] == ["appliance"] and "video" in unit["SupplementaryGroups"][0].split()
    env = " ".join(unit["Environment"])
    assert "OPENBLAS_NUM_THREADS=1" in env and "PYTHONUNBUFFERED=1" in env
    assert unit["DevicePolicy"] == ["closed"] and unit["DeviceAllow"] == ["char-video4linux rw"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["MemoryDenyWriteExecute"] == ["yes"]


def test_calibrate_unit_settings() -> None:
    unit = parse_unit(UNITS / "appliance-calibrate@.service")
    assert unit["Type"] == ["oneshot"]
    (exec_start,) = unit["ExecStart"]
    assert exec_start.startswith("/usr/local/bin/appliance calibrate --config /etc/appliance/appliance.yaml")
    assert "--camera %i" in exec_start and "--minutes 3" in exec_start
    for key in ("User", "SupplementaryGroups", "StateDirectory", "ConfigurationDirectory", "LoadCredential"):
        assert unit[key] == parse_unit(UNITS / "appliance.service")[key], key


def test_both_units_share_one_sandbox() -> None:
    assert sandbox_section(UNITS / "appliance-calibrate@.service") == sandbox_section(
        UNITS / "appliance.service"
    )


def test_gpu_drop_ins_are_inactive_examples() -> None:
    conf_dir = UNITS / "appliance.service.d"
    assert sorted(p.name for p in conf_dir.iterdir()) == sorted(DROP_INS)
    nvidia = parse_unit(conf_dir / "nvidia.conf.example")
    assert "/dev/nvidiactl rw" in nvidia["DeviceAllow"] and "/dev/nvidia-uvm rw" in nvidia["DeviceAllow"]
    jetson = parse_unit(conf_dir / "jetson.conf.example")
    assert "/dev/nvmap rw" in jetson["DeviceAllow"] and "/dev/nvhost-ctrl rw" in jetson["DeviceAllow"]


def test_install_service_writes_the_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    written = install_service(root, prefix="/opt/appliance")
    rel = sorted(str(p.relative_to(root)) for p in written)
    assert rel == sorted(
        [
            "etc/appliance/appliance.yaml",
            "etc/sysusers.d/appliance.conf",
            "etc/systemd/system/appliance-calibrate@.service",
            "etc/systemd/system/appliance.service",
            "etc/systemd/system/appliance.service.d/jetson.conf.example",
            "etc/systemd/system/appliance.service.d/nvidia.conf.example",
            "etc/tmpfiles.d/appliance.conf",
        ]
    )
    assert all(p.is_file() for p in written)
    unit = parse_unit(root / "etc/systemd/system/appliance.service")
    assert unit["ExecStart"] == ["/opt/appliance/bin/appliance run --config /etc/appliance/appliance.yaml"]
    config = (root / "etc/appliance/appliance.yaml").read_text()
    assert "password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password" in config
    assert "state_dir: /var/lib/appliance" in config
    assert "bundle: /var/lib/appliance/models/" in config


def test_install_service_keeps_an_existing_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc/appliance/appliance.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("# site configuration\n")
    written = install_service(root)
    assert config not in written
    assert config.read_text() == "# site configuration\n"
    assert (root / "etc/systemd/system/appliance.service").is_file()


def test_config_skeleton_is_valid_under_the_unit(tmp_path: Path) -> None:
    """The skeleton passes check-config with the environment the unit gives it, once the files it
    names exist (check-config checks the bundle and the credential as `run` would)."""
    from appliance.service.demo import STARTER_BUNDLE

    install_service(tmp_path)
    config = tmp_path / "etc/appliance/appliance.yaml"
    shipped = "/var/lib/appliance/models/current.tar"
    config.write_text(config.read_text().replace(shipped, str(STARTER_BUNDLE)))
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "mqtt-password").write_text("pw\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "check-config",
            str(tmp_path / "etc/appliance/appliance.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Loaded in a child process: a seccomp filter cannot be removed from the process that loads it.
MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, errno, sys
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
    lib = ctypes.CDLL(sys.argv[1], use_errno=True)

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_exact_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    for name, mask in (("mmap", PROT_WRITE | PROT_EXEC), ("mmap2", PROT_WRITE | PROT_EXEC),
                       ("mprotect", PROT_EXEC), ("pkey_mprotect", PROT_EXEC), ("shmat", SHM_EXEC)):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue
        cmp = (Cmp * 1)(Cmp(2, 7, mask, mask))  # arg 2, SCMP_CMP_MASKED_EQ
        assert lib.seccomp_rule_add_exact_array(ctx, 0x00050000 | errno.EPERM, nr, 1, cmp) == 0, name
    assert lib.seccomp_load(ctx) == 0, "seccomp_load"

    import mmap
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        raise SystemExit("filter not active: a W+X mapping was allowed")

    import numpy as np
    import onnxruntime as ort
    from appliance.models.bundle import open_bundle
    from appliance.pose.model_files import find_model_files
    from ai_edge_litert.interpreter import Interpreter

    detector, _ = find_model_files()
    interp = Interpreter(model_path=str(detector), num_threads=1)  # XNNPACK delegate by default
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    interp.invoke()
    print("litert ok")

    rt, variant = open_bundle(sys.argv[2]).open("onnxruntime")  # the daemon's own smoke test
    print("scorer ok", ort.__version__, variant)
    """
)


def test_memory_deny_write_execute_keeps_the_runtimes_working(tmp_path: Path) -> None:
    """Under systemd's W^X rules LiteRT (XNNPACK) and the daemon's onnxruntime scorer still run."""
    libseccomp = ctypes.util.find_library("seccomp")
    if libseccomp is None:
        pytest.skip("libseccomp not installed: cannot emulate MemoryDenyWriteExecute=")
    pytest.importorskip("ai_edge_litert", reason="LiteRT not installed ([tflite] extra)")
    from appliance.pose.model_files import find_model_files

    try:
        find_model_files()
    except Exception as exc:  # the message says how to install them
        pytest.skip(f"BlazePose model files not installed: {exc}")
    bundle = ROOT / "appliance" / "assets" / "starter-walking-lstm-vae.tar"
    result = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD, libseccomp, str(bundle)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "litert ok" in result.stdout and "scorer ok" in result.stdout


@pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="systemd-sysusers/systemd-tmpfiles not installed (apt-get install systemd)",
)
def test_sysusers_and_tmpfiles_apply_to_a_root(tmp_path: Path) -> None:
    """The user lands in group video; the credentials directory is root-only."""
    (tmp_path / "etc").mkdir()
    for tool, conf in (
        ("systemd-sysusers", UNITS / "sysusers.d/appliance.conf"),
        ("systemd-tmpfiles", UNITS / "tmpfiles.d/appliance.conf"),
    ):
        args = [tool, f"--root={tmp_path}", str(conf)]
        if tool == "systemd-tmpfiles":
            args.insert(1, "--create")
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    group = (tmp_path / "etc/group").read_text().splitlines()
    assert any(line.startswith("video:") and "appliance" in line.split(":")[3] for line in group)
    users = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    assert [u[5] for u in users if u[0] == "appliance"] == ["/var/lib/appliance"]
    assert (tmp_path / "var/lib/appliance/models").is_dir()
    assert (tmp_path / "etc/appliance/credentials").stat().st_mode & 0o777 == 0o700
