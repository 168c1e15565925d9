"""Sending a request to a provider: one pooled session per upstream, retries before the first byte.

A retry is safe only while the app has seen nothing, so attempts repeat only until
response headers arrive, and only for faults that a second try can fix: a connection
that failed or broke before any answer, and 429 / 503 / 529 (rate limited, unavailable,
overloaded). ``retry-after`` is honoured up to a cap (a longer ask is the app's to
decide, so that answer is relayed), backoff is jittered, and all waiting fits a total
budget. An Anthropic 429 ``enforced_spend_limit_reached`` is never retried: waiting
cannot fix a spend limit. When the attempts run out the last answer is relayed, and
``Answer.retries_spent`` says so (the proxy then tells the client not to retry it).

Retries must not multiply: an app whose client retries by itself (the official SDKs)
would otherwise see each of its attempts become several. The caller says whether the
client retries (``client_retries``); then statuses are relayed at once and only a
connection that failed before any answer (a stale pooled connection, say: the app alone
would not have met it) is tried again.

aiohttp's exceptions are translated here, at one boundary, into ``UpstreamUnreachableError``
(502) and ``UpstreamTimeoutError`` (504).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDict
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)
from yarl import URL

from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.errors import UpstreamTimeoutError, UpstreamUnreachableError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503, 529})
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
Body = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The upstream's response (headers in) and, if the retry logic read it, its body."""

    response: aiohttp.ClientResponse
    read: bytes | None = None
    retries_spent: bool = False
    """The last of the attempts the sidecar would make was answered with a retryable status."""


@dataclass
class RetryableStatusError(Exception):
    """A 429/503/529 answer that a later attempt may improve; its body is already read."""

    response: aiohttp.ClientResponse
    body: bytes
    retry_after: float | None


@dataclass
class _ConnectionFailedError(Exception):
    error: Exception


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def env_proxy(base: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The ``HTTPS_PROXY`` / ``HTTP_PROXY`` the app itself would use for ``base``, if any.

    An app whose pod reaches the provider through an egress proxy must still reach it
    through the sidecar, so the standard variables (and ``NO_PROXY``) are honoured; they
    are read once, not per request. Loopback upstreams are never proxied.
    """
    if base.host in ("localhost", "::1") or (base.host or "").startswith("127."):
        return None, None
    try:
        proxy, auth = get_env_proxy_for_url(base)
    except LookupError:
        return None, None
    return proxy, auth


def make_session(settings: SidecarSettings) -> aiohttp.ClientSession:
    """The pooled session of one upstream: relays bytes as sent (no decompression)."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections,
        limit_per_host=0,
        keepalive_timeout=settings.upstream_keepalive,
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_connect_timeout,
        sock_read=settings.upstream_read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=_NO_AUTO_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,  # proxies: resolved once per upstream by env_proxy
    )


