"""The bytecode cache of AnsiballZ payloads (api/site/pgdbaas_ansiballz_cache.py), loaded in the
venv's Python by its .pth: modules import from a zip the same code, compiled once per user."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

SOURCE = "import sys\ndef where():\n    return sys._getframe().f_code.co_filename\nVALUE = 41 + 1\n"


def import_from_zip(zip_path: Path, cache_home: Path, **env) -> list[str]:
    """VALUE and where() of module `payload` imported from the zip, in a fresh venv Python."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import payload; "
            "print(payload.VALUE); print(payload.where())")
    run = subprocess.run([sys.executable, "-c", code, str(zip_path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, XDG_CACHE_HOME=str(cache_home), **env))
    return run.stdout.split()


def make_zip(path: Path, source: str = SOURCE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload.py", source)
    return path


def cached(cache_home: Path) -> list[Path]:
    return sorted(cache_home.glob("pgdbaas/ansiballz-*/*"))


def test_the_venvs_python_loads_the_cache():
    run = subprocess.run([sys.executable, "-c", "import zipimport; print(zipimport._compile_source.__module__)"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "pgdbaas_ansiballz_cache"


def test_code_compiled_once_and_named_after_each_payload(tmp_path):
    cache_home = tmp_path / "cache"
    first = make_zip(tmp_path / "a" / "payload.zip")
    assert import_from_zip(first, cache_home) == ["42", f"{first}/payload.py"]
    [entry] = cached(cache_home)
    assert entry.stat().st_mode & 0o777 == 0o600 and entry.parent.stat().st_mode & 0o777 == 0o700
    written = entry.stat().st_mtime_ns
    # Another payload (a new temp dir each task) with the same file: the cached code, under its own name.
    second = make_zip(tmp_path / "b" / "payload.zip")
    assert import_from_zip(second, cache_home) == ["42", f"{second}/payload.py"]
    assert cached(cache_home) == [entry] and entry.stat().st_mtime_ns == written
    # Changed source: compiled anew, never the old code.
    changed = make_zip(tmp_path / "c" / "payload.zip", SOURCE.replace("41 + 1", "41 + 2"))
    assert import_from_zip(changed, cache_home)[0] == "43" and len(cached(cache_home)) == 2


def test_a_directory_others_may_write_is_not_used(tmp_path):
    cache_home = tmp_path / "cache"
    directory = cache_home / "pgdbaas" / f"ansiballz-{sys.implementation.cache_tag}"
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    assert import_from_zip(make_zip(tmp_path / "payload.zip"), cache_home)[0] == "42"
    assert cached(cache_home) == []


def test_off_compiles_as_python_does(tmp_path):
    cache_home = tmp_path / "cache"
    zip_path = make_zip(tmp_path / "payload.zip")
    assert import_from_zip(zip_path, cache_home, PGDBAAS_ANSIBALLZ_CACHE="off")[0] == "42"
    assert cached(cache_home) == []
