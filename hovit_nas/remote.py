"""The searching side of the latency service (service.py): a trial's latency timed on the
deployment machine instead of where the trial runs.

``LatencyService(url)`` holds the URL and the token (``HOVIT_NAS_LATENCY_TOKEN``; never in its
repr, in a log line or in a study). ``measure`` uploads an exported model as ONNX and returns the
service's latency record. A service that is unreachable, busy or times out is retried with
backoff for at most ``wait_s`` seconds; then the trial fails with the reason (TrialFailed), the
study stays consistent, and a resumed search tries again. What no retry can change is the user's
to fix, at once: HovitError, one line, the search stops, no trial is failed by it -- a refused
token, an oversized model, and an address that is wrong (no service at that path: HTTP 404; a TLS
handshake with the plain-HTTP service; an answer that is not the service's JSON).

An address is taken as the service prints it at its start (``http://HOST:PORT``), with or without
the API prefix (``/v1``) and a trailing ``/``; a path before the prefix (a reverse proxy's) stays.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional

from .config import LATENCY_WAIT_S
from .errors import HovitError, TrialFailed, first_line
from .service import API, TOKEN_ENV



@dataclass(frozen=True)
class LatencyService:
    """A latency service's address, as a search uses it.

    Attributes:
        url: ``http://HOST:PORT`` (``service_address``: a ``/v1`` given is dropped; ``/v1/...`` is added).
        machine: the identity ``id`` the study recorded; a record from another machine is refused.
        token: the token (default: ``HOVIT_NAS_LATENCY_TOKEN`` where the request is made); kept out
            of the repr.
        wait_s: the bound on retries for one request, in seconds.
        read_s: how long one request may take once sent (a measurement takes seconds), in seconds.
    """
    url: str
    wait_s: float = LATENCY_WAIT_S
    read_s: float = 300.0
    machine: Optional[str] = None  # the identity id a study recorded: another machine is refused
    token: Optional[str] = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "url", service_address(self.url))

    def _token(self) -> str:
        tok = self.token if self.token is not None else os.environ.get(TOKEN_ENV, "")
        if not tok:
            raise HovitError(f"--latency-at needs the service's token in {TOKEN_ENV}")
        return tok

    def _request(self, method: str, path: str, **kw) -> dict:
        import requests

        headers = {"Authorization": f"Bearer {self._token()}"}
        where, target = f"latency service at {self.url}", f"{self.url}{API}{path}"
        deadline, delay, last = time.monotonic() + self.wait_s, 0.5, ""
        while True:
            try:
                r = requests.request(method, target, headers=headers, timeout=(5.0, self.read_s), **kw)
            except requests.exceptions.SSLError as exc:  # before ConnectionError, its base: no retry helps
                raise HovitError(f"{where}: the TLS handshake failed ({_reason(exc)}); `hovit-nas latency-serve` "
                                 "speaks plain HTTP: give http://HOST:PORT") from None
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
                raise HovitError(f"`latency_at` {self.url!r}: {_reason(exc)}; give http://HOST:PORT") from None
            except requests.RequestException as exc:  # refused, reset, timed out: the service may come back
                last = _reason(exc)
            else:
                if r.status_code == 200:
                    return _json(r, f"{method} {target}")
                detail = _detail(r)
                if r.status_code in (401, 403):
                    raise HovitError(f"{where} refused the token ({TOKEN_ENV}): {detail}")
                if r.status_code in (404, 405):  # the service answers both of its paths: this is not it
                    raise HovitError(f"{method} {target} answered HTTP {r.status_code} ({detail}): no hovit-nas "
                                     f"latency service at {self.url}; give http://HOST:PORT as `hovit-nas "
                                     "latency-serve` prints it")
                if r.status_code in (413, 422):
                    raise HovitError(f"{where}: {detail}")
                if r.status_code == 409:  # this model cannot run on the service's target (int8 tools)
                    raise TrialFailed(f"{where}: {detail}")
                if 400 <= r.status_code < 500 and r.status_code not in RETRIED:  # the same request fails again
                    raise HovitError(f"{where}: {method} {target} answered HTTP {r.status_code}: {detail}")
                last = f"HTTP {r.status_code}: {detail}"
            if time.monotonic() + delay > deadline:
                raise TrialFailed(f"{where} did not answer within {self.wait_s:g} s ({last})")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def identity(self) -> dict:
        """The service's machine identity and target (service.machine_identity).

        Raises:
            HovitError: the token is refused, the address is wrong (HTTP 404, a TLS handshake with the
                plain-HTTP service, an answer that is not the service's identity), or the service cannot
                be reached within ``wait_s``."""
        try:
            ident = self._request("GET", "/identity")
        except TrialFailed as exc:  # before any trial: the search cannot start
            raise HovitError(str(exc)) from None
        missing = [k for k in IDENTITY_KEYS if k not in ident]
        if missing:
            raise HovitError(f"GET {self.url}{API}/identity answered JSON without {', '.join(missing)}: no hovit-nas "
                             f"latency service at {self.url} (or another version of it)")
        return ident

    def measure(self, model: bytes, img_size: int, in_chans: int, num_classes: int, runs: int, warmup: int,
                min_time_s: float) -> dict:
        """The service's latency record of ``model`` (ONNX bytes): latency.Latency.to_dict() plus
        ``machine``, ``model_sha256`` and ``cached``.

        Raises:
            TrialFailed: unreachable, busy or timing out for longer than ``wait_s``, or the model
                cannot be quantized or loaded on the service's target.
            HovitError: the token is refused, the address is wrong (see ``identity``), the service
                rejects the model (size, format), or it runs on another machine than ``machine``."""
        params = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, runs=runs, warmup=warmup,
                      min_time_s=min_time_s)
        rec = self._request("POST", "/latency", params=params, data=model)
        got = (rec.get("machine") or {}).get("id")
        if self.machine is not None and got != self.machine:
            raise HovitError(f"latency service at {self.url} now runs on machine {got}, not {self.machine} that the "
                             "study was timed on; point `latency_at` at that machine or use `study` NEW_NAME")
        return rec


RETRIED = (408, 429)  # a request timeout or too many requests: the same request may pass later
IDENTITY_KEYS = ("id", "hostname", "cpu", "runtime", "runtime_version", "precision", "threads", "batch")


def service_address(url: str) -> str:
    """The service's base address from what a user gives: ``http://HOST:PORT``, with or without
    the API prefix (``/v1``, as the service's start line printed it before) and trailing ``/``.

    Raises:
        HovitError: not ``http(s)://HOST[:PORT][/PATH]``: another scheme, no host, a port that is
            not a number, a query or a fragment (one line, naming `latency_at`)."""
    from urllib.parse import urlsplit

    u = urlsplit(url.strip())
    why = ""
    try:
        u.port
    except ValueError:
        why = f"the port {u.netloc.rpartition(':')[2]!r} is not a number; "
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or why:
        raise HovitError(f"`latency_at` {url!r} is not a latency service's address: {why}give http://HOST:PORT")
    path = u.path.rstrip("/")
    path = path.removesuffix(API) if path.endswith(API) else path
    return f"{u.scheme}://{u.netloc}{path.rstrip('/')}"


def _reason(exc: Exception) -> str:
    """A requests exception in a few words: its type and, where urllib3 says it, the cause
    (``NameResolutionError``, ``ConnectionRefusedError``, ``SSLError`` with OpenSSL's reason)."""
    cause = getattr(exc.args[0] if exc.args else None, "reason", None)  # urllib3's MaxRetryError.reason
    while getattr(cause, "args", None) and isinstance(cause.args[0], Exception):  # SSLError(SSLError(...))
        cause = cause.args[0]
    if cause is None:
        return f"{type(exc).__name__}: {first_line(exc)}" if str(exc) else type(exc).__name__
    text = re.sub(r"^<?HTTPS?Connection[^:]*: ", "", first_line(cause))  # urllib3 names its connection object first
    kinds = dict.fromkeys([type(exc).__name__, type(cause).__name__])  # requests' SSLError wraps ssl's
    return f"{': '.join(kinds)}: {text[:160]}"


def _json(r, request: str) -> dict:
    """A 200 answer's JSON object; HovitError when it is none (another server at that address)."""
    try:
        doc = r.json()
    except ValueError:  # requests' JSONDecodeError is a ValueError
        doc = None
    if not isinstance(doc, dict):
        kind = r.headers.get("content-type", "no content type")
        raise HovitError(f"{request} answered HTTP 200 with {kind}, not the service's JSON: another server is at "
                         "this address; give the address `hovit-nas latency-serve` prints")
    return doc


def _detail(r) -> str:
    try:
        return str(r.json().get("detail", r.text))[:300]
    except ValueError:
        return r.text[:300]
