"""A small typed client for the few Kubernetes API calls kopf does not make for us.

kopf watches, patches the objects its handlers are called for and posts Events; the
operator also reads referenced ConfigMaps, writes the rendered ones, patches the status
of policies it re-renders outside a handler, reads namespaces (for the webhook) and the
server version. That is six REST calls, so instead of a generated client library this
module speaks JSON to the API server with ``aiohttp`` (already a dependency, and kopf's
own transport), using the same login kopf uses: ``kopf.login_with_service_account`` in
a pod, ``kopf.login_with_kubeconfig`` elsewhere. A 401 re-runs the login once, which
picks up a rotated projected service-account token.

Errors are mapped once, here, to :class:`KubeError` and its subclasses; the API's error
text is cut to 256 characters before it can reach a log or a status condition.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import kopf

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
LoginFn = Callable[[], kopf.ConnectionInfo | None]

MAX_ERROR_TEXT = 256
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0: no answer at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message[:MAX_ERROR_TEXT]}" if status else message)
        self.status = status
        self.message = message[:MAX_ERROR_TEXT]


class NoCredentialsError(KubeError):
    """Neither a service account nor a kubeconfig: nothing to retry."""


class NotFoundError(KubeError):
    """404: the object (or its namespace) does not exist."""


class ConflictError(KubeError):
    """409: it already exists, or our resourceVersion is stale."""


def _error_for(status: int, message: str) -> KubeError:
    if status == 404:
        return NotFoundError(status, message)
    if status == 409:
        return ConflictError(status, message)
    return KubeError(status, message)


def default_login() -> kopf.ConnectionInfo | None:
    """kopf's own minimal logins: the pod's service account, else ``$KUBECONFIG``."""
    settings = kopf.OperatorSettings()
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )


def core_path(resource: str, *, namespace: str | None = None, name: str | None = None) -> str:
    """``/api/v1/[namespaces/<ns>/]<resource>[/<name>]``."""
    return _path("/api/v1", resource, namespace, name)


def group_path(
    group_version: str, resource: str, *, namespace: str | None = None, name: str | None = None
) -> str:
    """``/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>]``."""
    return _path(f"/apis/{group_version}", resource, namespace, name)


def _path(prefix: str, resource: str, namespace: str | None, name: str | None) -> str:
    out = prefix
    if namespace is not None:
        out += f"/namespaces/{quote(namespace, safe='')}"
    out += f"/{resource}"
    if name is not None:
        out += f"/{quote(name, safe='')}"
    return out


class KubeClient:
    """JSON over one pooled ``aiohttp`` session to the API server.

    Create it inside the running event loop; :meth:`close` it on shutdown.
    """

    def __init__(
        self, *, login: LoginFn = default_login, timeout: float = 30.0, user_agent: str = ""
    ) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._user_agent = user_agent or "promptcache-operator"
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _connect(self, *, relogin: bool) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        async with self._lock:
            if relogin or self._session is None or self._info is None:
                info = self._login()
                if info is None:
                    raise NoCredentialsError(
                        0, "no Kubernetes credentials (no service account, no kubeconfig)"
                    )
                if self._session is not None:
                    await self._session.close()
                connector = aiohttp.TCPConnector(ssl=info.as_ssl_context(), limit=20)
                self._session = aiohttp.ClientSession(
                    connector=connector,
                    timeout=self._timeout,
                    headers={"User-Agent": self._user_agent, **info.as_http_headers()},
                )
                self._info = info
            return self._session, self._info

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Make one call and return the decoded JSON object, or raise ``KubeError``."""
        for attempt in (1, 2):
            session, info = await self._connect(relogin=attempt == 2)
            url = info.server.rstrip("/") + path
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                async with session.request(
                    method, url, json=body, headers=headers, params=params
                ) as rsp:
                    text = await rsp.text()
                    if rsp.status == 401 and attempt == 1:
                        logger.info("API server answered 401; logging in again")
                        continue
                    if rsp.status >= 400:
                        raise _error_for(rsp.status, _status_message(text, rsp.reason))
                    data = await rsp.json(content_type=None) if text else {}
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if not isinstance(data, dict):
                raise KubeError(rsp.status, f"{method} {path}: not a JSON object")
            return cast("JsonObject", data)
        raise KubeError(401, f"{method} {path}: unauthorized")  # pragma: no cover

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> JsonObject:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def server_version(self) -> tuple[int, int]:
        """``(major, minor)`` of the API server (``"29+"`` counts as 29)."""
        data = await self.get("/version")
        return _number(str(data.get("major", "0"))), _number(str(data.get("minor", "0")))


def _number(text: str) -> int:
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


def _status_message(text: str, reason: str | None) -> str:
    """The ``message`` of a ``Status`` error body, else the HTTP reason."""
    try:
        data = json.loads(text)
    except ValueError:
        return reason or "error"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return reason or "error"
