"""Where the renderers read and write: a checkout of this repository, passed in or found from the
working directory. Never from the installed package's location: the wheel and the image carry
``components/`` without ``k8s/``."""

from __future__ import annotations

from pathlib import Path


class NotACheckout(FileNotFoundError):
    pass


def find_checkout(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (the working directory) holding ``k8s/base`` and
    ``pyproject.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "k8s" / "base").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    raise NotACheckout(f"{here} is not inside a checkout of servicetime (no k8s/base and pyproject.toml above it): "
                       "run from the repository, or pass its root")
