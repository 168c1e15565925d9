"""The injected sidecar really runs: what the webhook wrote is a working container.

A pod is created through the real API server with the operator's webhook in the path.
Then the test plays kubelet for the sidecar container: each of its volume mounts gets
the referenced ConfigMap's keys as files in a temporary directory (the operator's
rendered policy), paths in the arguments are rewritten from the mount path to that
directory and ports to free loopback ports, and ``promptcache <args>`` starts as a local
process with the container's environment. The app container's ``ANTHROPIC_BASE_URL``
(rewritten the same way) then points the official ``anthropic`` SDK at it; the upstream
is the bundled provider simulator, behind a recorder that keeps each request body.
The policy is seen applied: the static block from the PromptPolicy's ConfigMap arrives
first in ``system`` with a cache breakpoint, and the second call reads it from cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from promptcache.simulator.config import SimConfig
from promptcache.simulator.server import create_app
from tests.cluster.controlplane import ControlPlane, free_ports, terminate
from tests.cluster.operator_harness import (
    PROMPTCACHE,
    InjectionSetup,
    Obj,
    apply,
    config_map,
    get_json,
    get_or_none,
    injection,
    prompt_policy,
    wait_for,
)

MODEL = "claude-sonnet-4-6"
# ~2,600 tokens: above the model's 1,024-token minimum, so the block is really cached.
STATIC = "You are the support agent of Example Corp. Policies follow. " * 170


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    with injection(control_plane, tmp_path_factory.mktemp("sidecar-runs")) as s:
        yield s


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[TestServer, list[Obj]]:
    """The simulator, recording the JSON body of each provider call."""
    seen: list[Obj] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST" and request.path.startswith("/v1/"):
            seen.append(json.loads(await request.read()))
        return await handler(request)

    app = create_app(SimConfig(time_scale=0.0))
    app.middlewares.append(record)
    server: TestServer = await aiohttp_server(app)
    return server, seen


def injected_pod(setup: InjectionSetup, ns: str) -> Obj:
    cp = setup.cp
    apply(
        cp,
        [
            config_map("agent-prompts", ns, {"system.txt": STATIC}),
            prompt_policy(
                "support",
                ns,
                {
                    "provider": "anthropic",
                    "staticBlocks": [
                        {
                            "name": "system",
                            "ttl": "5m",
                            "contentFrom": {
                                "configMapKeyRef": {"name": "agent-prompts", "key": "system.txt"}
                            },
                        }
                    ],
                },
            ),
        ],
    )
    wait_for(
        lambda: get_or_none(cp, "configmap", "-n", ns, "promptcache-policy-support"),
        what="rendered policy ConfigMap",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent",
            "namespace": ns,
            "annotations": {"promptcache.io/inject": "true", "promptcache.io/policy": "support"},
        },
        "spec": {"containers": [{"name": "app", "image": "example.invalid/agent:1"}]},
    }
    created: Obj = json.loads(
        cp.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pod)).stdout
    )
    return created


def play_kubelet(cp: ControlPlane, pod: Obj, container: Obj, root: Path) -> dict[str, str]:
    """Materialise the container's ConfigMap volumes; mount path -> local directory."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts: dict[str, str] = {}
    for i, mount in enumerate(container.get("volumeMounts", [])):
        source = volumes[mount["name"]]["configMap"]
        cm = get_json(cp, "configmap", "-n", pod["metadata"]["namespace"], source["name"])
        local = root / f"mount{i}"
        local.mkdir(parents=True)
        for key, value in cm.get("data", {}).items():
            (local / key).write_text(value)
        mounts[mount["mountPath"]] = str(local)
    return mounts


def rewrite(value: str, mounts: dict[str, str], ports: dict[str, int]) -> str:
    for mount_path, local in mounts.items():
        if value.startswith(mount_path + "/"):
            value = local + value[len(mount_path) :]
    for original, port in ports.items():
        value = value.replace(original, f"127.0.0.1:{port}")
    return value


@pytest.fixture
async def sidecar_from_pod(
    setup: InjectionSetup, tmp_path: Path, upstream: tuple[TestServer, list[Obj]]
) -> AsyncIterator[tuple[str, Obj]]:
    """Start the injected sidecar container locally; yield the app's base URL and the pod."""
    cp = setup.cp
    ns = setup.namespace("pc-run")
    pod = injected_pod(setup, ns)
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "promptcache")
    app_env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    mounts = play_kubelet(cp, pod, sidecar, tmp_path)

    listen, admin = free_ports(2)
    args = list(sidecar["args"])
    # Same ports as in the pod would clash between tests: map each address to a free one.
    ports = {
        args[args.index("--listen") + 1]: listen,
        args[args.index("--admin-listen") + 1]: admin,
    }
    args = [rewrite(a, mounts, ports) for a in args]
    sim_url = str(upstream[0].make_url("")).rstrip("/")
    for flag in ("--anthropic-upstream", "--openai-upstream"):
        args[args.index(flag) + 1] = sim_url
    assert Path(args[args.index("--policy") + 1]).is_file()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTCACHE_", "OTEL_"))}
    env.update({e["name"]: e["value"] for e in sidecar.get("env", [])})
    command = [*(sidecar.get("command") or [str(PROMPTCACHE)]), *args]
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = sidecar["readinessProbe"]["httpGet"]
        ready_url = f"http://127.0.0.1:{admin}{probe['path']}"
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()
                try:
                    async with http.get(ready_url) as rsp:
                        if rsp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("sidecar not ready:\n" + (tmp_path / "sidecar.log").read_text())
        yield rewrite(app_env["ANTHROPIC_BASE_URL"], mounts, ports), pod
    finally:
        terminate(proc, 15.0)
        log.close()


async def test_the_injected_sidecar_applies_the_rendered_policy(
    sidecar_from_pod: tuple[str, Obj], upstream: tuple[TestServer, list[Obj]]
) -> None:
    base_url, pod = sidecar_from_pod
    _, seen = upstream
    assert base_url.startswith("http://127.0.0.1:")
    async with anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0) as client:
        first = await client.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": "Where is my order 1234?"}],
        )
        second = await client.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": "And order 5678?"}],
        )

    assert len(seen) == 2
    system = seen[0]["system"]
    assert isinstance(system, list)
    assert system[0]["text"] == STATIC  # the PromptPolicy's ConfigMap text, injected first
    assert system[0].get("cache_control", {}).get("type") == "ephemeral"
    assert seen[1]["system"][0] == system[0]  # byte-stable prefix
    # The simulator cached the prefix on the first call and served it on the second.
    assert (first.usage.cache_creation_input_tokens or 0) > 1024
    assert (second.usage.cache_read_input_tokens or 0) > 1024
    assert (
        json.loads(pod["metadata"]["annotations"]["promptcache.io/status"])["policy"] == "support"
    )
