"""nginx from Debian in two roles: the fast upstream, and the proxy hop to compare against.

One nginx process serves both: a port that reads the whole request body and answers at
once with a fixed Anthropic message (JSON, or an event stream when ``x-bench-stream`` is
set; nginx's ``return`` alone would answer before reading the body, so the answer comes
from a third port behind a body-reading ``proxy_pass``), and a port that
``proxy_pass``es to that upstream over pooled keep-alive connections with buffering off
(as an LLM proxy must, to stream). The upstream is as fast as a local server can be, so
what is measured is the hop.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.payload import message_json, message_sse

CONF = """
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  client_max_body_size 64m;
  client_body_buffer_size 64k;
  keepalive_requests 1000000;
  upstream llm {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  upstream answer {{ server 127.0.0.1:{answer_port}; keepalive 256; }}
  server {{
    # The upstream: reads the whole request body (request buffering), as a real API
    # does before answering, then answers from the port below.
    listen 127.0.0.1:{upstream_port} backlog=4096;
    location / {{
      proxy_pass http://answer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Content-Length "";
      proxy_pass_request_body off;
      proxy_buffering off;
    }}
  }}
  server {{
    listen 127.0.0.1:{answer_port} backlog=4096;
    location / {{
      if ($http_x_bench_stream) {{ rewrite ^ /_sse last; }}
      default_type application/json;
      return 200 '{json}';
    }}
    location = /_sse {{
      internal;
      default_type text/event-stream;
      return 200 '{sse}';
    }}
  }}
  upstream python_upstream {{ server 127.0.0.1:{python_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{python_proxy_port} backlog=4096;
    location / {{
      proxy_pass http://python_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
  server {{
    listen 127.0.0.1:{proxy_port} backlog=4096;
    location / {{
      proxy_pass http://llm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering on;
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def version() -> str:
    binary = nginx_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def _wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def running(
    *,
    upstream_port: int,
    proxy_port: int,
    answer_port: int,
    python_port: int,
    python_proxy_port: int,
    workers: str = "auto",
) -> Iterator[int]:
    """nginx serving the upstream and proxy ports until the block ends; yields its pid.

    ``python_proxy_port`` proxies to a Python upstream on ``python_port`` (started by the
    caller).
    """
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx not found (Debian: apt-get install nginx-light)")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(
            CONF.format(
                prefix=prefix,
                workers=workers,
                upstream_port=upstream_port,
                proxy_port=proxy_port,
                answer_port=answer_port,
                python_port=python_port,
                python_proxy_port=python_proxy_port,
                json=message_json(),
                sse=message_sse(),
            )
        )
        process = subprocess.Popen([binary, "-p", prefix, "-c", str(conf)])
        try:
            _wait_port(upstream_port)
            _wait_port(proxy_port)
            yield process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)
