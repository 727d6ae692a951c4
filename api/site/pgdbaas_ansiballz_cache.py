"""A bytecode cache for the Python that ansible modules run in (the venv's, on this host).

An AnsiballZ module runs from a zip of its sources, and zipimport compiles every file of it
(ansible.module_utils.basic and what it imports) again in each task: about 0.2 s of CPU per module
task on the 2-core machine, a third of a task's cost. This keeps the compiled code of each source
file, keyed by the file's path in the zip and its bytes, in a 0700 directory of the user running
the module; the code is the one compile() gives, so a module behaves the same with or without it.

It is loaded by the venv's pgdbaas-ansiballz-cache.pth (`make venv`), patches only
zipimport._compile_source (CPython's pure-Python zipimport; nothing else changes), and is off with
PGDBAAS_ANSIBALLZ_CACHE=off. A directory not owned by the user, or writable by others, is not used.
Module arguments are not in the zip (the wrapper passes them apart), so no secret is ever cached.
"""

import os
import sys
import zipimport

_compile_source = getattr(zipimport, "_compile_source", None)
_ZIP = ".zip" + os.sep


def _directory():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pgdbaas", "ansiballz-" + sys.implementation.cache_tag)


def _usable(directory):
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022 and os.path.isdir(directory)


def _with_filename(code, filename):
    """The code object (and those nested in it) as compiled from `filename`: tracebacks name this
    run's payload, not the one the cache was filled from."""
    if code.co_filename == filename:
        return code
    consts = tuple(_with_filename(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _cached_compile(pathname, source):
    import hashlib
    import marshal
    from importlib.util import MAGIC_NUMBER

    inside = pathname.split(_ZIP, 1)[-1]
    key = hashlib.sha256(MAGIC_NUMBER + inside.encode() + b"\0" + source).hexdigest()
    directory = _directory()
    if not _usable(directory):
        return _compile_source(pathname, source)
    path = os.path.join(directory, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as cached:
            return _with_filename(marshal.load(cached), pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    partial = "%s.%d" % (path, os.getpid())
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            marshal.dump(code, out)
        os.replace(partial, path)
    except OSError:
        try:
            os.unlink(partial)
        except OSError:
            pass
    return code


if _compile_source is not None and os.environ.get("PGDBAAS_ANSIBALLZ_CACHE", "on") != "off":
    zipimport._compile_source = _cached_compile
