"""Cluster tier: tests that run against a real kube-apiserver on loopback.

Every test under ``tests/cluster`` gets the ``cluster`` marker. The binaries come from
``hack/kubebin/build.sh`` (built once per machine, 10-20 minutes the first time); the
build runs when collection ends, before any test starts, so it does not count against
per-test timeouts. If it cannot run (no Go, a failed build) the tests fail with the
reason: a missing control plane is a broken environment, not a reason to skip.

Fixtures:

* ``kubebin_dir`` (session): directory with ``etcd``, ``kube-apiserver``,
  ``kube-controller-manager`` and ``helm``.
* ``control_plane`` (session): a started :class:`ControlPlane`; stopped at session end.
* ``cluster_with_crds`` (module): the same control plane with the chart's CRDs and the
  third-party ones (Prometheus operator...) applied.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:  # plain `pytest` (not `python -m pytest`) omits the cwd
    sys.path.insert(0, _REPO_ROOT)

from tests.cluster.chart_support import apply_crds  # noqa: E402
from tests.cluster.controlplane import (  # noqa: E402
    BinariesUnavailableError,
    ControlPlane,
    ControlPlaneError,
    ensure_binaries,
)

_HERE = Path(__file__).resolve().parent
_KUBEBIN = pytest.StashKey[Path | str]()  # the bin dir, or why it is unavailable


def _in_cluster_tier(item: pytest.Item) -> bool:
    return _HERE in Path(item.path).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``cluster`` (before ``-m`` deselection runs)."""
    for item in items:
        if _in_cluster_tier(item):
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries up front if any selected test is in the cluster tier."""
    if session.config.option.collectonly:
        return
    if any(_in_cluster_tier(item) for item in session.items):
        _kubebin(session.config)


def _kubebin(config: pytest.Config) -> Path | str:
    if _KUBEBIN not in config.stash:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "cluster tier: hack/kubebin/build.sh (a no-op when cached; "
                "the first build takes 10-20 minutes)"
            )
        try:
            config.stash[_KUBEBIN] = ensure_binaries()
        except BinariesUnavailableError as exc:
            config.stash[_KUBEBIN] = str(exc)
    return config.stash[_KUBEBIN]


@pytest.fixture(scope="session")
def kubebin_dir(pytestconfig: pytest.Config) -> Path:
    """The directory holding the pinned control-plane binaries and helm."""
    result = _kubebin(pytestconfig)
    if isinstance(result, str):
        pytest.fail(f"control-plane binaries unavailable: {result}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def control_plane(
    kubebin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver + kube-controller-manager, shared by the session."""
    cp = ControlPlane(kubebin_dir, tmp_path_factory.mktemp("controlplane"))
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"control plane did not start: {exc}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def cluster_with_crds(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> ControlPlane:
    """The control plane with the chart's CRDs and the third-party CRDs applied for real."""
    apply_crds(control_plane, tmp_path_factory.mktemp("gomod"))
    return control_plane
