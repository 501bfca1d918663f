"""Issue 29's handed cases and their kinds: EXIF-rotated tiles, a read-only study, names that
become paths or URLs, the latency service's addresses and a search whose trials all fail."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import case


# ------------------------------------------------------------------------------ EXIF orientation

def _truth(folder: Path) -> dict:
    with np.load(folder / "truth.npz") as z:
        return {k: z[k] for k in z.files}


def _resized(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR), dtype=np.int16)


def test_exif_rotated_jpegs_decode_upright_as_exif_transpose_does():
    """JPEGs stored sideways with EXIF orientation 6 decode to their upright pixels (JPEG
    compression leaves a few grey levels: read as stored, the mean error is 13..57)."""
    from PIL import Image

    from hovit_nas.data.cache import decode
    from hovit_nas.data.pixels import pil_to_rgb8

    folder = case("exif-rotated")
    truth = _truth(folder)
    assert len(truth) == 15
    for rel, want in truth.items():
        with Image.open(folder / rel) as im:
            assert im.getexif().get(0x0112) == 6  # the case is what it says
            got = pil_to_rgb8(im, rel)
        assert got.shape == want.shape, rel
        assert np.abs(got.astype(np.int16) - want).mean() < 8, rel
        cached = decode(folder / rel, 32).transpose(1, 2, 0)  # what the cache stores, resized square
        assert np.abs(cached.astype(np.int16) - _resized(want, 32)).mean() < 8, rel


def test_a_cache_entry_of_the_old_decoding_rules_is_rebuilt_upright(tmp_path, monkeypatch):
    """The cache key carries the decoding rules' version: an entry built before the orientation
    was applied (sideways pixels) is not reused for the same files."""
    from hovit_nas.data import cache

    folder = case("exif-rotated")
    truth = _truth(folder)
    rels = sorted(truth)
    src = cache.SplitSource("exif", "train", {"root": str(folder)}, np.zeros(len(rels), dtype=np.int64),
                            paths=[folder / r for r in rels])
    new_version = cache.VERSION
    monkeypatch.setattr(cache, "VERSION", 2)  # as the last version that stored files as saved
    monkeypatch.setattr(cache, "pil_to_rgb8", lambda im, what: np.asarray(im.convert("RGB")))
    old = cache.open_or_build(src, 32, str(tmp_path))
    monkeypatch.undo()
    assert new_version > 2
    entry = cache.open_or_build(src, 32, str(tmp_path))
    assert entry.built and entry.path != old.path
    for i, rel in enumerate(rels):
        got = np.asarray(entry.images[i]).transpose(1, 2, 0).astype(np.int16)
        assert np.abs(got - _resized(truth[rel], 32)).mean() < 8, rel


# ------------------------------------------------------------------------------- shared helpers

def hovit_study(url: str, name: str, points=((0.8, 3.0), (0.7, 2.0))):
    """A finished hovit-nas study made by hand (no training): HoViT-B and one more trial."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from hovit_nas import study as st
    from hovit_nas.config import to_dict
    from hovit_nas.models import hovit_b

    study, _ = st.create_or_load(name, url, optuna.samplers.RandomSampler(),
                                 {"space": "tiny", "metric": "top1", "data": "built-in digits", "img_size": 32}, [])
    cfg = to_dict(hovit_b(img_size=32, num_classes=10))
    for i, (acc, lat) in enumerate(points):
        attrs = {"config": cfg, "params": 4_000_000, "val": {"top1": acc}, "test": {"top1": acc},
                 "latency": {"device_name": "cpu", "threads": 1}, **({st.FIXED_POINT_ATTR: "hovit_b"} if not i else {})}
        study.add_trial(create_trial(values=[acc, lat], params={"x": i}, user_attrs=attrs,
                                     distributions={"x": CategoricalDistribution(list(range(len(points))))}))
    return study


def last_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-2000:]
    return r.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------- 2. a study on a read-only share

NO_OVERRIDE = "-dac_override,-dac_read_search,-fowner,-chown"


