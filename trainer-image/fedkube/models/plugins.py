"""Which import paths (``module:attribute``) a site lets a job run in its processes.

A manifest's ``task.model.importPath`` and ``task.trainFunction`` run code in every pod. The
site's admin, not the job's author, decides what may run: an import path must match one of
the site's allowed patterns (``--allow-import``, Helm ``site.allowedImports``; shell-style,
such as ``hospital_models.*``). Modules that load code or data from elsewhere or reach the
system (``torch.hub``, ``subprocess``...) are refused unless a pattern names the exact path.
`fedkube run` and the simulation, where the user is every site's admin, allow the
manifest's own paths, never those modules.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PluginPolicy:
    allowed: tuple[str, ...] = ()

    @classmethod
    def for_local(cls, task: TaskSpec) -> PluginPolicy:
        """The manifest's own import paths (the user runs every site), refused modules not."""
        paths = [p for p in (task.model.import_path, task.train_function) if p]
        return cls(tuple(p for p in paths if not _refused(p.partition(":")[0])))

    def check(self, path: str, field: str) -> None:
        module = path.partition(":")[0]
        if _refused(module) and path not in self.allowed:
            raise ModelError(
                f"{field}: {path} is refused: module {module!r} loads code from elsewhere or "
                "reaches the system; a site's admin can allow this exact path only"
            )
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in self.allowed):
            raise ModelError(
                f"{field}: import path {path} is not among this site's allowed plug-ins; its "
                "admin allows them with --allow-import (Helm: site.allowedImports)"
            )


NO_PLUGINS = PluginPolicy()  # built-in models only
