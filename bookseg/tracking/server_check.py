"""Fail fast when an MLflow tracking server cannot be reached.

MLflow's REST client retries a refused connection with exponential backoff (minutes) before it raises, so a
job pointed at a server that is down would otherwise sit silently and then end in a long traceback. One GET
of the server's `/health` endpoint with a short timeout, no retries, tells within seconds.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = 5.0
# A proxy in front of a stopped server answers with these; the server itself is not there.
_GATEWAY_ERRORS = (502, 503, 504)


class TrackingServerUnreachable(RuntimeError):
    """The http(s) tracking URI does not answer; the message is one line naming the URI."""


def _ssl_context() -> ssl.SSLContext | None:
    # The same switches MLflow's own client honours for https servers.
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        return ssl._create_unverified_context()  # the user asked for it
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def check_tracking_server(uri: str, timeout: float = TIMEOUT_S) -> None:
    """Raise `TrackingServerUnreachable` when `uri` is http(s) and its server does not answer in `timeout` s.

    Any HTTP answer other than a gateway error counts as reachable (a 401 or 404 behind a proxy is for
    MLflow's client to report). Database and file URIs are not checked.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI stay out of the request (the health check needs none) and out of the message.
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    url = shown.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_ssl_context()):
            return
    except urllib.error.HTTPError as exc:
        if exc.code not in _GATEWAY_ERRORS:
            return
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    raise TrackingServerUnreachable(
        f"MLflow tracking server {shown} is not reachable ({reason}): start it (`make server`, README "
        f"'Team setup') or unset MLFLOW_TRACKING_URI / tracking.tracking_uri to log to sqlite:///mlflow.db"
    )


def exit_if_unreachable(uri: str) -> None:
    """`check_tracking_server`, ending the process with its one-line message on failure (no traceback;
    SystemExit also gets through Hydra's callbacks, which turn other exceptions into warnings)."""
    try:
        check_tracking_server(uri)
    except TrackingServerUnreachable as exc:
        sys.exit(f"error: {exc}")
