"""A real Kubernetes control plane on loopback, for the cluster test tier.

Why this exists: the operator, the mutating webhook and the Helm chart only prove
themselves against a real API server (admission chains, RBAC, CRD schemas, server-side
apply, Deployment -> ReplicaSet -> Pod). The machines we test on have no Docker, so kind,
k3d and minikube are out. Instead this module runs the same three processes a cluster's
control plane is made of, as plain child processes bound to 127.0.0.1:

* ``etcd`` (``--unsafe-no-fsync``: test data need not survive a crash),
* ``kube-apiserver`` with envtest's flags (client-certificate users, RBAC, the
  ServiceAccount admission plugin off so pods need no token volume),
* ``kube-controller-manager`` so that workload controllers run: a Deployment gets a
  ReplicaSet and Pods. There is no scheduler and no kubelet, so Pods stay ``Pending`` --
  but they are created through the admission chain, which is what webhook tests need.

The binaries are compiled from the Go module proxy by ``hack/kubebin/build.sh`` into a
per-machine cache; :func:`ensure_binaries` runs it (a no-op once built). All certificates
and keys are generated per run (``tests.cluster.pki``); the admin user is ``CN=admin,
O=system:masters``. Each process logs to a file in the work directory, and a startup
failure raises :class:`ControlPlaneError` quoting the tail of the relevant log. Its
process helpers (free ports, terminate, log tails) serve the operator harness too.

Typical use::

    with ControlPlane(ensure_binaries(), tmp_path) as cp:
        cp.kubectl("get", "ns")
"""

from __future__ import annotations

import atexit
import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from promptcache.demo.services import free_ports
from tests.cluster.pki import cert_pem, issue, key_pem, make_ca, validity, write

