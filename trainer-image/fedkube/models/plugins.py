"""Which import paths (``module:attribute``) a site lets a job run in its processes.

A manifest's ``task.model.importPath`` and ``task.trainFunction`` run code in every pod. The
site's admin, not the job's author, decides what may run: an import path must match one of
the site's allowed patterns (``--allow-import``, Helm ``site.allowedImports``; shell-style,
such as ``hospital_models.*``). Modules that load code or data from elsewhere or reach the
system (``torch.hub``, ``subprocess``...) are refused unless a pattern names the exact path.

`fedkube run`, the simulation and `fedkube predict` are the same allow-list: the user is
every site's admin, and allows the manifest's own import paths whose module lives in the
manifest's own folder (or the model's), and whatever it names with ``--allow-import``.
Nothing else: not ``posix:system``, ``io:open``, ``torch:load`` or ``pydoc:locate``, which no
list of refused modules could all name.
"""

from __future__ import annotations

import fnmatch
import importlib.machinery
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedkube.errors import ModelError
from fedkube.spec.task import TaskSpec

# Loading these runs what they fetch, or hands the job the system.
REFUSED_MODULES = (
    "torch.hub",
    "builtins",
    "code",
    "ctypes",
    "http",
    "importlib",
    "marshal",
    "os",
    "pickle",
    "pty",
    "runpy",
    "shelve",
    "shutil",
    "socket",
    "subprocess",
    "sys",
    "urllib",
)


def _refused(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in REFUSED_MODULES)


def _lives_in(path: str, folder: Path) -> bool:
    """The import path's top-level module is a file or package in ``folder``, and not a name
    the standard library (or an installed module already loaded) answers first."""
    top = path.partition(":")[0].split(".")[0]
    if not top or top in sys.stdlib_module_names:
        return False
    if importlib.machinery.PathFinder.find_spec(top, [str(folder)]) is None:
        return False
    loaded = sys.modules.get(top)  # an import would answer with this one
    where = getattr(loaded, "__file__", None) if loaded is not None else None
    return loaded is None or (
        where is not None and Path(where).resolve().is_relative_to(folder.resolve())
    )


@dataclass(frozen=True)
class PluginPolicy:
    allowed: tuple[str, ...] = ()
    # What to do about a path that is not allowed, in the words of who decides.
    hint: str = "its admin allows them with --allow-import (Helm: site.allowedImports)"

    @classmethod
    def for_local(
        cls, task: TaskSpec, folder: Path | None, also: Sequence[str] = ()
    ) -> PluginPolicy:
        """The user runs every site: the manifest's own import paths whose module is in
        ``folder`` (the manifest's, or a model's), and the patterns in ``also``."""
        paths = [p for p in (task.model.import_path, task.train_function) if p]
        own = tuple(p for p in paths if folder is not None and _lives_in(p, folder))
        where = f"in {folder}" if folder is not None else "beside the manifest"
        hint = (
            f"a local run allows the manifest's own modules ({where}) and what --allow-import names"
        )
        return cls((*own, *also), hint)

    def check(self, path: str, field: str) -> None:
        module = path.partition(":")[0]
        if _refused(module) and path not in self.allowed:
            raise ModelError(
                f"{field}: {path} is refused: module {module!r} loads code from elsewhere or "
                "reaches the system; a site's admin can allow this exact path only"
            )
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in self.allowed):
            raise ModelError(
                f"{field}: import path {path} is not among this site's allowed plug-ins; "
                f"{self.hint}"
            )


NO_PLUGINS = PluginPolicy()  # built-in models only
