"""The chaos scenarios' shared parts: what a scenario is and returns, and the preparation
several of them need (simulated data, features, a registered champion)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.core.config import Config

S3_FAIL_WITHIN_S = 90.0


# --- the table ---------------------------------------------------------------------------

PAPER_KINDS = ("ML-specific", "distributed systems")  # the paper's two kinds, as the lecture names them
QUALITIES = ("velocity", "validation", "versioning")  # the lecture's three Vs
LECTURE_AREAS = ("scale", "data", "privacy, fairness, interpretability", "system type", "objective")


@dataclass(frozen=True)
class Check:
    what: str
    passed: bool
    evidence: str


@dataclass
class Context:
    """What a scenario gets: its config (workspace = a fresh temporary folder) and a way to narrate."""

    cfg: Config
    workspace: Path

    def say(self, text: str) -> None:
        print(f"  . {text}", flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    breaks: str  # what is broken on purpose
    expected: str  # what the system promises instead
    lecture: str  # the lecture's production difference it belongs to (LECTURE_AREAS)
    quality: str  # which of the three Vs catches it (QUALITIES)
    paper: str  # the paper's kind, as the lecture names it (PAPER_KINDS)
    minutes_tiny: float  # rough wall time on the tiny config, two shared cores
    run: Callable[[Context], list[Check]] = field(repr=False, compare=False)


@dataclass
class Outcome:
    scenario: str
    expected: str
    checks: list[Check]
    seconds: float
    workspace: str | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "expected": self.expected, "passed": self.passed,
                "seconds": round(self.seconds, 1), "workspace": self.workspace,
                "checks": [asdict(c) for c in self.checks], "log_tail": self.log_tail}


# --- shared preparation ------------------------------------------------------------------


def quick_config(cfg: Config, epochs: int = 3) -> Config:
    """A champion is a means here, not the subject: in-process training, a few epochs."""
    train = cfg.train.model_copy(update={"num_workers": 0, "epochs": min(cfg.train.epochs, epochs), "use_tuned": False})
    return cfg.model_copy(update={"train": train})


def simulated_raw(ctx: Context) -> str:
    from components.steps.ingest import generate_raw

    root = str(ctx.workspace / "data")
    names = generate_raw(ctx.cfg.data, root)
    ctx.say(f"simulated {len(names)} weekly batches under {root}/raw")
    return root


def prepared_features(ctx: Context) -> Path:
    """Data through the pipeline's own steps up to the features (clean weeks only)."""
    from components.steps.featurize import featurize
    from components.steps.ingest import ingest
    from components.steps.validate import CLEAN_FILE, validate_dataset

    root = simulated_raw(ctx)
    steps = ctx.workspace / "steps"
    version = ingest(root, steps / "ingest").data_version
    validate_dataset(ctx.cfg, root, version, steps / "validate", fail_on_rejected=False)
    featurize(ctx.cfg, steps / "validate" / CLEAN_FILE, steps / "features")
    return steps / "features"


@dataclass(frozen=True)
class Champion:
    cfg: Config
    features: Path
    name: str
    version: str
    bundle: Path


def registered_champion(ctx: Context) -> Champion:
    """A trained, registered model with the champion alias on it (the workspace's own MLflow)."""
    from components.steps.register import promote_step
    from components.steps.train import train_step

    cfg = quick_config(ctx.cfg)
    features = prepared_features(ctx)
    trained = train_step(cfg, features, ctx.workspace / "steps" / "model-v1", "chaos")
    promote_step(cfg, trained.model_version)
    ctx.say(f"champion: {trained.model_name} version {trained.model_version}")
    return Champion(cfg, features, trained.model_name, trained.model_version, Path(trained.bundle))


def stored_files(cfg: Config, name: str, version: str) -> Path:
    """The folder where the registry keeps a version's files (local artifact store)."""
    from mlflow import MlflowClient

    from components.core.storage import local_path
    from components.learn import tracking

    tracking.setup(cfg)
    uri = MlflowClient().get_model_version_download_uri(name, version)
    if not uri.startswith(("file:", "/")):
        raise RuntimeError(f"version {version}'s files are not on local disk ({uri})")
    return local_path(uri)
