"""``helm install``, ``upgrade`` and ``uninstall`` of the chart against the real API server.

There is no kubelet, so the operator's pods stay Pending and nothing answers the
webhook: these tests check what Helm and the API server do with the chart -- the
objects exist, the webhook configuration trusts the CA in the generated Secret, an
upgrade keeps that CA (the ``lookup`` pattern), and with ``failurePolicy: Ignore`` pods
are still created while the webhook is unreachable. The operator's own behaviour is
tested elsewhere, with the operator running.

The installed webhook is narrowed to pods labelled ``promptcache-chart-test: "true"``
so that it never sits in the admission path of other tests sharing the control plane.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.cluster.chart_support import CHART
from tests.cluster.controlplane import ControlPlane

TEST_LABEL = "promptcache-chart-test"


@dataclass(frozen=True)
class Release:
    cp: ControlPlane
    name: str
    namespace: str
    values: Path

    @property
    def fullname(self) -> str:
        return f"{self.name}-promptcache"

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cp.kubectl("get", *args, "-o", "json").stdout)
        return data

    def secret(self) -> dict[str, str]:
        name = f"{self.fullname}-webhook-tls"
        data: dict[str, str] = self.get("secret", "-n", self.namespace, name)["data"]
        return data

    def ca_bundle(self) -> str:
        mwc = self.get("mutatingwebhookconfiguration", self.fullname)
        bundle: str = mwc["webhooks"][0]["clientConfig"].get("caBundle", "")
        return bundle

    def upgrade(self, *args: str) -> None:
        self.cp.helm(
            "upgrade", self.name, str(CHART), "-n", self.namespace, "-f", str(self.values), *args
        )


def _install(cp: ControlPlane, tmp_path: Path, name: str) -> Release:
    namespace = f"{name}-{uuid.uuid4().hex[:6]}"
    values = tmp_path / f"{name}-values.yaml"
    values.write_text(
        yaml.safe_dump({"webhook": {"objectSelector": {"matchLabels": {TEST_LABEL: "true"}}}})
    )
    cp.helm("install", name, str(CHART), "-n", namespace, "--create-namespace", "-f", str(values))
    return Release(cp, name, namespace, values)


def _uninstall(release: Release) -> None:
    release.cp.helm("uninstall", release.name, "-n", release.namespace, check=False)
    release.cp.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    rel = _install(control_plane, tmp_path_factory.mktemp("chart"), "pc-chart")
    try:
        yield rel
    finally:
        _uninstall(rel)


def test_install_creates_every_object(release: Release) -> None:
    ns, full = release.namespace, release.fullname
    status = json.loads(release.cp.helm("status", release.name, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deployment = release.get("deployment", "-n", ns, full)
    assert deployment["spec"]["replicas"] == 2
    for args in (
        ("serviceaccount", "-n", ns, full),
        ("service", "-n", ns, f"{full}-webhook"),
        ("configmap", "-n", ns, f"{full}-injector"),
        ("poddisruptionbudget", "-n", ns, full),
        ("clusterrole", full),
        ("clusterrolebinding", full),
        ("clusterkopfpeering", full),
        ("crd", "clusterkopfpeerings.kopf.dev"),
    ):
        assert release.get(*args)["metadata"]["name"] == args[-1]
    # the controller-manager turns the Deployment into Pending pods (no kubelet here)
    selector = "app.kubernetes.io/component=operator,app.kubernetes.io/instance=" + release.name
    rs = release.get("replicasets", "-n", ns, "-l", selector)["items"]
    assert rs, "the Deployment got no ReplicaSet"


def _pems(b64: str) -> list[str]:
    text = base64.b64decode(b64).decode()
    return [
        p + "-----END CERTIFICATE-----\n" for p in text.split("-----END CERTIFICATE-----\n") if p
    ]


def test_webhook_trusts_the_generated_ca(release: Release) -> None:
    secret = release.secret()
    assert _pems(release.ca_bundle()) == _pems(secret["ca.crt"])
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = f"{release.fullname}-webhook.{release.namespace}.svc"
    assert expected in sans.get_values_for_type(x509.DNSName)


def test_upgrade_keeps_the_certificates(release: Release) -> None:
    before = release.secret()
    release.upgrade("--set", "operator.logLevel=debug")
    deployment = release.get("deployment", "-n", release.namespace, release.fullname)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--log-level") + 1] == "debug"  # the upgrade did apply
    after = release.secret()
    assert after == before
    assert _pems(before["ca.crt"])[0] in _pems(release.ca_bundle())


def test_upgrade_regenerates_a_deleted_secret(release: Release) -> None:
    old_ca = release.secret()["ca.crt"]
    release.cp.kubectl(
        "delete", "secret", "-n", release.namespace, f"{release.fullname}-webhook-tls"
    )
    release.upgrade()
    new = release.secret()
    assert new["ca.crt"] != old_ca
    assert release.ca_bundle() == new["ca.crt"]


def _annotate_secret(release: Release, **annotations: str) -> None:
    name = f"{release.fullname}-webhook-tls"
    pairs = [f"promptcache.io/{k.replace('_', '-')}={v}" for k, v in annotations.items()]
    release.cp.kubectl("annotate", "secret", "-n", release.namespace, name, "--overwrite", *pairs)


@pytest.mark.parametrize(
    "reason",
    ["expires soon", "names changed"],
)
def test_upgrade_rotates_a_certificate_near_expiry_or_with_stale_names(
    release: Release, reason: str
) -> None:
    old = release.secret()
    if reason == "expires soon":  # inside renewBeforeDays (30)
        soon = int(datetime.datetime.now(datetime.UTC).timestamp()) + 86400
        _annotate_secret(release, not_after=str(soon))
    else:  # a Secret made for another Service name
        _annotate_secret(release, sans="old-name.elsewhere.svc")
    release.upgrade()
    new = release.secret()
    assert new["tls.crt"] != old["tls.crt"]
    assert new["ca.crt"] != old["ca.crt"]
    # The API server trusts the new CA and, until the operator pods reload, the old one.
    bundle = _pems(release.ca_bundle())
    assert bundle == [*_pems(new["ca.crt"]), *_pems(old["ca.crt"])]
    assert new["previous-ca.crt"] == old["ca.crt"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(new["tls.crt"]))
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert lifetime > datetime.timedelta(days=3600)
    # and the next upgrade keeps the fresh material
    release.upgrade()
    assert release.secret() == new


def test_pods_are_created_while_the_webhook_is_unreachable(release: Release) -> None:
    cp = release.cp
    ns = f"pc-app-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "namespace": ns,
            "labels": {TEST_LABEL: "true"},
            "annotations": {"promptcache.io/inject": "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    try:
        cp.kubectl("create", "-f", "-", input=json.dumps(pod))
        created = release.get("pod", "-n", ns, "app")
        assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
        # the API server did call the chart's webhook, and failed open
        log = cp.logs["kube-apiserver"].read_text(errors="replace")
        assert "failing open inject.promptcache.io" in log
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_uninstall_removes_the_release(control_plane: ControlPlane, tmp_path: Path) -> None:
    rel = _install(control_plane, tmp_path, "pc-gone")
    try:
        assert rel.get("mutatingwebhookconfiguration", rel.fullname)
        control_plane.helm("uninstall", rel.name, "-n", rel.namespace, "--wait")
        for args in (
            ("mutatingwebhookconfiguration", rel.fullname),
            ("clusterrole", rel.fullname),
            ("clusterkopfpeering", rel.fullname),
            ("deployment", "-n", rel.namespace, rel.fullname),
            ("secret", "-n", rel.namespace, f"{rel.fullname}-webhook-tls"),
        ):
            proc = control_plane.kubectl("get", *args, check=False)
            assert proc.returncode != 0, args
            assert "NotFound" in proc.stderr, args
        # Helm never deletes CRDs from crds/: PromptPolicies must outlive an uninstall
        assert rel.get("crd", "clusterkopfpeerings.kopf.dev")
    finally:
        _uninstall(rel)
