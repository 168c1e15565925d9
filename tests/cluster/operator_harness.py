"""Running the real operator against the cluster tier's control plane, for its tests.

The operator runs as a child process (``.venv/bin/promptcache operator``) with the
control plane's kubeconfig. Its webhook listens on 127.0.0.1 with a CA and serving
certificate made here (the chart's generated certificate names the in-cluster Service,
which the API server cannot reach without kube-proxy), and it is registered with a
MutatingWebhookConfiguration taken from ``helm template`` of the chart -- the chart's
rules, selectors, failure policy and timeout -- with only ``clientConfig`` changed to
that URL and CA, and the namespace selector narrowed to namespaces labelled for the
running test module, so that the webhook never sits in other tests' admission path.
The injector config is the chart's ``<fullname>-injector`` ConfigMap, so these tests also
hold the chart and the operator to the same contract.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cluster.controlplane import (
    REPO_ROOT,
    ControlPlane,
    free_ports,
    tail_text,
    terminate,
)
from tests.cluster.pki import cert_pem, issue, key_pem, make_ca, validity, write

CHART = REPO_ROOT / "charts" / "promptcache"
CRD_FILE = CHART / "crds" / "promptpolicies.promptcache.io.yaml"
PROMPTCACHE = Path(sys.executable).parent / "promptcache"
RELEASE = "promptcache"
OPERATOR_NAMESPACE = "promptcache-system"
POLL = 0.25

T = TypeVar("T")
Obj = dict[str, Any]


class Timeout(AssertionError):  # noqa: N818 - reads as "assert ... within"
    """A bounded wait ran out."""


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL)
    raise Timeout(f"no {what} within {timeout:.0f}s (last: {last!r})")


def get_json(cp: ControlPlane, *args: str) -> Obj:
    data: Obj = json.loads(cp.kubectl("get", *args, "-o", "json").stdout)
    return data


def get_or_none(cp: ControlPlane, *args: str) -> Obj | None:
    proc = cp.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)}: {proc.stderr}")
    data: Obj = json.loads(proc.stdout)
    return data


def apply(cp: ControlPlane, obj: Obj | list[Obj]) -> None:
    items = obj if isinstance(obj, list) else [obj]
    cp.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def apply_crd(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cp.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s",
        "crd/promptpolicies.promptcache.io",
    )  # fmt: skip


# ---------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class WebhookPki:
    """``ca.crt``, ``tls.crt``, ``tls.key`` in ``directory`` (the chart's file names)."""

    directory: Path
    ca_pem: bytes


def make_webhook_pki(directory: Path) -> WebhookPki:
    """A CA and a serving certificate for 127.0.0.1, as the operator's cert dir."""
    directory.mkdir(parents=True, exist_ok=True)
    valid = validity(back=datetime.timedelta(minutes=5), ahead=datetime.timedelta(days=1))
    ca = make_ca("promptcache-test-ca", valid=valid)
    cert, key = issue(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        valid=valid,
        sans=[x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
    )
    ca_pem = cert_pem(ca[0])
    write(directory / "ca.crt", ca_pem)
    write(directory / "tls.crt", cert_pem(cert))
    write(directory / "tls.key", key_pem(key), private=True)
    return WebhookPki(directory, ca_pem)


# ---------------------------------------------------------------------- the chart's parts


def chart_manifests(cp: ControlPlane, *, set_values: Sequence[str] = ()) -> list[Obj]:
    args = ["template", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE]
    for value in set_values:
        args += ["--set", value]
    out = cp.helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def chart_injector_config(docs: list[Obj]) -> Obj:
    (cm,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-injector")
    ]
    config: Obj = yaml.safe_load(cm["data"]["config.yaml"])
    return config


def chart_webhook_configuration(
    docs: list[Obj], *, name: str, url: str, ca_pem: bytes, namespace_label: tuple[str, str]
) -> Obj:
    """The chart's MutatingWebhookConfiguration, pointed at ``url`` and our namespaces."""
    (chart_mwc,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    mwc: Obj = json.loads(json.dumps(chart_mwc))
    mwc["metadata"] = {"name": name}
    for hook in mwc["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
        selector = hook.setdefault("namespaceSelector", {})
        selector.setdefault("matchLabels", {})[namespace_label[0]] = namespace_label[1]
    return mwc


def chart_service_account_kubeconfig(cp: ControlPlane, docs: list[Obj], path: Path) -> Path:
    """Apply the chart's ServiceAccount and RBAC; a kubeconfig with that account's token.

    The operator then runs with exactly the chart's least-privilege ClusterRole, so a
    missing rule fails these tests instead of a production rollout.
    """
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    rbac = [d for d in docs if d["kind"] in kinds]
    apply(cp, rbac)
    (sa,) = [d for d in rbac if d["kind"] == "ServiceAccount"]
    token = cp.kubectl(
        "create", "token", sa["metadata"]["name"], "-n", sa["metadata"]["namespace"],
        "--duration", "2h",
    ).stdout.strip()  # fmt: skip
    admin = json.loads(cp.kubeconfig.read_text())
    config = {
        **admin,
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------- the operator


class OperatorProcess:
    """``promptcache operator`` (standalone, or peering) as a child process, logging to a file."""

    def __init__(
        self,
        cp: ControlPlane,
        work_dir: Path,
        *,
        injector_config: Obj,
        pki: WebhookPki,
        peering: str | None = None,
        kubeconfig: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.cp = cp
        self.work_dir = work_dir
        self.pki = pki
        self.port, self.liveness_port, self.metrics_port = free_ports(3)
        self.config_path = work_dir / "injector-config.yaml"
        self.config_path.write_text(yaml.safe_dump(injector_config))
        self.log_path = work_dir / "operator.log"
        self.mode_args = ["--peering", peering] if peering else ["--standalone"]
        self.kubeconfig = kubeconfig or cp.kubeconfig
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/inject"

    def start(self, *, timeout: float = 60.0) -> None:
        args = [
            str(PROMPTCACHE), "operator", *self.mode_args,
            "--injector-config", str(self.config_path),
            "--namespace", OPERATOR_NAMESPACE,
            "--webhook-addr", "127.0.0.1",
            "--webhook-port", str(self.port),
            "--webhook-cert-dir", str(self.pki.directory),
            "--liveness-port", str(self.liveness_port),
            "--metrics-port", str(self.metrics_port),
            "--metrics-addr", "127.0.0.1",
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        env = {k: v for k, v in self.cp.env().items() if not k.startswith("POD_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for(self._serving, timeout=timeout, what="operator webhook answering")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\noperator log:\n{self.log_tail()}") from exc

    def _serving(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            response = self.review(
                {"metadata": {"name": "probe", "namespace": "default"}, "spec": {}}
            )
        except (OSError, urllib.error.URLError):
            return False
        return bool(response.get("response", {}).get("allowed"))

    def review(self, pod: Obj, *, namespace: str = "default") -> Obj:
        """POST one AdmissionReview for a pod CREATE straight to the webhook."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "test"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
            },
        }
        ctx = ssl.create_default_context(cadata=self.pki.ca_pem.decode())
        req = urllib.request.Request(
            self.url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as rsp:
            data: Obj = json.loads(rsp.read())
        return data

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the operator's ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as rsp:
            text = rsp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        key = f"{name}{{{want}}}" if want else name
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == key:
                return float(value)
        return 0.0

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5
            ) as rsp:
                return int(rsp.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 20.0)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return tail_text(self.log_text(), lines)


@dataclass
class InjectionSetup:
    """A running operator, its webhook registered, and the label that routes to it."""

    cp: ControlPlane
    operator: OperatorProcess
    webhook_name: str
    namespace_label: tuple[str, str]

    def namespace(self, prefix: str, *, labels: dict[str, str] | None = None) -> str:
        """A fresh namespace that this module's webhook sees."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {self.namespace_label[0]: self.namespace_label[1], **(labels or {})},
            },
        }
        apply(self.cp, obj)
        return name


@contextmanager
def injection(
    cp: ControlPlane,
    work_dir: Path,
    *,
    extra_excluded: Sequence[str] = (),
    set_values: Sequence[str] = (),
    operator_args: Sequence[str] = (),
) -> Iterator[InjectionSetup]:
    """Apply the CRD, start the operator with the chart's config and RBAC, register its
    webhook; afterwards stop the operator and delete the webhook and the namespaces."""
    apply_crd(cp)
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    docs = chart_manifests(cp, set_values=set_values)
    config = chart_injector_config(docs)
    config["excludeNamespaces"] = [*config.get("excludeNamespaces", []), *extra_excluded]
    pki = make_webhook_pki(work_dir / "webhook-certs")
    kubeconfig = chart_service_account_kubeconfig(cp, docs, work_dir / "operator.kubeconfig")
    operator = OperatorProcess(
        cp,
        work_dir,
        injector_config=config,
        pki=pki,
        kubeconfig=kubeconfig,
        extra_args=operator_args,
    )
    operator.start()
    label = ("promptcache-test-webhook", uuid.uuid4().hex[:10])
    name = f"promptcache-test-{label[1]}"
    mwc = chart_webhook_configuration(
        docs, name=name, url=operator.url, ca_pem=pki.ca_pem, namespace_label=label
    )
    try:
        apply(cp, mwc)
        yield InjectionSetup(cp, operator, name, label)
    finally:
        operator.stop()
        cp.kubectl("delete", "mutatingwebhookconfiguration", name, check=False)
        for ns in get_json(cp, "namespaces", "-l", f"{label[0]}={label[1]}")["items"]:
            cp.kubectl("delete", "namespace", ns["metadata"]["name"], "--wait=false", check=False)


# ---------------------------------------------------------------------- objects


def prompt_policy(name: str, namespace: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "promptcache.io/v1alpha1",
        "kind": "PromptPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def config_map(name: str, namespace: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def condition(obj: Obj | None, kind: str) -> Obj:
    """The ``kind`` entry of ``obj``'s status conditions; ``{}`` when there is none."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            found: Obj = c
            return found
    return {}


def wait_condition(
    cp: ControlPlane,
    namespace: str,
    name: str,
    kind: str,
    *,
    what: str,
    timeout: float = 30.0,
    **expected: str,
) -> Obj:
    """The PromptPolicy ``name`` once its ``kind`` condition has the ``expected`` fields
    (``status="True"``, ``reason=...``)."""

    def probe() -> Obj | None:
        obj = get_or_none(cp, "promptpolicy", "-n", namespace, name)
        found = condition(obj, kind)
        return obj if all(found.get(k) == v for k, v in expected.items()) else None

    return wait_for(probe, timeout=timeout, what=what)


def pods_of(cp: ControlPlane, namespace: str, selector: str) -> list[Obj]:
    items: list[Obj] = get_json(cp, "pods", "-n", namespace, "-l", selector)["items"]
    return items


def events_for(cp: ControlPlane, namespace: str, name: str) -> list[Obj]:
    items: list[Obj] = get_json(
        cp, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items
