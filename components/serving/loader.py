"""Where the served model comes from, and how it is replaced without dropping a request.

A ``ModelSource`` is a local bundle path or an MLflow URI: ``models:/<name>@<alias>``
(followed: the alias is polled and a move is picked up), ``models:/<name>/<version>``
or ``runs:/...`` (fixed). ``ModelHolder`` keeps the current ``LoadedModel`` in one
attribute: a reload loads the new bundle completely (download, weights, history,
compiled transform and its self-check) on a background thread and only then
swaps the reference, so every request scores with one whole model, old or new.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from components.learn.bundle import Predictor
from components.serving.poller import Poller

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


@dataclass(frozen=True)
class ModelSource:
    uri: str | None = None  # an MLflow model URI
    path: str | None = None  # a bundle directory (or a downloaded MLflow model)
    tracking_uri: str | None = None

    def __post_init__(self):
        if bool(self.uri) == bool(self.path):
            raise ValueError("give exactly one of a model URI or a model path")

    @property
    def registered(self) -> tuple[str, str | None, str | None] | None:
        """(name, alias, version) for a models:/ URI, else None."""
        match = _MODELS_URI.match(self.uri or "")
        return (match["name"], match["alias"], match["version"]) if match else None

    @property
    def follows_alias(self) -> bool:
        reg = self.registered
        return bool(reg and reg[1])

    def describe(self) -> str:
        return self.uri or f"bundle {self.path}"


@dataclass
class LoadedModel:
    predictor: Predictor
    scorer: Predictor  # what answers predict_interval(columns): the predictor (a test may swap in a fault)
    name: str
    version: str
    alias: str
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)


def _client(source: ModelSource):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=source.tracking_uri, registry_uri=source.tracking_uri)


def resolve_version(source: ModelSource) -> str | None:
    """The registry version the source points at now (None for paths and runs:/ URIs)."""
    reg = source.registered
    if reg is None:
        return None
    name, alias, version = reg
    if version:
        return version
    return str(_client(source).get_model_version_by_alias(name, alias).version)


def load(source: ModelSource, version: str | None = None) -> LoadedModel:
    """Load the whole model: download (for URIs), bundle, compiled transform and its check."""
    started = time.perf_counter()
    if source.path:
        predictor = Predictor.load(source.path)
        name, alias = Path(source.path).resolve().name, ""
        version = str(predictor.metadata.get("model_version") or predictor.version)
    else:
        import mlflow.artifacts

        reg = source.registered
        if reg:
            name, alias = reg[0], reg[1] or ""
            version = version or resolve_version(source)
            # Resolve through our client: download_artifacts ignores its registry_uri for models:/ URIs.
            uri = _client(source).get_model_version_download_uri(name, version)
        else:
            uri, name, alias = source.uri, source.uri.split("/")[-1] or "model", ""
        tmp = tempfile.mkdtemp(prefix="servicetime-model-")
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                        tracking_uri=source.tracking_uri,
                                                        registry_uri=source.tracking_uri)
            predictor = Predictor.load(local)  # everything is read into memory here
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if version is None:
            version = predictor.version
    seconds = time.perf_counter() - started
    log.info("loaded %s version %s in %.2f s", name, version, seconds)
    return LoadedModel(predictor, predictor, name, str(version), alias, seconds)


class ModelHolder(Poller):
    """The current model, and a thread that (re)loads it.

    ``current`` is read once per request; assigning it is atomic, so there is no
    lock on the request path. The poller retries a failed first load every
    interval (the server answers from the fallback meanwhile) and, for an alias
    URI, reloads when the alias moves.
    """

    thread_name = "model-poller"

    def __init__(self, source: ModelSource, interval_s: float,
                 on_loaded: Callable[[LoadedModel], None] | None = None,
                 on_result: Callable[[bool], None] | None = None):
        super().__init__(interval_s)
        self.source = source
        self.on_loaded = on_loaded
        self.on_result = on_result
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.first_attempt = threading.Event()  # set after the first load attempt, whatever its result

    # -- one check ------------------------------------------------------------
    def check(self) -> bool:
        """Load when nothing is loaded or the alias moved; True when a new model was swapped in."""
        current = self.current
        try:
            if current is not None and not self.source.follows_alias:
                return False
            version = resolve_version(self.source)
            if current is not None and version == current.version:
                return False
            loaded = load(self.source, version)
        except Exception as exc:  # MLflow down, alias missing, broken bundle: keep serving what we have
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:  # once per distinct error, not once per interval
                log.warning("model load from %s failed (retrying every %.0f s): %s", self.source.describe(),
                            self.interval_s, error)
            self.last_error = error
            if self.on_result:
                self.on_result(False)
            return False
        finally:
            self.last_check = time.time()
            self.first_attempt.set()
        self.current = loaded  # the swap: one reference assignment
        self.last_error = None
        if current is not None:
            log.info("model reloaded: %s version %s -> %s", loaded.name, current.version, loaded.version)
        if self.on_result:
            self.on_result(True)
        if self.on_loaded:
            self.on_loaded(loaded)
        return True

    def done(self) -> bool:
        return self.current is not None and not self.source.follows_alias  # a fixed model: nothing to watch