class Upstream:
    """One provider endpoint and its pooled session."""

    def __init__(
        self, *, name: str, base_url: str, session: aiohttp.ClientSession, settings: SidecarSettings
    ) -> None:
        self.name = name
        self.base = URL(base_url)
        self.session = session
        self.settings = settings
        self._prefix = self.base.path.rstrip("/")
        # A separate headers deadline only when it is shorter than the read timeout that
        # aiohttp already applies to the wait for the first byte.
        headers_timeout = settings.upstream_headers_timeout
        self._headers_timeout = (
            headers_timeout if headers_timeout < settings.upstream_read_timeout else None
        )
        self._proxy, self._proxy_auth = env_proxy(self.base)
        # Named in errors and logs: scheme, host and port only (never userinfo or query).
        self.label = f"{self.base.scheme}://{self.base.host}" + (
            f":{self.base.explicit_port}" if self.base.explicit_port else ""
        )

    def url(self, path_qs: str) -> URL:
        """The upstream URL for the app's path and query, appended to the base path."""
        return URL(f"{self.base.scheme}://{self.base.raw_authority}{self._prefix}{path_qs}")

    async def send(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: Body,
        *,
        on_retry: Callable[[str], None],
        client_retries: bool = False,
    ) -> Answer:
        """The upstream's answer; ``client_retries``: the client retries statuses itself.

        Raises ``UpstreamUnreachableError`` or ``UpstreamTimeoutError``.
        """
        url = self.url(path_qs)
        resendable = isinstance(body, bytes | None) and self.settings.retry_max_attempts > 1
        statuses = not client_retries
        # The first attempt runs without tenacity: almost every call succeeds at once,
        # and building a retry controller per call costs more than the rest of this path.
        first: Exception
        try:
            response = await self._once(method, url, headers, body)
        except _ConnectionFailedError as exc:
            if not resendable:
                raise self._unreachable(exc.error) from exc.error
            first = exc
        else:
            if response.status not in RETRY_STATUSES or not resendable or not statuses:
                return Answer(response)
            answer = await self._answer(response)
            if not self._should_retry(answer):
                return Answer(response, answer.body)
            first = answer
        return await self._retry(first, method, url, headers, body, on_retry, statuses=statuses)

    async def _retry(
        self,
        first: Exception,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Body,
        on_retry: Callable[[str], None],
        *,
        statuses: bool,
    ) -> Answer:
        """Attempts two and on, after ``first`` failed (replayed as tenacity's attempt one)."""
        replay: list[Exception] = [first]
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retry_max_attempts)
            | stop_before_delay(self.settings.retry_budget),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            before_sleep=lambda state: on_retry(_reason(state)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if replay:
                        raise replay.pop()
                    response = await self._once(method, url, headers, body)
                    if statuses and response.status in RETRY_STATUSES:
                        raise await self._answer(response)
                    return Answer(response)
        except RetryableStatusError as last:
            return Answer(last.response, last.body, retries_spent=self._should_retry(last))
        except _ConnectionFailedError as exc:
            raise self._unreachable(exc.error) from exc.error
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _answer(self, response: aiohttp.ClientResponse) -> RetryableStatusError:
        data = await self.read_small(response)
        return RetryableStatusError(
            response, data, parse_retry_after(response.headers.get("retry-after"))
        )

    async def _once(
        self, method: str, url: URL, headers: CIMultiDict[str], body: Body
    ) -> aiohttp.ClientResponse:
        try:
            request = self.session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
            if self._headers_timeout is None:  # the session's sock_read covers the wait
                return await request
            async with asyncio.timeout(self._headers_timeout):
                return await request
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise _ConnectionFailedError(exc) from exc
            log.warning("upstream %s: no response headers in time", self.label)
            waited = self._headers_timeout or self.settings.upstream_read_timeout
            raise UpstreamTimeoutError(
                f"promptcache: upstream {self.label} sent no response within {waited:g}s"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise _ConnectionFailedError(exc) from exc

    @staticmethod
    async def read_small(response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return b""
        finally:
            response.release()

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, _ConnectionFailedError):
            return True
        if not isinstance(exc, RetryableStatusError):
            return False
        if exc.response.status == 429 and b"enforced_spend_limit_reached" in exc.body:
            return False
        return exc.retry_after is None or exc.retry_after <= self.settings.retry_after_max

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatusError) and exc.retry_after is not None:
            return exc.retry_after
        ceiling = self.settings.retry_backoff * 2 ** (state.attempt_number - 1)
        return random.uniform(0, ceiling)

    def _unreachable(self, error: Exception) -> UpstreamUnreachableError | UpstreamTimeoutError:
        kind = type(error).__name__
        log.warning("upstream %s unreachable: %s", self.label, kind)
        if isinstance(error, TimeoutError):
            return UpstreamTimeoutError(
                f"promptcache: connecting to upstream {self.label} timed out"
            )
        return UpstreamUnreachableError(f"promptcache: upstream {self.label} unreachable ({kind})")


def _reason(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryableStatusError):
        return f"status_{exc.response.status}"
    return "connection"
