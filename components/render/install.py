"""The whole cluster install as one list of objects, rendered offline from the pinned trees.

``render_install(root)`` is what ``infra/bootstrap.sh`` applies and what the
system tests check: KFP 2.17.0 (cluster-scoped part, then the namespaced
``env/platform-agnostic`` with our object-store patches), the Argo Workflows that
KFP's ``third-party/argo`` names by remote URL (mapped to the local Argo tree),
the KubeRay operator rendered into the namespace the code uses (upstream says
``default``), and our overlay. With ``samples=True`` it adds what pipeline pods
create at run time, built by the same code: a training RayJob and the canary
Deployment (annotated, so the bootstrap leaves them out).

    servicetime cluster render --upstream DIR --out all.yaml
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from components.cluster import podspec
from components.core.platform import platform
from components.render import cluster as render
from components.render import egress, state, upstream
from components.render.kfp_patches import kfp_patches, kfp_resources

SAMPLE_ANNOTATION = "servicetime.io/sample"
KFP_CLUSTER_SCOPED = "cluster-scoped-resources"
KFP_ENV = "env/platform-agnostic"
KUBERAY_DEFAULT = "default"
ARGO_REMOTE = re.compile(r"https://github\.com/argoproj/argo-workflows/manifests/(?P<path>[\w/.-]+)\?ref=(?P<ref>[\w.]+)\S*")
# Cluster-scoped kinds go first so that what is namespaced finds its namespace and CRD.
FIRST = ("Namespace", "CustomResourceDefinition")


def _copy(root: Path, work: Path) -> dict[str, Path]:
    """Each pinned tree copied under work/<key>, so kustomize may rewrite nothing upstream."""
    dirs = {}
    for tree in upstream.trees():
        dest = work / tree.key
        for sub in tree.paths:
            shutil.copytree(root / tree.folder / sub, dest / sub, symlinks=True)
        dirs[tree.key] = dest
    return dirs


def localize_argo_refs(kfp_dir: Path, argo_dir: Path) -> int:
    """Point KFP's remote Argo resources at the local Argo tree; returns how many were mapped."""
    want = platform().versions.argo
    count = 0
    for kfile in kfp_dir.rglob("kustomization.yaml"):
        text = kfile.read_text()

        def local(match: re.Match) -> str:
            nonlocal count
            if match["ref"] != want:
                raise ValueError(f"{kfile}: Argo ref {match['ref']} is not the pinned {want}")
            count += 1
            target = argo_dir / "manifests" / match["path"]
            if not target.is_dir():
                raise FileNotFoundError(f"{kfile} names Argo's {match['path']}, absent from the pinned tree")
            return _relpath(target, kfile.parent)

        new = ARGO_REMOTE.sub(local, text)
        if new != text:
            kfile.write_text(new)
    return count


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def _kustomization(**fields) -> dict:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def _write(folder: Path, files: dict[str, dict | list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        (folder / name).write_text(render.dump(*obj) if isinstance(obj, list) else render.dump(obj))
    return folder


def kfp_kustomization(kfp_dir: Path, out: Path) -> Path:
    """KFP's namespaced install with our patches (its own SeaweedFS stays; objects go to our MinIO)."""
    patches, extra = kfp_patches(), {**kfp_resources(), "egress.yaml": egress.kfp_policies()}
    ns = platform().namespaces.kfp
    files: dict = {**patches, **extra}
    files["kustomization.yaml"] = _kustomization(
        namespace=ns,
        resources=[_relpath(kfp_dir / KFP_ENV, out), *extra],
        patches=[{"path": name} for name in patches],
    )
    return _write(out, files)


def kuberay_kustomization(kuberay_dir: Path, out: Path) -> Path:
    """KubeRay's default install, in our KubeRay namespace, with that Namespace object."""
    p = platform()
    ns = p.namespaces.kuberay
    return _write(out, {
        "namespace.yaml": render.namespace_object(ns, enforce="restricted"),
        "egress.yaml": egress.kuberay_policies(),
        "kustomization.yaml": _kustomization(
            namespace=ns,
            resources=["namespace.yaml", "egress.yaml", _relpath(kuberay_dir / KUBERAY_DEFAULT, out)],
            # Upstream's default kustomization names a moving tag on branches; pin it.
            images=[{"name": "quay.io/kuberay/operator", "newTag": p.versions.kuberay}],
        ),
    })


def samples() -> list[dict]:
    """What pipeline pods create at run time, from the code they run (not applied by the bootstrap)."""
    from components.cluster import deploy, train_job
    from components.core.config import load_config

    cfg = load_config(None, {"train.backend": "kuberay", "deploy.backend": "kubernetes"})
    run_name = "sample-run"
    uris = {"features": f"s3://{platform().buckets.artifacts}/train-inputs/{run_name}",
            "config": f"s3://{platform().buckets.artifacts}/train-inputs/{run_name}/config.json",
            "out": f"s3://{platform().buckets.artifacts}/train-inputs/{run_name}/result"}
    ns = platform().namespace
    objects = [train_job.rayjob_for(cfg, uris, run_name), deploy.build_canary(f"models:/{platform().model_name}/1",
                                                                              platform().image.ref)]
    for obj in objects:
        obj["metadata"].setdefault("namespace", ns)
        obj["metadata"].setdefault("annotations", {})[SAMPLE_ANNOTATION] = "true"
    return objects


def is_first(obj: dict) -> bool:
    """Applied in the first pass: Namespaces, CRDs, and what must finish before the rest starts."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return obj["kind"] in FIRST or annotations.get(state.PHASE_ANNOTATION) == "first"


def order(objects: list[dict]) -> list[dict]:
    rank = {kind: i for i, kind in enumerate(FIRST)}
    return sorted(objects, key=lambda o: rank.get(o["kind"], len(FIRST) + (0 if is_first(o) else 1)))


def render_install(root: Path | None = None, overlay: str | Path = render.DEFAULT_OVERLAY,
                   with_samples: bool = True) -> list[dict]:
    """Every object of the install, cluster-scoped first; ``root`` holds the pinned trees."""
    root = root or upstream.locate()
    if upstream.missing(root):
        raise upstream.UpstreamMissing(f"{root} lacks {', '.join(upstream.missing(root))}")
    with tempfile.TemporaryDirectory(prefix="servicetime-render-") as tmp:
        work = Path(tmp)
        dirs = _copy(root, work)
        kfp_dir = dirs["kfp"] / "manifests" / "kustomize"
        localize_argo_refs(kfp_dir, dirs["argo"])
        objects = render.kustomize(kfp_dir / KFP_CLUSTER_SCOPED)
        objects += render.kustomize(kfp_kustomization(kfp_dir, work / "install" / "kfp"))
        objects += render.kustomize(kuberay_kustomization(dirs["kuberay"] / "ray-operator" / "config",
                                                          work / "install" / "kuberay"))
    objects = state.persist(objects + render.render(overlay))
    if with_samples:
        objects += samples()
    return order(objects)


def is_sample(obj: dict) -> bool:
    return (obj.get("metadata", {}).get("annotations") or {}).get(SAMPLE_ANNOTATION) == "true"


def secret_names() -> dict[str, list[str]]:
    """Secrets the install expects the bootstrap to create (never rendered, never committed)."""
    from components.cluster import s3_users

    s3 = [u.secret for u in s3_users.users().values()]
    return {platform().namespace: [*s3, "minio-root", "postgres-credentials", "grafana-admin",
                                   podspec.MLFLOW_AUTH_SECRET, podspec.API_TOKEN_SECRET, podspec.KEY_SALT_SECRET],
            platform().namespaces.kfp: [podspec.S3_SECRET, podspec.MLFLOW_AUTH_SECRET, podspec.KEY_SALT_SECRET]}


def write(path: Path, objects: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render.dump(*objects))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m components.render.install``: the bootstrap's entry (no console script needed)."""
    import argparse

    parser = argparse.ArgumentParser(description="Render the whole cluster install as one YAML.")
    add_render_arguments(parser)
    return run_render(parser.parse_args(argv))


def add_render_arguments(parser) -> None:
    parser.add_argument("--upstream", type=Path, help=f"folder with the pinned trees (default: ${upstream.ENV_VAR}, "
                                                      "else the cache, fetched on first use)")
    parser.add_argument("--out", type=Path, required=True, help="the multi-document YAML to write")
    parser.add_argument("--overlay", default=render.DEFAULT_OVERLAY, help="overlay under k8s/overlays, or a folder")
    parser.add_argument("--no-samples", action="store_true",
                        help="leave out the sample RayJob and canary (what the bootstrap applies)")
    parser.add_argument(
        "--crds-out", type=Path, help="also write the first pass alone here: Namespaces, CRDs, the state folders' Job"
    )


def run_render(args) -> int:
    objects = render_install(args.upstream, args.overlay, with_samples=not args.no_samples)
    write(args.out, objects)
    if args.crds_out:
        write(args.crds_out, [o for o in objects if is_first(o)])
    kinds = sorted({o["kind"] for o in objects})
    print(f"{len(objects)} objects ({len(kinds)} kinds) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
