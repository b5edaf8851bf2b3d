"""deploy/kubernetes-policy-dir: the base serving a policy directory made of
one ConfigMap per team (docs/policy.md, "Kubernetes: one ConfigMap per team").

The overlay is rendered with ``kubectl kustomize``, every object is checked
against the Kubernetes schemas, and the projected volume is rebuilt the way
the kubelet lays it out (top-level symlinks into ``..data``), with keys where
the authz-keys Secret puts them: the directory must load, and decide as the
team files say.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main as authz_main
from testkit.paths import REPO
from tests.deploy.manifests import CRD_SCHEMAS, KUBERNETES_VERSIONS, crd_errors, kubernetes_errors
from tests.deploy.test_policy_configmap import Cluster

OVERLAY = REPO / "deploy" / "kubernetes-policy-dir"
MOUNT = "/etc/authz/policy"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None,
                                reason="kubectl (for `kubectl kustomize`) is not installed")


def render() -> list[dict[str, Any]]:
    run = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def projected_volume(root: Path, files: dict[str, str]) -> Path:
    """``files`` (paths with directories) laid out as the kubelet's AtomicWriter
    does: the payload in a timestamped directory, ``..data`` pointing at it,
    and one symlink per top-level entry."""
    payload = root / "..2026_01_01_00_00_00.000000001"
    for name, text in files.items():
        (payload / name).parent.mkdir(parents=True, exist_ok=True)
        (payload / name).write_text(text)
    (root / "..data").symlink_to(payload.name)
    for top in {name.split("/", 1)[0] for name in files}:
        (root / top).symlink_to(Path("..data") / top)
    return root


def test_the_overlay_renders_valid_objects_with_a_projected_policy_directory() -> None:
    docs = render()
    for body in docs:
        assert body["metadata"].get("namespace") == "authz" or body["kind"] == "Namespace"
        if (body["apiVersion"], body["kind"]) in CRD_SCHEMAS:  # a custom resource (cert-manager's Certificate)
            assert crd_errors(body) == [], (body["kind"], body["metadata"]["name"])
            continue
        for version in KUBERNETES_VERSIONS:
            assert kubernetes_errors(body, version) == [], (body["kind"], body["metadata"]["name"])
    pod = one(docs, "Deployment", "authz")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert f"--config={MOUNT}" in container["args"]
    assert not any(a.startswith("--config=") and a != f"--config={MOUNT}" for a in container["args"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "policy"]
    assert mount["mountPath"] == MOUNT and "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == "policy"]
    paths = [item["path"] for source in volume["projected"]["sources"] for item in source["configMap"]["items"]]
    assert paths == ["policy.yaml", "teams/payments.yaml", "teams/search.yaml"]
    for source in volume["projected"]["sources"]:
        config_map = one(docs, "ConfigMap", source["configMap"]["name"])
        assert {item["key"] for item in source["configMap"]["items"]} == set(config_map["data"])


def test_the_projected_directory_loads_and_each_team_decides_only_its_own(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    docs = render()
    root = Cluster(tmp_path / "etc-authz").root  # the keys, where the authz-keys Secret puts them
    (volume,) = [v for v in one(docs, "Deployment", "authz")["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "policy"]
    files = {item["path"]: one(docs, "ConfigMap", source["configMap"]["name"])["data"][item["key"]]
             for source in volume["projected"]["sources"] for item in source["configMap"]["items"]}
    directory = projected_volume(root / "policy-dir", files)
    assert authz_main(["validate", "--config", str(directory)]) == 0
    cases = tmp_path / "cases.yaml"
    cases.write_text(textwrap.dedent("""\
        cases:
          - name: search is public for reads
            request: {method: GET, path: /api/search/q}
            expect: {allowed: true, rule: search-public}
          - name: search's rule reaches nothing else
            request: {method: GET, path: /api/orders}
            expect: {allowed: false, status: 401}
          - name: a payments writer charges
            request: {method: POST, path: /api/payments/charges}
            token: {issuer: corp, claims: {sub: alice, groups: [payments-writer], amr: [pwd]}}
            expect: {allowed: true, rule: payments-writer}
          - name: refunds need MFA
            request: {method: POST, path: /api/payments/refunds}
            token: {issuer: corp, claims: {sub: alice, groups: [payments-writer], amr: [pwd]}}
            expect: {allowed: false, rule: payments-refunds-need-mfa}
          - name: the root's roles still hold
            request: {method: GET, path: /api/orders/1}
            token: {issuer: corp, claims: {sub: alice, groups: [orders-reader]}}
            expect: {allowed: true, rule: orders-reader}
        """))
    capsys.readouterr()
    assert authz_main(["test", "--config", str(directory), str(cases)]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.splitlines()[-1] == "5 passed, 0 failed"
