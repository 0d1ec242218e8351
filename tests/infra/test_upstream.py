"""Finding and fetching the pinned upstream trees (offline: archives are built here)."""

from __future__ import annotations

import io
import tarfile

import pytest

from components.render import upstream


def _archive(top: str, files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_extract_keeps_only_the_pinned_paths_and_the_license(tmp_path):
    tree = next(t for t in upstream.trees() if t.key == "kuberay")
    data = _archive(f"kuberay-{tree.commit}", {
        "LICENSE": "Apache-2.0",
        "ray-operator/config/default/kustomization.yaml": "namespace: default\n",
        "ray-operator/controllers/pod.go": "package ray\n",
        "docs/readme.md": "docs\n",
    })
    upstream._extract(data, tree, tmp_path)
    root = tmp_path / tree.folder
    assert (root / "LICENSE").read_text() == "Apache-2.0"
    assert (root / "ray-operator/config/default/kustomization.yaml").exists()
    assert not (root / "ray-operator/controllers").exists() and not (root / "docs").exists()
    assert tree.present(tmp_path)


def test_fetch_downloads_only_what_is_missing(tmp_path, monkeypatch):
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        tree = next(t for t in upstream.trees() if t.commit in url)
        files = {"LICENSE": "x", **{f"{p}/kustomization.yaml": "{}\n" for p in tree.paths}}
        return io.BytesIO(_archive(f"{tree.repo.split('/')[1]}-{tree.commit}", files))

    monkeypatch.setattr(upstream.urllib.request, "urlopen", urlopen)
    assert upstream.fetch(tmp_path) == tmp_path and upstream.missing(tmp_path) == []
    assert len(asked) == 3
    upstream.fetch(tmp_path)
    assert len(asked) == 3  # nothing fetched twice


def test_a_setting_that_lacks_trees_is_an_error_that_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv(upstream.ENV_VAR, str(tmp_path))
    with pytest.raises(upstream.UpstreamMissing, match="kubeflow-pipelines-2.17.0"):
        upstream.locate()


def test_trees_are_the_platform_pins():
    folders = {t.key: t.folder for t in upstream.trees()}
    assert folders == {"kfp": "kubeflow-pipelines-2.17.0", "argo": "argo-workflows-v4.0.5", "kuberay": "kuberay-v1.7.0"}
