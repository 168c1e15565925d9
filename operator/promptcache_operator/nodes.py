"""Which kubelet versions run in the cluster: native sidecars are safe only if all are 1.29+.

Control planes are upgraded before nodes. A native sidecar (an init container with
``restartPolicy: Always``) on a pre-1.29 kubelet is an ordinary init container that never
exits, and the pod hangs in ``Init`` for good. So ``nativeSidecar: auto`` looks at every
node's ``status.nodeInfo.kubeletVersion`` as well as the API server's version (read-only:
``get``/``list`` on nodes), again every few minutes, since old nodes can join later. When
the nodes cannot be read, ``auto`` falls back to the regular container, which works on
every kubelet, and says so in the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from promptcache_operator.kube import KubeClient, core_path

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
PAGE = "500"


def kubelet_minor(node: Mapping[str, Any]) -> int | None:
    """The kubelet's minor version of a 1.x node; ``None`` if it does not say."""
    info = (node.get("status") or {}).get("nodeInfo") or {}
    match = _VERSION.match(str(info.get("kubeletVersion") or ""))
    if match is None:
        return None
    major, minor = int(match[1]), int(match[2])
    return minor if major == 1 else 99


async def kubelet_minors(client: KubeClient) -> list[int]:
    """Every node's kubelet minor version (nodes that report none count as 0: unknown is
    old). Raises ``KubeError`` when the nodes cannot be listed."""
    minors: list[int] = []
    params = {"limit": PAGE}
    while True:
        page = await client.get(core_path("nodes"), params=params)
        for node in page.get("items") or []:
            minor = kubelet_minor(node)
            minors.append(0 if minor is None else minor)
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return minors
        params = {"limit": PAGE, "continue": str(token)}