__all__ = [
    "BUILD_SCRIPT",
    "REPO_ROOT",
    "BinariesUnavailableError",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "ensure_binaries",
    "free_ports",
    "tail_text",
    "terminate",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Root of the repository (this file is ``tests/cluster/controlplane.py``)."""

BUILD_SCRIPT = REPO_ROOT / "hack" / "kubebin" / "build.sh"
"""The script that builds the pinned binaries and prints their directory last."""

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm")

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"

# Controllers that only make sense with a cloud provider; everything else runs.
CONTROLLERS = "*,-service-lb-controller,-node-route-controller,-cloud-node-lifecycle-controller"

LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or become ready."""


class BinariesUnavailableError(RuntimeError):
    """``hack/kubebin/build.sh`` could not produce the binaries (no Go, build failure...)."""


class KubectlError(subprocess.CalledProcessError):
    """A ``kubectl``/``helm`` call exited non-zero; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(c) for c in self.cmd) if isinstance(self.cmd, list) else str(self.cmd)
        return f"{cmd!r} exited {self.returncode}:\n{self.stderr or ''}{self.stdout or ''}".rstrip()


def ensure_binaries(timeout: float = 3600.0) -> Path:
    """Build (once per machine) and return the directory holding the control-plane binaries.

    Runs :data:`BUILD_SCRIPT`, which exits at once when its cache is complete and otherwise
    compiles kube-apiserver, kube-controller-manager, etcd and helm (10-20 minutes on two
    cores the first time). Raises :class:`BinariesUnavailableError` with the script's last
    lines of output if it fails (for example, when Go is not installed).
    """
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BinariesUnavailableError(f"{BUILD_SCRIPT} did not finish in {timeout:.0f}s") from exc
    except OSError as exc:
        raise BinariesUnavailableError(f"cannot run {BUILD_SCRIPT}: {exc}") from exc
    if proc.returncode != 0:
        output = tail_text(proc.stderr + proc.stdout, LOG_TAIL_LINES)
        raise BinariesUnavailableError(f"{BUILD_SCRIPT} exited {proc.returncode}:\n{output}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BinariesUnavailableError(f"{BUILD_SCRIPT} printed no bin dir")
    bin_dir = Path(lines[-1])
    missing = [name for name in REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise BinariesUnavailableError(f"{bin_dir} lacks {', '.join(missing)}")
    return bin_dir


@dataclass(frozen=True)
class _Pki:
    """Paths of the generated certificates and keys (all PEM)."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, as child processes.

    ``ControlPlane(bin_dir, work_dir)`` prepares nothing until :meth:`start` (or ``with``).
    After start, :attr:`server`, :attr:`kubeconfig` and :attr:`ca_pem` describe how to reach
    the API server as the ``system:masters`` user ``admin``. :meth:`stop` always tears down
    whatever was started, and is idempotent.
    """

    def __init__(
        self,
        bin_dir: Path,
        work_dir: Path,
        *,
        kubectl_path: str | None = None,
        startup_timeout: float = 120.0,
        stop_grace: float = 5.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self.work_dir = Path(work_dir)
        self.kubectl_path = kubectl_path or shutil.which("kubectl") or "kubectl"
        self.helm_path = self.bin_dir / "helm"
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.extra_apiserver_args = tuple(extra_apiserver_args)

        self.kubeconfig = self.work_dir / "kubeconfig"
        self.server = ""
        self.ca_pem = b""
        self.etcd_url = ""

        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._log_files: list[IO[bytes]] = []
        self._pki: _Pki | None = None
        self._atexit_registered = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ControlPlane(server={self.server!r}, pids={self.pids})"

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the started components, by name (``etcd``, ``kube-apiserver``...)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each started component, by name."""
        return dict(self._logs)

    def start(self) -> Self:
        """Generate the PKI, start the three processes and wait until each is ready.

        On any failure everything already started is stopped before the error propagates.
        """
        if self._procs:
            raise RuntimeError("ControlPlane already started")
        missing = [
            name
            for name in ("etcd", "kube-apiserver", "kube-controller-manager")
            if not os.access(self.bin_dir / name, os.X_OK)
        ]
        if missing:
            raise ControlPlaneError(f"{self.bin_dir} lacks {', '.join(missing)}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            etcd_client, etcd_peer, apiserver_port, kcm_port = free_ports(4)
            self._pki = self._write_pki()
            self.ca_pem = self._pki.ca_cert.read_bytes()
            self.server = f"https://127.0.0.1:{apiserver_port}"
            self._write_kubeconfig()
            self._start_etcd(etcd_client, etcd_peer)
            self._start_apiserver(apiserver_port)
            self._start_controller_manager(kcm_port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every started process: SIGTERM, then SIGKILL after ``stop_grace`` seconds.

        Components stop in reverse start order (controller-manager, apiserver, etcd). Safe to
        call more than once and after a partial start.
        """
        for name in reversed(list(self._procs)):
            terminate(self._procs[name], self.stop_grace)
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    # ------------------------------------------------------------------- clients

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` pointing at this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``kubectl`` against this control plane and capture its output.

        With ``check`` (the default) a non-zero exit raises :class:`KubectlError`, whose
        message includes stderr.
        """
        return self._run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args], input, check, timeout
        )

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned ``helm`` from the bin dir against this control plane."""
        return self._run(
            [str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args],
            input,
            check,
            timeout,
        )

    def server_version(self) -> tuple[int, int]:
        """``(major, minor)`` reported by the API server's ``/version``."""
        body = json.loads(self._get("/version"))
        return _version_number(str(body["major"])), _version_number(str(body["minor"]))

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the cluster CA and presents the admin certificate."""
        if self._pki is None:
            raise RuntimeError("ControlPlane not started")
        ctx = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        ctx.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        return ctx

    # ------------------------------------------------------------------ internals

    def _run(
        self, cmd: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def _get(self, path: str, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(
            self.server + path, timeout=timeout, context=self.ssl_context()
        ) as resp:
            data: bytes = resp.read()
        return data.decode()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.work_dir / f"{name}.log"
        log = log_path.open("ab")
        self._log_files.append(log)
        self._logs[name] = log_path
        cmd = [str(self.bin_dir / name), *args]
        (self.work_dir / f"{name}.cmdline").write_text(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            preexec_fn=_die_with_parent,
        )
        self._procs[name] = proc
        return proc

    def _wait_ready(self, name: str, probe: Callable[[], bool]) -> None:
        proc = self._procs[name]
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{name} exited with {code} during startup{self._log_tail(name)}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {self.startup_timeout:.0f}s{self._log_tail(name)}"
                )
            time.sleep(0.25)

    def _log_tail(self, name: str) -> str:
        path = self._logs.get(name)
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace")
        return f"\n--- last lines of {path} ---\n{tail_text(text, LOG_TAIL_LINES)}"

    def _start_etcd(self, client_port: int, peer_port: int) -> None:
        client = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.etcd_url = client
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.work_dir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(client + "/health", timeout=2) as resp:
                    body: bytes = resp.read()
            except (OSError, urllib.error.URLError):
                return False
            return bool(json.loads(body).get("health") == "true")

        self._wait_ready("etcd", healthy)

    def _start_apiserver(self, port: int) -> None:
        pki = self._require_pki()
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # Endpoints may not hold loopback IPs: with 127.0.0.1 advertised, the default
                # reconciler fails every 10 s. Nothing in-cluster needs the kubernetes
                # Service's endpoints here (no pods run), so it is switched off.
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )

        def ready() -> bool:
            try:
                return self._get("/readyz", timeout=5) == "ok"
            except (OSError, urllib.error.URLError, ssl.SSLError):
                return False

        self._wait_ready("kube-apiserver", ready)

    def _start_controller_manager(self, port: int) -> None:
        pki = self._require_pki()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'kcm-certs'}",
                "--v=1",
            ],
        )
        # /healthz is in --authorization-always-allow-paths; the serving cert is self-signed.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            try:
                url = f"https://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=2, context=insecure) as resp:
                    return bool(resp.read() == b"ok")
            except (OSError, urllib.error.URLError, ssl.SSLError):
                return False

        self._wait_ready("kube-controller-manager", healthy)

    def _require_pki(self) -> _Pki:
        if self._pki is None:
            raise RuntimeError("PKI not generated")
        return self._pki

    def _write_pki(self) -> _Pki:
        pki_dir = self.work_dir / "pki"
        pki_dir.mkdir(parents=True, exist_ok=True)
        valid = validity(back=datetime.timedelta(hours=1), ahead=datetime.timedelta(days=7))
        ca = make_ca("promptcache-test-ca", valid=valid)
        ca_cert, ca_key = ca
        serving_cert, serving_key = issue(
            ca,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            valid=valid,
            sans=[
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"),
                x509.DNSName("kubernetes.default.svc.cluster.local"),
            ],
        )
        admin_cert, admin_key = issue(
            ca,
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                ]
            ),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            valid=valid,
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        pki = _Pki(
            ca_cert=pki_dir / "ca.crt",
            ca_key=pki_dir / "ca.key",
            serving_cert=pki_dir / "apiserver.crt",
            serving_key=pki_dir / "apiserver.key",
            admin_cert=pki_dir / "admin.crt",
            admin_key=pki_dir / "admin.key",
            sa_key=pki_dir / "sa.key",
            sa_pub=pki_dir / "sa.pub",
        )
        write(pki.ca_cert, cert_pem(ca_cert))
        write(pki.ca_key, key_pem(ca_key), private=True)
        write(pki.serving_cert, cert_pem(serving_cert))
        write(pki.serving_key, key_pem(serving_key), private=True)
        write(pki.admin_cert, cert_pem(admin_cert))
        write(pki.admin_key, key_pem(admin_key), private=True)
        write(pki.sa_key, key_pem(sa_key), private=True)
        write(
            pki.sa_pub,
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        return pki

    def _write_kubeconfig(self) -> None:
        pki = self._require_pki()

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config: Mapping[str, object] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "promptcache-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_cert),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "promptcache-test",
                    "context": {
                        "cluster": "promptcache-test",
                        "user": "admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "promptcache-test",
            "preferences": {},
        }
        # JSON is YAML: kubectl, helm, client-go and the kubernetes Python client all read it.
        write(self.kubeconfig, json.dumps(config, indent=2).encode(), private=True)


# ----------------------------------------------------------- helpers (the harness's too)


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc``, SIGKILL it if still alive after ``grace`` seconds, and reap it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    """Child-side hook: on Linux, have the kernel SIGKILL the child if the test process dies.

    A safety net for ``kill -9`` of pytest; normal teardown goes through ``stop()``.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _version_number(text: str) -> int:
    """``"34+"`` -> 34: /version may append ``+`` to the minor version."""
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        raise ValueError(f"not a version number: {text!r}")
    return int(digits)


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