def as_reader(*args: str, cwd: Path):
    """The CLI as a user who may read the share but not write it. As root (these tests' machine),
    run.sh's way: ``setpriv`` without CAP_DAC_OVERRIDE, so the owner's modes bind."""
    import subprocess
    import sys

    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: the modes of a read-only share would not bind")
        prefix = ["setpriv", "--bounding-set", NO_OVERRIDE, "--inh-caps", NO_OVERRIDE]
    return subprocess.run([*prefix, sys.executable, "-m", "hovit_nas", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture
def read_only(tmp_path):
    """A folder of another owner with mode 555 (a file in it: 444), as run.sh leaves the share."""
    folders = []

    def lock(folder: Path) -> Path:
        for f in folder.iterdir():
            f.chmod(0o444)
        folder.chmod(0o555)
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            for p in (folder, *folder.iterdir()):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        folders.append(folder)
        return folder

    yield lock
    for folder in folders:
        folder.chmod(0o755)


def _md5(p: Path) -> str:
    import hashlib

    return hashlib.md5(p.read_bytes()).hexdigest()


def test_a_read_only_study_is_read_and_reported_and_never_written(tmp_path, read_only):
    """readonly-study: pareto prints its report and says where it could not write the HTML (exit
    0); --out writes it elsewhere; pin and confirm refuse in one line naming what is not
    writable, before any work; the database is unchanged. (`search` refused already:
    test_trust.py.)"""
    share = tmp_path / "share" / "ro"
    share.mkdir(parents=True)
    db = share / "study.db"
    url = f"sqlite:///{db}"
    hovit_study(url, "ro")
    read_only(share)
    before = _md5(db)
    work = tmp_path / "work"
    work.mkdir()
    study = ["--study", "ro", "--storage", url]

    r = as_reader("pareto", *study, "--no-baselines", cwd=work)
    assert last_line(r, 0) == (f"warning: the HTML plot was not written: folder {share} is not writable; pass --out "
                               "FILE to write it elsewhere")
    assert "Pareto front (2 trials)" in r.stdout and "hypervolume" in r.stdout
    r = as_reader("pareto", *study, "--no-baselines", "--out", str(work / "ro.html"), cwd=work)
    assert r.returncode == 0 and (work / "ro.html").is_file() and f"\nwrote {work / 'ro.html'}\n" in r.stdout

    r = as_reader("pin", *study, cwd=work)
    assert last_line(r, 2) == (f"error: cannot write the pinned config {share / 'best.yaml'}: folder {share} is not "
                               "writable; pass --out FILE to write it elsewhere")
    r = as_reader("pin", *study, "--out", str(work / "best.yaml"), cwd=work)
    assert r.returncode == 0 and (work / "best.yaml").is_file(), r.stderr[-2000:]

    refusal = f"error: storage {url}: read-only (file {db} is not writable); make it writable, then re-run the same command"
    r = as_reader("confirm", *study, "--top-k", "1", "--seeds", "2", "--threads", "1", cwd=work)
    assert last_line(r, 2) == refusal
    assert "data:" not in r.stderr and "dataset cache" not in r.stderr  # refused before the data is loaded
    assert _md5(db) == before and sorted(p.name for p in share.iterdir()) == ["study.db"]
    assert sorted(p.name for p in work.iterdir()) == ["best.yaml", "ro.html"]


@pytest.fixture
def cli(monkeypatch):
    """The CLI in this process (click's CliRunner), with the package logger restored afterwards."""
    import logging

    from click.testing import CliRunner

    from hovit_nas.cli import main

    logger = logging.getLogger("hovit_nas")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield lambda *args: CliRunner().invoke(main, list(args))
    logger.handlers[:], logger.level, logger.propagate = saved


def no_write_under(monkeypatch, folder: Path) -> None:
    """The operating system's answer for a folder of another owner with mode 555, as it is for a
    user who is not root: ``access(W_OK)`` refused under ``folder``."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(folder):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("command, what, metavar", [
    (["train", "--config", "hovit_s", "--max-steps", "1", "--out", "{ro}/run"], "the run directory {ro}/run", "DIR"),
    (["export", "{ro}/../run", "--out", "{ro}/m.safetensors"], "the exported model {ro}/m.safetensors", "FILE"),
    (["export", "{ro}/../run", "--format", "onnx", "--precision", "int8", "--out", "{ro}/m.onnx"],
     "the exported model {ro}/m.onnx", "FILE"),
    (["bench", "--models", "hovit_b", "--out", "{ro}/bench"], "the bench report {ro}/bench", "DIR"),
    (["profile-target", "--out", "{ro}/p.json"], "the profile {ro}/p.json", "FILE"),
    (["supernet", "train", "--out", "{ro}/sn"], "the supernet {ro}/sn", "DIR"),
    (["pareto", "--study", "s", "--storage", "sqlite:///{ro}/../s.db", "--out", "{ro}/p.html"],
     "the HTML plot {ro}/p.html", "FILE"),
])
def test_every_output_is_checked_before_the_work(tmp_path, monkeypatch, cli, command, what, metavar):
    """The same kind elsewhere: an output in a folder the user may not write was a PermissionError
    (or the safetensors library's SafetensorError) after the training, export or timing; now it is
    one line before any of it, naming the folder and the option that writes elsewhere."""
    ro = tmp_path / "ro"
    ro.mkdir()
    hovit_study(f"sqlite:///{tmp_path / 's.db'}", "s")
    no_write_under(monkeypatch, ro)
    monkeypatch.chdir(tmp_path)
    r = cli(*[a.format(ro=ro) for a in command])
    assert r.exit_code == 2, (r.exit_code, r.output[-2000:])
    assert r.stderr.strip().splitlines()[-1] == (f"error: cannot write {what.format(ro=ro)}: folder {ro} is not "
                                                 f"writable; pass --out {metavar} to write it elsewhere")
    assert "epoch" not in r.stderr and "data:" not in r.stderr and not list(ro.iterdir())


def test_a_folder_that_is_a_file_and_a_missing_folder():
    from hovit_nas.outputs import unwritable

    assert unwritable("/proc/version/x.html") == "/proc/version is a file, not a folder"
    assert unwritable(Path(os.environ.get("TMPDIR", "/tmp")) / "hovit-nas-not-there" / "a" / "b.yaml") is None


# ----------------------------------------------------------- 3. names that become paths or URLs

URL_NAMES = ["crc?v1", "crc?v2", "run#2", "100%", "a%41b", "a%2541b", "x@y:z", "ä b"]


def test_a_study_name_is_the_same_folder_for_every_command_whatever_its_characters():
    """'?' and '%xx' in a name were read as URL syntax: crc?v1 and crc?v2 shared studies/crc,
    a%41b went to aAb. The default storage is written by SQLAlchemy, so the URL parses back to
    the name's own folder, and names that differ after such a character stay apart."""
    from sqlalchemy.engine import make_url

    from hovit_nas import study as st

    files = {make_url(st.default_storage(n)).database for n in URL_NAMES}
    assert files == {f"studies/{n}/study.db" for n in URL_NAMES}
    for n in URL_NAMES:  # the absolute form a search records and prints
        url = st.absolute_url(st.default_storage(n))
        assert make_url(url).database == str(Path(f"studies/{n}/study.db").resolve())
        assert st.study_dir(n, url) == Path(f"studies/{n}").resolve()


def test_pin_and_pareto_find_each_of_two_names_that_differ_after_a_question_mark(tmp_path, monkeypatch, cli):
    """study-name-url: crc?v1 and crc?v2 each in its own folder; `pin --study NAME` finds each by
    its name, and the second pin does not overwrite the first's best.yaml."""
    import yaml

    from hovit_nas import study as st

    monkeypatch.chdir(tmp_path)
    for name, lat in (("crc?v1", 3.0), ("crc?v2", 5.0)):
        hovit_study(st.default_storage(name), name, points=((0.8, lat),))
    for name in ("crc?v1", "crc?v2"):
        r = cli("pin", "--study", name)
        assert r.exit_code == 0, r.output[-2000:]
        pinned = tmp_path / "studies" / name / "best.yaml"
        assert f"-> {pinned}" in r.stdout and yaml.safe_load(pinned.read_text())["study"] == name
        r = cli("pareto", "--study", name, "--no-baselines")
        assert r.exit_code == 0 and f"wrote {tmp_path / 'studies' / name / 'pareto.html'}" in r.stdout, r.output
    assert yaml.safe_load((tmp_path / "studies" / "crc?v1" / "best.yaml").read_text())["objectives"]["latency_ms"] == 3.0
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == ["crc?v1", "crc?v2"]


def test_a_search_under_a_name_with_url_characters_lands_where_pin_looks(tmp_path):
    """The search's own folder and its printed storage hint agree with the name (--max-latency
    0.001 prunes the trial before training: fast)."""
    import shlex

    import optuna
    from sqlalchemy.engine import make_url

    from conftest import run_cli
    from spaces import tiny_space

    space = tiny_space(tmp_path, trials=1)
    r = run_cli("search", "--space", str(space), "--study", "crc?v1", "--threads", "1", "--max-latency", "0.001",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    db = tmp_path / "studies" / "crc?v1" / "study.db"
    assert db.is_file() and sorted(p.name for p in (tmp_path / "studies").iterdir()) == ["crc?v1"]
    hint = shlex.split(r.stderr.split("see `", 1)[1].split("`", 1)[0])
    storage = hint[hint.index("--storage") + 1]
    assert make_url(storage).database == str(db)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["crc?v1"]


def test_a_question_mark_typed_into_a_sqlite_url_is_refused_not_cut(tmp_path):
    """`--storage sqlite:///studies/crc?v1/study.db` named the file studies/crc; SQLite options
    (`?timeout=30`) still parse."""
    from hovit_nas import study as st
    from hovit_nas.errors import StorageError

    with pytest.raises(StorageError) as e:
        st.absolute_url("sqlite:///studies/crc?v1/study.db")
    assert str(e.value) == ("invalid storage URL 'sqlite:///studies/crc?v1/study.db': '?' starts the URL's query, "
                            "so the database file would be 'studies/crc'; write a '?' in a file or folder name as "
                            "%3F (and '%' as %25)")
    assert st.parse_url("sqlite:///studies/x/study.db?timeout=30").query == {"timeout": "30"}


def test_a_study_an_older_version_put_in_the_wrong_folder_is_pointed_to(tmp_path, monkeypatch):
    from hovit_nas import study as st
    from hovit_nas.errors import HovitError

    monkeypatch.chdir(tmp_path)
    hovit_study(f"sqlite:///{tmp_path / 'studies' / 'aAb' / 'study.db'}", "a%41b")
    with pytest.raises(HovitError) as e:
        st.resolve_study("a%41b", None)
    assert str(e.value) == ("no study 'a%41b' at sqlite:///studies/a%2541b/study.db; pass `storage` URL (an older "
                            "hovit-nas read URL syntax in the name and stored it in studies/aAb/study.db: pass "
                            "`storage` sqlite:///studies/aAb/study.db)")


@pytest.mark.parametrize("name", ["../escaped", "a/b", "", ".hidden"])
def test_a_run_name_is_one_folder_under_runs_like_a_study_name(tmp_path, monkeypatch, cli, name):
    """The same kind elsewhere: a run config's `name` becomes runs/<name> (train), as a space's
    name becomes supernets/<space> and profiles/<space>-...; '../escaped' trained into
    ../escaped. Now the one rule of study names applies, before the data is loaded."""
    import yaml

    from hovit_nas.config import to_dict
    from hovit_nas.models import hovit_s
    from hovit_nas.names import under

    monkeypatch.chdir(tmp_path)
    cfg = to_dict(hovit_s(img_size=32, num_classes=10))
    cfg["name"] = name
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("train", "--config", "run.yaml", "--max-steps", "1")
    assert r.exit_code == 2, r.output[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: the config's name {name!r} is not a single folder name under ./runs (no '/', '\\', leading '.', "
        "or control characters; at most 200 characters)")
    assert "data:" not in r.stderr and not (tmp_path / "runs").exists()
    assert under("supernets", "crc?v1", "space name") == Path("supernets/crc?v1")


# ------------------------------------------------- 4. the latency service's addresses and exit status

@pytest.fixture(scope="module")
def service():
    """A real `hovit-nas latency-serve` on loopback; (its URL, what it printed at its start)."""
    import signal

    pytest.importorskip("fastapi", reason="the latency service needs pip install 'hovit-nas[serve]'")
    from conftest import start_service

    proc, url = start_service("--threads", "1")
    yield url, proc
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


class FakeServer:
    """Another HTTP server on loopback, answering each path with (status, content type, body)."""

    def __init__(self, routes: dict):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                status, kind, body = routes.get(self.path.split("?")[0], (404, "application/json",
                                                                         b'{"detail": "Not Found"}'))
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _timed(fn):
    import time

    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:  # the test asserts on the type and message
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_the_service_address_as_it_prints_it_is_taken_and_wrong_ones_are_final_at_once(service):
    """study-name-url's sibling, latency-service: `--latency-at URL/v1` (what the service printed)
    reached nothing for 120 s (HTTP 404 on /v1/v1, retried), `https://` likewise (TLS errors,
    retried). The prefix is now optional, and a 404, a TLS failure or a refused token is one line
    at once, with `wait_s` 120."""
    from conftest import LATENCY_TOKEN
    from hovit_nas.errors import HovitError
    from hovit_nas.remote import LatencyService

    url, proc = service
    for given in (url, f"{url}/", f"{url}/v1", f"{url}/v1/"):
        svc = LatencyService(given, token=LATENCY_TOKEN)
        assert svc.url == url and svc.identity()["runtime"] == "onnxruntime"
    https = url.replace("http://", "https://")
    cases = {
        https: f"latency service at {https}: the TLS handshake failed (SSLError: [SSL: WRONG_VERSION_NUMBER] "
               "wrong version number",
        f"{url}/api": f"GET {url}/api/v1/identity answered HTTP 404 (Not Found): no hovit-nas latency service at "
                      f"{url}/api; give http://HOST:PORT as `hovit-nas latency-serve` prints it",
    }
    for given, message in cases.items():
        exc, took = _timed(LatencyService(given, token=LATENCY_TOKEN).identity)
        assert isinstance(exc, HovitError) and str(exc).startswith(message) and took < 10, (exc, took)
    exc, took = _timed(LatencyService(url, token="wrong").identity)
    assert isinstance(exc, HovitError) and took < 10
    assert str(exc) == (f"latency service at {url} refused the token (HOVIT_NAS_LATENCY_TOKEN): wrong or missing "
                        "token")


def test_the_start_line_prints_the_address_the_client_takes(service):
    url, proc = service
    lines = [proc.stdout.readline() for _ in range(1)]  # its first line, printed as it started
    while "latency service on" not in lines[-1] and len(lines) < 20:
        lines.append(proc.stdout.readline())
    assert f"latency service on {url} (search with --latency-at {url}): onnxruntime fp32, 1 thread(s)" in lines[-1], \
        lines


def test_another_server_or_a_bad_port_at_the_address_is_one_line(tmp_path):
    """The same kind elsewhere: an address where another web server answers (HTML, HTTP 200) was
    a JSONDecodeError, an 'internal error'; a JSON that is not the service's identity, a
    KeyError; a port that is not a number was retried for --latency-wait. Each is one line."""
    from hovit_nas.errors import HovitError
    from hovit_nas.remote import LatencyService

    web = FakeServer({"/v1/identity": (200, "text/html", b"<html>router login</html>")})
    other = FakeServer({"/v1/identity": (200, "application/json", b'{"status": "ok"}')})
    try:
        exc, took = _timed(LatencyService(web.url, token="t").identity)
        assert isinstance(exc, HovitError) and took < 10
        assert str(exc) == (f"GET {web.url}/v1/identity answered HTTP 200 with text/html, not the service's JSON: "
                            "another server is at this address; give the address `hovit-nas latency-serve` prints")
        exc, _ = _timed(LatencyService(other.url, token="t").identity)
        assert isinstance(exc, HovitError) and str(exc).startswith(
            f"GET {other.url}/v1/identity answered JSON without id, hostname, cpu, runtime")
    finally:
        web.close()
        other.close()
    with pytest.raises(HovitError) as e:
        LatencyService("http://127.0.0.1:87a5", token="t")
    assert str(e.value) == ("`latency_at` 'http://127.0.0.1:87a5' is not a latency service's address: the port "
                            "'87a5' is not a number; give http://HOST:PORT")


def test_https_to_the_service_stops_the_search_in_one_line_before_any_trial(tmp_path, service):
    """The handed case from the command line: exit 2 at once, not 120 s of retries."""
    import time

    from conftest import LATENCY_TOKEN, run_cli

    url, _ = service
    https = url.replace("http://", "https://")
    t0 = time.monotonic()
    r = run_cli("search", "--trials", "1", "--latency-at", https, cwd=tmp_path,
                env={"HOVIT_NAS_LATENCY_TOKEN": LATENCY_TOKEN})
    assert last_line(r, 2).startswith(f"error: latency service at {https}: the TLS handshake failed (SSLError")
    assert time.monotonic() - t0 < 100 and not (tmp_path / "studies").exists()


IDENTITY = {"id": "0123456789abcdef", "hostname": "edge", "cpu": "test CPU", "cores": 2, "platform": "Linux",
            "runtime": "onnxruntime", "runtime_version": "1", "precision": "fp32", "threads": 1, "batch": 1}


def test_a_search_whose_trials_all_fail_exits_1_and_stops_adding_failed_trials(tmp_path):
    """A service that knows the machine but is always busy (HTTP 503): each trial waits
    --latency-wait 1 and fails. The search stops after 2 failed trials (its failure budget for
    1 trial) and says so with exit status 1, not 0."""
    import json

    import optuna

    from conftest import run_cli
    from spaces import tiny_space

    busy = FakeServer({"/v1/identity": (200, "application/json", json.dumps(IDENTITY).encode()),
                       "/v1/latency": (503, "application/json", b'{"detail": "busy: queue full (8 waiting)"}')})
    try:
        r = run_cli("search", "--space", str(tiny_space(tmp_path, trials=1)), "--threads", "1", "--latency-at",
                    busy.url, "--latency-wait", "1", cwd=tmp_path, env={"HOVIT_NAS_LATENCY_TOKEN": "t"})
    finally:
        busy.close()
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"failed: study 'tiny-builtin' stopped after 2 failed trials, with 0 of 1 finished; the last failure: "
        f"latency service at {busy.url} did not answer within 1 s (HTTP 503: busy: queue full (8 waiting)); fix "
        "its cause, then re-run the same command to resume")
    study = optuna.load_study(study_name="tiny-builtin",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_ray_stops_asking_for_trials_that_keep_failing(tmp_path):
    """The same kind on the Ray executor: its searcher had no failure budget, so a config that
    always fails was asked for again and again, each a new FAIL trial, without end."""
    import threading

    import optuna

    pytest.importorskip("ray")
    from hovit_nas import study as st
    from hovit_nas.errors import ConfigError
    from hovit_nas.executors.common import Failures
    from hovit_nas.executors.ray import _Interrupt, _searcher_class

    class Broken:  # every proposal is a config no model has
        def suggest(self, trial):
            trial.suggest_int("x", 0, 10 ** 6)
            raise ConfigError("stages[0]: heads 3 do not divide dim 32")

    study, _ = st.create_or_load("r", f"sqlite:///{tmp_path / 'r.db'}", optuna.samplers.RandomSampler(seed=0),
                                 {"space": "broken"}, [])
    failures = Failures.of(3)
    searcher = _searcher_class()(study, Broken(), budget=3, interrupt=_Interrupt(), failures=failures)
    answer = []
    t = threading.Thread(target=lambda: answer.append(searcher.suggest("tune-1")), daemon=True)
    t.start()
    t.join(60)
    from ray.tune.search import Searcher

    assert answer == [Searcher.FINISHED] and failures.failed == 2, (answer, failures)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert failures.last == "config cannot be built: stages[0]: heads 3 do not divide dim 32"
