"""The pinned upstream manifest trees (KFP, Argo, KubeRay) the cluster install renders from.

The bootstrap on the control plane and the tests here render the same install
from local copies of these trees, never from kustomize remote URLs, so what the
tests check is what the cluster gets. A tree lives in ``<root>/<name>-<version>/``
(for example ``kubeflow-pipelines-2.17.0/manifests/kustomize``). The root is, in order:

1. ``$SERVICETIME_UPSTREAM`` (a folder holding the three trees),
2. the cache ``$XDG_CACHE_HOME/servicetime/upstream`` (``~/.cache/...``), filled by
   :func:`fetch` from GitHub's archive of each pinned commit.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from components.core.platform import platform

log = logging.getLogger(__name__)

ENV_VAR = "SERVICETIME_UPSTREAM"
# Folder names of the trees, as laid out under the root (name, platform.versions field).
TREES = {"kfp": "kubeflow-pipelines", "argo": "argo-workflows", "kuberay": "kuberay"}
ARCHIVE_URL = "https://codeload.github.com/{repo}/tar.gz/{commit}"


class UpstreamMissing(RuntimeError):
    """The pinned trees are neither configured, cached, nor downloadable here."""


@dataclass(frozen=True)
class Tree:
    key: str  # kfp | argo | kuberay
    folder: str  # e.g. kubeflow-pipelines-2.17.0
    repo: str
    commit: str
    paths: tuple[str, ...]

    def present(self, root: Path) -> bool:
        return all((root / self.folder / p).is_dir() for p in self.paths)


def trees() -> list[Tree]:
    p = platform()
    return [
        Tree(key, f"{folder}-{getattr(p.versions, key)}", p.upstream[key].repo, p.upstream[key].commit,
             tuple(p.upstream[key].paths))
        for key, folder in TREES.items()
    ]


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "servicetime" / "upstream"


def missing(root: Path) -> list[str]:
    return [t.folder for t in trees() if not t.present(root)]


def _extract(data: bytes, tree: Tree, dest: Path) -> None:
    """Unpack only the pinned paths (and the LICENSE) of one GitHub archive into dest/<folder>."""
    target = dest / tree.folder
    with tempfile.TemporaryDirectory(dir=dest) as tmp, tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        wanted = (*tree.paths, "LICENSE")
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/", 1)  # "<repo>-<commit>/<path>"
            if len(parts) == 2 and any(parts[1] == w or parts[1].startswith(w + "/") for w in wanted):
                members.append(member)
        if not members:
            raise UpstreamMissing(f"archive of {tree.repo}@{tree.commit} holds none of {tree.paths}")
        tar.extractall(tmp, members=members, filter="data")
        (top,) = Path(tmp).iterdir()
        shutil.rmtree(target, ignore_errors=True)
        top.rename(target)


def fetch(root: Path | None = None, timeout_s: float = 60.0) -> Path:
    """Download the pinned trees that ``root`` (default: the cache) lacks; return root."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    for tree in trees():
        if tree.present(root):
            continue
        url = ARCHIVE_URL.format(repo=tree.repo, commit=tree.commit)
        log.info("fetching %s (%s)", tree.folder, url)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (fixed https URL)
                data = resp.read()
        except OSError as exc:
            raise UpstreamMissing(f"cannot download {url}: {exc}") from exc
        _extract(data, tree, root)
    return root


def locate(download: bool = True) -> Path:
    """The root holding all pinned trees: the setting, else the cache (filled if asked)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        root = Path(configured).expanduser()
        if missing(root):
            raise UpstreamMissing(f"${ENV_VAR}={root} lacks {', '.join(missing(root))}")
        return root
    root = cache_root()
    if not missing(root):
        return root
    if not download:
        raise UpstreamMissing(f"no pinned upstream trees: set ${ENV_VAR} or run `servicetime cluster fetch-upstream`")
    return fetch(root)
