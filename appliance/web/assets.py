"""The console's third-party static files: uPlot (MIT), the chart library of the calibration page.

Installed at setup time, never fetched at run time and never from a CDN by the browser: ``appliance
install-web-assets`` takes the pinned npm tarball (downloaded once from the npm registry, or a file
carried in with ``--npm-tarball``), checks its SHA-256 and each extracted file's, and copies the
script, its stylesheet and its licence into ``appliance/web/static/vendor/``. Without them the
console still works; its calibration chart says how to install them.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from appliance.errors import ApplianceError

UPLOT_VERSION = "1.6.32"
UPLOT_URL = f"https://registry.npmjs.org/uplot/-/uplot-{UPLOT_VERSION}.tgz"
UPLOT_TARBALL_SHA256 = "4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d"
MAX_TARBALL = 2 * 1024 * 1024
VENDOR = Path(__file__).with_name("static") / "vendor"
FILES = {  # in the tarball -> installed as
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "LICENSE-uPlot.txt",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed(dest: Path = VENDOR) -> bool:
    return all((dest / name).is_file() for name in FILES.values())


def install_web_assets(dest: Path | None = None, tarball: Path | None = None) -> Path:
    """Verify the pinned uPlot tarball (downloading it when none is given) and extract its files."""
    dest = dest or VENDOR
    with tempfile.TemporaryDirectory() as tmp:
        if tarball is None:
            tarball = Path(tmp) / f"uplot-{UPLOT_VERSION}.tgz"
            try:
                with urllib.request.urlopen(UPLOT_URL, timeout=60) as resp:
                    data = resp.read(MAX_TARBALL + 1)
            except OSError as exc:
                raise ApplianceError(
                    f"could not download {UPLOT_URL} ({exc}); on an offline machine download it elsewhere "
                    "and pass it with: appliance install-web-assets --npm-tarball FILE"
                ) from None
            if len(data) > MAX_TARBALL:
                raise ApplianceError(f"{UPLOT_URL} is larger than expected; not installing it")
            tarball.write_bytes(data)
        if _sha256(tarball) != UPLOT_TARBALL_SHA256:
            raise ApplianceError(
                f"{tarball} is not uplot {UPLOT_VERSION} (SHA-256 differs); not installing it"
            )
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball, "r:gz") as tar:
            for member, name in FILES.items():
                fh = tar.extractfile(member)
                if fh is None:
                    raise ApplianceError(f"{tarball} has no {member}")
                (dest / name).write_bytes(fh.read())
    return dest
