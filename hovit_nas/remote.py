"""The searching side of the latency service (service.py): a trial's latency timed on the
deployment machine instead of where the trial runs.

``LatencyService(url)`` holds the URL and the token (``HOVIT_NAS_LATENCY_TOKEN``; never in its
repr, in a log line or in a study). ``measure`` uploads an exported model as ONNX and returns the
service's latency record. A service that is unreachable, busy or times out is retried with
backoff for at most ``wait_s`` seconds; then the trial fails with the reason (TrialFailed), the
study stays consistent, and a resumed search tries again. A refused token or an oversized model
is the user's to fix: HovitError, one line, the search stops.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from .config import LATENCY_WAIT_S
from .errors import HovitError, TrialFailed
from .service import API, TOKEN_ENV



@dataclass(frozen=True)
class LatencyService:
    """A latency service's address, as a search uses it.

    Attributes:
        url: ``http://HOST:PORT`` (no path; ``/v1/...`` is added).
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
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise HovitError(f"`latency_at` {self.url!r} is not a latency service's address: give http://HOST:PORT")

    def _token(self) -> str:
        tok = self.token if self.token is not None else os.environ.get(TOKEN_ENV, "")
        if not tok:
            raise HovitError(f"--latency-at needs the service's token in {TOKEN_ENV}")
        return tok

    def _request(self, method: str, path: str, **kw) -> dict:
        import requests

        headers = {"Authorization": f"Bearer {self._token()}"}
        deadline, delay, last = time.monotonic() + self.wait_s, 0.5, ""
        while True:
            try:
                r = requests.request(method, f"{self.url.rstrip('/')}{API}{path}", headers=headers,
                                     timeout=(5.0, self.read_s), **kw)
            except requests.RequestException as exc:  # refused, reset, timed out: the service may come back
                last = f"{type(exc).__name__}"
            else:
                if r.status_code == 200:
                    return r.json()
                detail = _detail(r)
                if r.status_code == 401:
                    raise HovitError(f"latency service at {self.url} refused the token ({TOKEN_ENV}): {detail}")
                if r.status_code in (413, 422):
                    raise HovitError(f"latency service at {self.url}: {detail}")
                if r.status_code == 409:  # this model cannot run on the service's target (int8 tools)
                    raise TrialFailed(f"latency service at {self.url}: {detail}")
                last = f"HTTP {r.status_code}: {detail}"
            if time.monotonic() + delay > deadline:
                raise TrialFailed(f"latency service at {self.url} did not answer within {self.wait_s:g} s ({last})")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def identity(self) -> dict:
        """The service's machine identity and target (service.machine_identity).

        Raises:
            HovitError: the token is refused, or the service cannot be reached within ``wait_s``."""
        try:
            return self._request("GET", "/identity")
        except TrialFailed as exc:  # before any trial: the search cannot start
            raise HovitError(str(exc)) from None

    def measure(self, model: bytes, img_size: int, in_chans: int, num_classes: int, runs: int, warmup: int,
                min_time_s: float) -> dict:
        """The service's latency record of ``model`` (ONNX bytes): latency.Latency.to_dict() plus
        ``machine``, ``model_sha256`` and ``cached``.

        Raises:
            TrialFailed: unreachable, busy or timing out for longer than ``wait_s``, or the model
                cannot be quantized or loaded on the service's target.
            HovitError: the token is refused, the service rejects the model (size, format), or it
                runs on another machine than ``machine``."""
        params = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, runs=runs, warmup=warmup,
                      min_time_s=min_time_s)
        rec = self._request("POST", "/latency", params=params, data=model)
        got = (rec.get("machine") or {}).get("id")
        if self.machine is not None and got != self.machine:
            raise HovitError(f"latency service at {self.url} now runs on machine {got}, not {self.machine} that the "
                             "study was timed on; point `latency_at` at that machine or use `study` NEW_NAME")
        return rec


def _detail(r) -> str:
    try:
        return str(r.json().get("detail", r.text))[:300]
    except ValueError:
        return r.text[:300]
