"""No prompt text, response text or API key in any log line, metric label or span attribute.

Calls of every shape (both providers, streamed and whole, failing upstream, unparseable
body) go through a sidecar with every logger at DEBUG and an in-memory span exporter;
then everything observable is searched for the secrets.
"""

from __future__ import annotations

import logging

import aiohttp
import anthropic
import openai
import pytest

from tests.local.conftest import REPLY, FakeUpstream, StartSidecar, free_port, status

KEY = "sk-ant-SECRET-KEY-d41d8cd98f00b204"
PROMPT = "My social security number is 078-05-1120 and my password is hunter2"
SYSTEM = "CONFIDENTIAL SYSTEM PROMPT: never reveal the discount code ZEBRA-42"
SIDECAR_LOGGERS = ("sidecar", "promptcache", "aiohttp", "opentelemetry", "tenacity")
SECRETS = (KEY, PROMPT, SYSTEM, REPLY, "078-05-1120", "hunter2", "ZEBRA-42", "Paris")


async def test_no_secret_reaches_logs_metrics_or_spans(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sc = await start_sidecar()
    dead = await start_sidecar(
        anthropic_upstream=f"http://127.0.0.1:{free_port()}", retry_max_attempts=1
    )
    fake_upstream.then(status(429, {"error": {"message": PROMPT}}, {"retry-after": "0"}))
    async with (
        # The SDK retries the 429 itself (the sidecar leaves SDK retries to the SDK).
        anthropic.AsyncAnthropic(api_key=KEY, base_url=sc.url, max_retries=1) as claude,
        openai.AsyncOpenAI(api_key=KEY, base_url=sc.openai_url, max_retries=0) as gpt,
        anthropic.AsyncAnthropic(api_key=KEY, base_url=dead.url, max_retries=0) as broken,
    ):
        await claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system=SYSTEM,
            messages=[{"role": "user", "content": PROMPT}],
        )
        async with claude.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system=SYSTEM,
            messages=[{"role": "user", "content": PROMPT}],
        ) as s:
            await s.get_final_message()
        await gpt.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
        )
        chunks = await gpt.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        async for _ in chunks:
            pass
        with pytest.raises(anthropic.APIStatusError):
            await broken.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=50,
                messages=[{"role": "user", "content": PROMPT}],
            )
    async with aiohttp.ClientSession() as http:
        # A body that does not parse, with the secret in it, and a model name that does.
        bad = ('{"model":"' + PROMPT + '","messages":[').encode()
        async with http.post(
            sc.url + "/v1/messages",
            data=bad,
            headers={"Content-Type": "application/json", "x-api-key": KEY},
        ) as r:
            await r.read()
        async with http.get(sc.admin_url + "/metrics") as r:
            metrics_text = await r.text()
        async with http.get(sc.admin_url + "/readyz") as r:
            ready_text = await r.text()

    assert len(fake_upstream.requests) >= 5  # the calls really went through
    assert "promptcache_input_tokens_total" in metrics_text
    spans = [*sc.finished_spans(), *dead.finished_spans()]
    assert len(spans) >= 5
    observed = [metrics_text, ready_text]
    # The sidecar process's loggers (the SDKs' own DEBUG logs are the client's business).
    ours = [r for r in caplog.records if r.name.startswith(SIDECAR_LOGGERS)]
    assert ours, "expected the sidecar to log the upstream failure"
    observed += [record.getMessage() for record in ours]
    observed += [record.exc_text or "" for record in ours]
    for span in spans:
        observed.append(span.name)
        observed += [f"{k}={v!s}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            observed += [f"{k}={v!s}" for k, v in (event.attributes or {}).items()]
    haystack = "\n".join(observed)
    for secret in SECRETS:
        assert secret not in haystack, f"leaked: {secret[:12]}..."
