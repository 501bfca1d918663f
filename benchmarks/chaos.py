"""Kill battery: a study survives its driver being SIGKILLed at any instant.

Each part drives the real CLI (``python -m hovit_nas search``) on the tiny space (built-in data,
32 px, 1+1 epochs of 2 steps: a trial takes ~4-5 s on 2 cores) and kills it again and again:

- ``sqlite``, ``postgresql``: the local executor, killed by the product's own fault injection
  (``HOVIT_NAS_FAULT=POINT:N:DELAY``). Each cycle draws a kill instant uniformly over a trial's
  life: a point from created/latency/training/write, N (the point's occurrence in this driver,
  1 or 2, so kills also land in a driver's second trial) and, for latency/training, a delay
  into that phase. The driver must die by SIGKILL (returncode -9); one that finishes the study
  first counts as "not killed" and the budget is raised for the next cycle. The first kill of a
  part always has N=1, so it lands in HoViT-B (the fixed point, which must be queued again and
  complete exactly once). After the last kill a clean driver (no fault) finishes the study.
- ``ray``: ``--executor ray --max-concurrent 1 --cpus-per-trial 1`` on SQLite, the driver started
  in its own session and SIGKILLed from outside, then its process group too (what a dead terminal
  does); processes that outlive that are reported and killed by pid. Odd cycles kill 0-7 s after
  the driver's first trial appears in the study (so kills land in trials, the first in HoViT-B,
  however long start-up takes), even cycles at a time drawn from 10-40 s after start (Ray
  start-up, the anchor, a trial, or between trials). Then a clean driver resumes the study.
- ``pg-restart``: a clean driver on a fresh PostgreSQL study; once it trains a trial after at
  least one finished trial, ``pg_ctl restart -m fast`` restarts the server under it. The driver
  either survives and completes, or exits non-zero with one clear line (no traceback); a re-run
  of the same command completes the study. Before the restart the battery waits (a while) until
  no other client is connected, so it does not pull the server from under someone else's tests.

Between drivers the battery reads the study (``optuna.load_study``, read-only; it never writes
to a study) and checks every target:

    kills done = asked; drivers exit only by SIGKILL or 0 (clean run: 0); RUNNING left 0;
    WAITING left 0; HoViT-B (fixed point) COMPLETE exactly once; no config trained twice;
    finished trials = budget; ``hovit-nas pareto`` and ``pin`` exit 0; no COMPLETE trial lost
    or changed by any later driver.

It prints one line per kill, a table per part, writes OUT/chaos.json (every figure, the exact
command, the per-kill log) and OUT/chaos.txt (the tables), and exits 1 if any target is missed
(then the drivers' logs and SQLite files are copied to OUT/evidence/). A part whose storage or
server is unavailable is skipped with the reason (no PostgreSQL URL: no PostgreSQL parts).

    python benchmarks/chaos.py [--sqlite-kills 30] [--pg-kills 15] [--ray-kills 5]
        [--pg-restart/--no-pg-restart] [--budget-sqlite N] [--budget-pg N] [--budget-ray N]
        [--budget-pg-restart N] [--points created,latency,training,write] [--nth 1,2]
        [--seed 0] [--heartbeat 1,4] [--pg-url URL] [--code worktree|REV] [--out results/chaos]

``HOVIT_NAS_CLI``, when set, is the command line (no quoting) that runs ``python -m hovit_nas``
instead: the test suite passes its warm interpreter (tests/forkserver.py), whose runs are still
processes of their own, killed the same way, minus the imports.

``--points`` cycles the listed points in order instead of drawing them (so a short run covers
each); the PostgreSQL URL defaults to $HOVIT_NAS_TEST_POSTGRES, then .ci/postgres.env. The
package is copied once at the start (``--code``: the working tree, or a git revision) and every
driver imports that copy, so edits made while the battery runs cannot change what it tests.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import optuna
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
POINTS = ("created", "latency", "training", "write")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
FIXED_POINT, DUPLICATE = "fixed_point", "duplicate_of"


def hovit_cli() -> list[str]:
    """The argv prefix that runs the CLI: ``HOVIT_NAS_CLI`` (module docstring), else this
    interpreter's ``python -m hovit_nas``."""
    return os.environ["HOVIT_NAS_CLI"].split() if os.environ.get("HOVIT_NAS_CLI") else [sys.executable, "-m",
                                                                                          "hovit_nas"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sqlite-kills", type=int, default=30)
    ap.add_argument("--pg-kills", type=int, default=15)
    ap.add_argument("--ray-kills", type=int, default=5)
    ap.add_argument("--pg-restart", action=argparse.BooleanOptionalAction, default=True,
                    help="restart the PostgreSQL server under a running driver")
    ap.add_argument("--budget-sqlite", type=int, default=None, help="trials (default kills + 4)")
    ap.add_argument("--budget-pg", type=int, default=None, help="trials (default kills + 4)")
    ap.add_argument("--budget-ray", type=int, default=None, help="trials (default 2 x kills + 3)")
    ap.add_argument("--budget-pg-restart", type=int, default=4)
    ap.add_argument("--points", default=None,
                    help="cycle these kill points in order (comma-separated) instead of drawing them at random")
    ap.add_argument("--nth", default="1,2", help="occurrences of the point to kill at, drawn from (default 1,2)")
    ap.add_argument("--latency-delay-max", type=float, default=3.0,
                    help="kill up to S s into the latency measurement (on 2 cores it lasts ~3-4 s: build, ONNX "
                         "export, time)")
    ap.add_argument("--training-delay-max", type=float, default=2.0,
                    help="kill up to S s into training (on 2 cores it lasts ~2 s)")
    ap.add_argument("--ray-kill-window", default="10,40",
                    help="even Ray cycles: kill the driver uniformly in [A,B] s after its start")
    ap.add_argument("--ray-trial-kill-max", type=float, default=7.0,
                    help="odd Ray cycles: kill the driver up to S s after its first trial appears (a Ray trial lives "
                         "~6 s here, from ask to tell)")
    ap.add_argument("--heartbeat", default="1,4", help="HOVIT_NAS_HEARTBEAT for every driver (INTERVAL,GRACE s)")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--pg-quiet-wait", type=float, default=300,
                    help="wait up to S s for other PostgreSQL clients to leave before the restart")
    ap.add_argument("--driver-timeout", type=float, default=900, help="a driver running longer is killed (a hang)")
    ap.add_argument("--code", default="worktree",
                    help="the hovit_nas code every driver runs, copied once at the start so edits made during the "
                         "battery cannot change it: 'worktree' (default) or a git revision, e.g. HEAD")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (studies, drivers' logs)")
    ap.add_argument("--out", default=str(ROOT / "results" / "chaos"))
    a = ap.parse_args(argv)
    a.points = [p.strip() for p in a.points.split(",")] if a.points else None
    if a.points and not set(a.points) <= set(POINTS):
        ap.error(f"--points: choose from {', '.join(POINTS)}")
    a.nth = [int(n) for n in a.nth.split(",")]
    a.ray_kill_window = tuple(float(v) for v in a.ray_kill_window.split(","))
    return a


# ------------------------------------------------------------------------------- the space

def tiny_space(folder: Path, trials: int, name: str = "tiny") -> Path:
    """The hovit-cpu space on the built-in data at 32 px, 1+1 epochs of 2 steps (tests/spaces.py)."""
    src = folder / "src" / "hovit_nas" / "spaces" / "hovit-cpu.yaml"
    d = yaml.safe_load((src if src.is_file() else ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
    d["name"] = name
    d["trials"] = trials
    d["latency"] = {"batch": 1, "runs": 5, "warmup": 1, "threads": 1}
    d["builtin_data"] = {"img_size": 32, "epochs_dense": 1, "epochs_prune": 1, "max_steps_per_epoch": 2,
                         "batch_size": 32, "trials": trials}
    d["noise"] = {"seeds": 1}  # the fixed point once: the battery's invariant counts it
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


# ------------------------------------------------------------------------------- the code

def _git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def snapshot_code(code: str, dest: Path) -> dict:
    """Copy the package once, so the whole battery tests one version of it; say which."""
    dest.mkdir(parents=True)
    if code == "worktree":
        shutil.copytree(ROOT / "hovit_nas", dest / "hovit_nas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        dirty = sorted(set(_git("diff", "--name-only", "HEAD", "--", "hovit_nas").splitlines())
                       | set(_git("ls-files", "--others", "--exclude-standard", "--", "hovit_nas").splitlines()))
    else:
        rev = _git("rev-parse", "--verify", f"{code}^{{commit}}")
        if not rev:
            sys.exit(f"--code {code}: not a git revision of {ROOT}")
        tar = subprocess.run(["git", "archive", rev, "hovit_nas"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
        dirty = []
    h = hashlib.sha256()
    for f in sorted((dest / "hovit_nas").rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(dest)).encode() + b"\0" + f.read_bytes())
    return {"code": code, "git_head": _git("rev-parse", "HEAD"),
            "revision": _git("rev-parse", code) if code != "worktree" else None,
            "uncommitted_files": dirty, "sha256": h.hexdigest()}


# ----------------------------------------------------------------------------- the drivers

class Battery:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.work = Path(tempfile.mkdtemp(prefix="hovit-chaos-"))
        (self.work / "logs").mkdir()
        self.code = snapshot_code(a.code, self.work / "src")
        self.space = tiny_space(self.work, 10)
        self.env = dict(os.environ)
        self.env.pop("HOVIT_NAS_FAULT", None)
        # every driver (and Ray worker: it inherits PYTHONPATH) imports the snapshot, not the live tree
        self.env.update(PYTHONUNBUFFERED="1", HOVIT_NAS_HEARTBEAT=a.heartbeat,
                        HOVIT_NAS_LOCK_DIR=str(self.work / "locks"),
                        PYTHONPATH=os.pathsep.join([str(self.work / "src"),
                                                    *filter(None, [os.environ.get("PYTHONPATH")])]))
        where = subprocess.run([sys.executable, "-c", "import hovit_nas; print(hovit_nas.__file__)"], cwd=self.work,
                               env=self.env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(self.work / "src")):
            sys.exit(f"the drivers would import hovit_nas from {where or '?'}, not from the snapshot {self.work / 'src'}")
        self.code["imported_from"] = where
        self.current: Optional[subprocess.Popen] = None

    def search_cmd(self, url: str, study: str, budget: int, ray: bool = False) -> list[str]:
        return [*hovit_cli(), "search", "--space", str(self.space), "--storage", url,
                "--study", study, "--threads", "1", "--trials", str(budget),
                *(["--executor", "ray", "--max-concurrent", "1", "--cpus-per-trial", "1"] if ray else [])]

    def cli(self, *args: str, log: str) -> int:
        with open(self.work / "logs" / log, "w") as f:
            return subprocess.run([*hovit_cli(), *args], cwd=self.work, env=self.env,
                                  stdout=f, stderr=subprocess.STDOUT, timeout=300).returncode

    def run(self, cmd: list[str], log: str, fault: Optional[str] = None,
            kill_when: Optional[Callable[[float], bool]] = None, timeout: Optional[float] = None) -> dict:
        """One driver in its own session. ``kill_when(seconds since start)``, asked every 0.25 s:
        True SIGKILLs it (and its process group) from outside. Returns returncode, duration and
        what it left behind."""
        env = dict(self.env, **({"HOVIT_NAS_FAULT": fault} if fault else {}))
        path = self.work / "logs" / log
        info: dict = {"log": log}
        limit = timeout or self.a.driver_timeout
        t0 = time.time()
        with open(path, "w") as f:
            proc = self.current = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=f, stderr=subprocess.STDOUT,
                                                   start_new_session=True)
            try:
                while proc.poll() is None:
                    elapsed = time.time() - t0
                    if kill_when is not None and kill_when(elapsed):
                        info["killed_at_s"] = round(elapsed, 1)
                        info.update(external_kill(proc))
                    elif elapsed > limit:
                        info["timed_out"] = True
                        _killpg(proc.pid)
                        proc.wait()
                    else:
                        try:
                            proc.wait(timeout=0.25 if kill_when else min(5.0, limit - elapsed + 0.1))
                        except subprocess.TimeoutExpired:
                            pass
            except BaseException:
                _killpg(proc.pid)
                raise
            finally:
                self.current = None
        info["returncode"] = proc.returncode
        info["duration_s"] = round(time.time() - t0, 1)
        left = reap_group(proc.pid)
        if left:
            info["left_in_group"] = left
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not _ray_noise(ln)]
        info["tail"] = lines[-6:]
        info["last_line"] = lines[-1] if lines else ""
        info["traceback"] = any(ln.startswith("Traceback") for ln in lines)
        return info


def _ray_noise(line: str) -> bool:
    """Ray's and Tune's own banner and log lines (the driver's lines are what tells where it was)."""
    return (line[:1] in "\u256d\u2502\u251c\u2570" or line.startswith(("View detailed", "To visualize"))
            or re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s", line) is not None
            or line.lstrip().startswith("(") and "pid=" in line[:40])


def _killpg(pgid: int) -> bool:
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_members(pgid: int) -> list[str]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            raw = Path(stat).read_text()
            fields = raw[raw.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(f"{stat.split('/')[2]} {raw[raw.index('(') + 1:raw.rindex(')')]}")
        except (OSError, ValueError, IndexError):
            continue
    return out


def reap_group(pgid: int) -> list[str]:
    """Processes still in a dead driver's process group (it started them): listed, then killed."""
    left = _group_members(pgid)
    if left:
        _killpg(pgid)
    return left


def external_kill(proc: subprocess.Popen) -> dict:
    """SIGKILL the driver, then its process group; report its descendants that outlive that by
    2 s and by 12 s, and kill the last ones by pid (they are ours)."""
    try:
        import psutil
        tree = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing, or the driver just exited
        psutil, tree = None, []
    os.kill(proc.pid, signal.SIGKILL)
    _killpg(proc.pid)
    proc.wait()
    info = {"killed_externally": True, "descendants": len(tree)}

    def alive() -> list:
        out = []
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    time.sleep(2)
    late = alive()
    info["alive_2s"] = [f"{p.pid} {_name(p)}" for p in late]
    deadline = time.time() + 10
    while late and time.time() < deadline:
        time.sleep(1)
        late = alive()
    info["alive_12s"] = [f"{p.pid} {_name(p)}" for p in late]
    for p in late:
        try:
            p.kill()
        except Exception:  # noqa: BLE001
            pass
    return info


def _name(p) -> str:
    try:
        venv = str(Path(sys.executable).parent.parent) + "/"
        return " ".join(p.cmdline()).replace(venv, "").strip()[:160] or p.name()
    except Exception:  # noqa: BLE001
        return "?"


# --------------------------------------------------------------------------- reading a study

def read_trials(url: str, study: str) -> Optional[list]:
    """The study's trials, read only (no schema creation, no writes); None before it exists."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None  # no driver has created it yet (and reading must not create it)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True,
                                             skip_table_creation=True)
    except Exception as exc:  # noqa: BLE001 - the first driver died while creating the tables
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return None
        raise
    try:
        try:
            return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        except KeyError:
            return None
        except Exception as exc:  # noqa: BLE001 - e.g. the first driver died before creating the tables
            if "no such table" in str(exc):
                return None
            raise
    finally:
        storage.engine.dispose()


def complete_map(trials: Optional[list]) -> dict:
    """COMPLETE trials: number -> (values, params), what must never change once recorded."""
    return {t.number: [list(t.values), sorted(t.params.items())]
            for t in trials or [] if t.state == TrialState.COMPLETE}


def summarize(trials: Optional[list], budget: int) -> dict:
    trials = trials or []
    by = Counter(t.state.name for t in trials)
    trained = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               and DUPLICATE not in t.user_attrs]
    keys = Counter(tuple(sorted(t.params.items())) for t in trained)
    fps = [t for t in trials if FIXED_POINT in t.user_attrs]
    walls = [t.user_attrs["wall_s"] for t in trials if t.state == TrialState.COMPLETE and "wall_s" in t.user_attrs]
    fails = Counter(str(t.user_attrs.get("fail_reason", "?")).split(":")[0] for t in trials
                    if t.state == TrialState.FAIL)
    return {
        "trials": len(trials),
        "states": {s: by.get(s, 0) for s in STATES},
        "duplicates": sum(1 for t in trials if DUPLICATE in t.user_attrs),
        "running_left": by.get("RUNNING", 0),
        "waiting_left": by.get("WAITING", 0),
        "fixed_point_completions": sum(1 for t in fps if t.state == TrialState.COMPLETE),
        "fixed_point_trials": {s: sum(1 for t in fps if t.state.name == s) for s in STATES},
        "configs_trained_twice": sum(c * (c - 1) // 2 for c in keys.values()),
        "finished": len(trained),
        "budget": budget,
        "fail_reasons": dict(fails),
        "stale_failed": sum(1 for t in trials if t.state == TrialState.FAIL
                            and str(t.user_attrs.get("fail_reason", "")).startswith("stale")),
        "trial_wall_s_median": round(statistics.median(walls), 2) if walls else None,
    }


# ------------------------------------------------------------------------------------ parts

class Part:
    def __init__(self, name: str, what: str):
        self.name, self.what = name, what
        self.kills: list[dict] = []
        self.runs: list[dict] = []
        self.lost_max = 0
        self.lost_events: list[dict] = []
        self.not_killed = 0
        self.unexpected: list[dict] = []
        self.rows: list[tuple] = []
        self.figures: dict = {}
        self.t0 = time.time()
        self.skipped: Optional[str] = None

    def check_lost(self, before: dict, trials: Optional[list], after_what: str) -> tuple[dict, list[int]]:
        """The COMPLETE trials now, and those of ``before`` that are gone or changed."""
        after = complete_map(trials)
        gone = sorted(n for n in before if after.get(n) != before[n])
        if gone:
            self.lost_events.append({"after": after_what, "lost": gone,
                                     "before": {n: before[n] for n in gone}, "now": {n: after.get(n) for n in gone}})
        self.lost_max = max(self.lost_max, len(gone))
        return after, gone


def kill_part(b: Battery, name: str, url: str, study: str, kills: int, budget: int, seed: str) -> Part:
    a = b.a
    part = Part(name, f"{'SQLite file' if url.startswith('sqlite') else 'PostgreSQL'}, local executor, "
                      f"HOVIT_NAS_FAULT kills, HOVIT_NAS_HEARTBEAT={a.heartbeat}")
    part.figures.update(storage=_masked(url), study=study, budget_start=budget)
    rng = random.Random(seed)
    done, attempt, complete = 0, 0, {}
    while done < kills and attempt < 2 * kills + 5:
        point = a.points[attempt % len(a.points)] if a.points else rng.choice(POINTS)
        attempt += 1
        nth = 1 if attempt == 1 else rng.choice(a.nth)  # the first kill lands in HoViT-B, the fixed point
        delay = {"latency": rng.uniform(0, a.latency_delay_max),
                 "training": rng.uniform(0, a.training_delay_max)}.get(point, 0.0)
        spec = f"{point}:{nth}" + (f":{delay:.2f}" if delay else "")
        r = b.run(b.search_cmd(url, study, budget), f"{name}-{attempt:02d}.log", fault=spec)
        trials = read_trials(url, study)
        was = len(complete)
        complete, gone = part.check_lost(complete, trials, f"kill cycle {attempt} ({spec})")
        part.kills.append({"cycle": attempt, "point": point, "nth": nth, "delay_s": round(delay, 2), "fault": spec,
                           "budget": budget, "complete_before": was, "complete_after": len(complete),
                           "lost": gone, **r})
        rc = r["returncode"]
        if rc == -signal.SIGKILL:
            done += 1
            msg = f"killed after {r['duration_s']:.1f} s"
        elif rc == 0:
            part.not_killed += 1
            budget += max(2, (kills - done) // 2 + 1)
            msg = f"exited 0 after {r['duration_s']:.1f} s: study complete first, not killed; budget raised to {budget}"
        else:
            part.unexpected.append({"cycle": attempt, "returncode": rc, "tail": r["tail"]})
            msg = f"UNEXPECTED exit {rc} after {r['duration_s']:.1f} s: {r['last_line'][:120]}"
        print(f"{name} kill {done}/{kills}: {spec} -> {msg}; {len(complete)} complete", flush=True)
    part.figures["kills_asked"], part.figures["kills_done"] = kills, done
    finish(b, part, url, study, budget, complete)
    return part


def finish(b: Battery, part: Part, url: str, study: str, budget: int, complete: dict, ray: bool = False,
           clean: Optional[dict] = None) -> None:
    """A clean driver to completion (unless ``clean`` is the one already run), then pareto and
    pin, the study's final state and the targets."""
    if clean is None:
        clean = b.run(b.search_cmd(url, study, budget, ray), f"{part.name}-clean.log")
        trials = read_trials(url, study)
        complete, _ = part.check_lost(complete, trials, "the clean driver")
        print(f"{part.name} clean driver: exit {clean['returncode']} after {clean['duration_s']:.1f} s; "
              f"{len(complete)} complete", flush=True)
    part.runs.append(dict(clean, role="clean"))
    # next to a SQLite study by default; a server's study writes into the work dir
    server = not url.startswith("sqlite")
    par = b.cli("pareto", "--study", study, "--storage", url,
                *(["--out", str(b.work / f"{part.name}-pareto.html")] if server else []), log=f"{part.name}-pareto.log")
    pin = b.cli("pin", "--study", study, "--storage", url,
                *(["--out", str(b.work / f"{part.name}-best.yaml")] if server else []), log=f"{part.name}-pin.log")
    trials = read_trials(url, study)
    part.check_lost(complete, trials, "pareto and pin")
    s = summarize(trials, budget)
    s.update(clean_exit=clean["returncode"], pareto_exit=par, pin_exit=pin, lost_max=part.lost_max,
             lost_events=part.lost_events, not_killed=part.not_killed, unexpected_exits=part.unexpected,
             wall_s=round(time.time() - part.t0, 1))
    part.figures.update(s)
    st = s["states"]
    kills_asked = part.figures.get("kills_asked")
    rows: list[tuple] = []
    if kills_asked is not None:
        rows += [(f"kills done (asked {kills_asked})", part.figures["kills_done"], f"= {kills_asked}",
                  part.figures["kills_done"] == kills_asked),
                 ("not killed (study complete first)", part.not_killed, "-", None),
                 ("unexpected driver exits (not -9 / 0)", len(part.unexpected), "0", not part.unexpected)]
    rows += part.rows  # the part's own figures
    rows += [("trials by state", ", ".join(f"{k} {v}" for k, v in st.items()) + f"; duplicates {s['duplicates']}",
              "-", None),
             ("RUNNING left", s["running_left"], "0", s["running_left"] == 0),
             ("WAITING left", s["waiting_left"], "0", s["waiting_left"] == 0),
             ("fixed-point completions", s["fixed_point_completions"], "1", s["fixed_point_completions"] == 1),
             ("fixed-point trials failed (re-queued)", s["fixed_point_trials"]["FAIL"], "-", None),
             ("stale trials failed by a later driver", s["stale_failed"], "-", None),
             ("identical configs trained twice", s["configs_trained_twice"], "0", s["configs_trained_twice"] == 0),
             ("finished trials / budget", f"{s['finished']}/{budget}", "equal", s["finished"] == budget),
             ("final driver exit", s["clean_exit"], "0", s["clean_exit"] == 0),
             ("pareto / pin exit", f"{par} / {pin}", "0 / 0", par == 0 and pin == 0),
             ("completed trials lost (largest)", part.lost_max, "0", part.lost_max == 0),
             ("median trial wall time", f"{s['trial_wall_s_median']} s", "-", None),
             ("wall time", f"{s['wall_s']:.0f} s", "-", None)]
    part.rows = rows


def ray_part(b: Battery, url: str, study: str, kills: int, budget: int, seed: str) -> Part:
    """Odd cycles kill a few seconds after the driver's next trial appears in the study (RUNNING),
    so kills land in trials (the first one in HoViT-B) whatever start-up costs; even cycles kill
    at a time drawn from the start window (Ray start-up, the anchor, a trial, between trials)."""
    a = b.a
    lo, hi = a.ray_kill_window
    part = Part("ray", f"Ray executor (--max-concurrent 1 --cpus-per-trial 1) on a SQLite file; the driver and its "
                       f"process group SIGKILLed from outside, odd cycles 0-{a.ray_trial_kill_max:g} s after its next "
                       f"trial starts, even ones {lo:g}-{hi:g} s after start; HOVIT_NAS_HEARTBEAT={a.heartbeat}")
    part.figures.update(storage=_masked(url), study=study, budget_start=budget)
    rng = random.Random(seed)
    done, attempt, complete, outlived, in_trial = 0, 0, {}, 0, 0
    while done < kills and attempt < 2 * kills + 3:
        attempt += 1
        mode = "trial" if attempt % 2 else "start"
        before = max((t.number for t in read_trials(url, study) or []), default=-1)
        seen: dict = {}
        if mode == "start":
            at = rng.uniform(lo, hi)
            when, what = (lambda elapsed: elapsed >= at), f"at {at:.1f} s"
        else:
            delay = rng.uniform(0, a.ray_trial_kill_max)
            what = f"{delay:.1f} s after its first trial starts"
            polled = [0.0]

            def when(elapsed: float) -> bool:
                if "at" not in seen and elapsed - polled[0] >= 0.5:
                    polled[0] = elapsed
                    new = [t for t in read_trials(url, study) or [] if t.number > before
                           and t.state == TrialState.RUNNING and DUPLICATE not in t.user_attrs]
                    if new:
                        seen.update(at=elapsed, trial=new[0].number, fixed_point=FIXED_POINT in new[0].user_attrs)
                return "at" in seen and elapsed >= seen["at"] + delay

        r = b.run(b.search_cmd(url, study, budget, ray=True), f"ray-{attempt:02d}.log", kill_when=when)
        trials = read_trials(url, study)
        was = len(complete)
        complete, gone = part.check_lost(complete, trials, f"ray kill cycle {attempt}")
        text = (b.work / "logs" / r["log"]).read_text(errors="replace")
        finished = len(re.findall(r"^\[\d+/\d+\] trial", text, re.M))
        phase = ("start-up" if "ray: " not in text else "before trials (anchor)" if " trials, 1 at a time" not in text
                 else f"trials ({finished} finished by this driver)")
        left_running = [t.number for t in trials or [] if t.state == TrialState.RUNNING]
        part.kills.append({"cycle": attempt, "mode": mode, "kill": what, "phase": phase, "budget": budget,
                           "trial_seen": seen or None, "running_after_kill": left_running,
                           "complete_before": was, "complete_after": len(complete), "lost": gone, **r})
        if r.get("killed_externally"):
            done += 1
            outlived += bool(r.get("alive_12s"))
            in_trial += bool(left_running)
            target = (f"; trial #{seen['trial']}{' (HoViT-B)' if seen.get('fixed_point') else ''} appeared at "
                      f"{seen['at']:.1f} s") if seen else ""
            msg = (f"killed at {r['killed_at_s']:.1f} s ({phase}{target}; RUNNING left {left_running or 'none'}; "
                   f"{r.get('descendants', 0)} child processes, {len(r.get('alive_2s', []))} alive 2 s after killpg, "
                   f"{len(r.get('alive_12s', []))} after 12 s)")
        elif r["returncode"] == 0:
            part.not_killed += 1
            budget += max(2, kills - done)
            msg = f"exited 0 after {r['duration_s']:.1f} s, before the kill; budget raised to {budget}"
        else:
            part.unexpected.append({"cycle": attempt, "returncode": r["returncode"], "tail": r["tail"]})
            msg = f"UNEXPECTED exit {r['returncode']} after {r['duration_s']:.1f} s: {r['last_line'][:120]}"
        print(f"ray kill {done}/{kills}: {what} -> {msg}; {len(complete)} complete", flush=True)
        time.sleep(2)
    part.figures["kills_asked"], part.figures["kills_done"] = kills, done
    part.rows += [("kills that left a trial RUNNING (landed in a trial)", in_trial, "-", None),
                  ("kills whose Ray processes outlived killpg by 12 s (killed by pid)", outlived, "-", None)]
    finish(b, part, url, study, budget, complete, ray=True)
    return part


def pg_restart_part(b: Battery, url: str, study: str, budget: int) -> Part:
    part = Part("pg-restart", "PostgreSQL, local executor, server restarted (pg_ctl restart -m fast) under a "
                              "driver that is training a trial")
    part.figures.update(storage=_masked(url), study=study)
    ctl, why = pg_ctl_command(url)
    if ctl is None:
        part.skipped = why
        return part
    part.figures["restart_command"] = shlex.join(ctl)
    waited = wait_quiet(url, b.a.pg_quiet_wait)
    part.figures["waited_for_other_clients_s"] = waited
    cmd = b.search_cmd(url, study, budget)
    env = dict(b.env)
    log = b.work / "logs" / "pg-restart-1.log"
    t0 = time.time()
    restart: dict = {}
    complete: dict = {}
    with open(log, "w") as f:
        proc = b.current = subprocess.Popen(cmd, cwd=b.work, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        seen_finished = threading.Event()
        trigger = threading.Event()

        def pump():
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if line.startswith("[") and f"/{budget}] trial #" in line:
                    seen_finished.set()
                if line.startswith("    #") and seen_finished.is_set():
                    trigger.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while proc.poll() is None and not trigger.wait(0.2):
                if time.time() - t0 > b.a.driver_timeout:
                    break
            if trigger.is_set() and proc.poll() is None:
                complete = complete_map(read_trials(url, study))
                restart["foreign_clients_at_restart"] = other_clients(url, proc.pid)
                restart["at_s"] = round(time.time() - t0, 1)
                r0 = time.time()
                pr = subprocess.run(ctl, capture_output=True, text=True, timeout=180)
                restart.update(returncode=pr.returncode, took_s=round(time.time() - r0, 1),
                               output=(pr.stdout + pr.stderr).strip().splitlines()[-3:])
                print(f"pg-restart: server restarted {restart['at_s']:.1f} s into the driver "
                      f"(pg_ctl exit {pr.returncode}, {restart['took_s']:.1f} s)", flush=True)
            proc.wait(timeout=max(1.0, b.a.driver_timeout - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait()
            restart["driver_timed_out"] = True
        except BaseException:
            _killpg(proc.pid)
            raise
        finally:
            b.current = None
        reader.join(10)
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    first = {"role": "driver under the restart", "log": log.name, "returncode": proc.returncode,
             "duration_s": round(time.time() - t0, 1), "tail": lines[-6:], "last_line": lines[-1] if lines else "",
             "traceback": any(ln.startswith("Traceback") for ln in lines),
             "heartbeat_failures": sum(1 for ln in lines if ln.startswith("heartbeat for trial"))}
    part.runs.append(first)
    part.figures["restart"] = restart
    restarted = restart.get("returncode") == 0
    survived = first["returncode"] == 0
    outcome = ("survived and completed" if survived else
               f"exited {first['returncode']}: {first['last_line'][:100]}")
    print(f"pg-restart: driver {outcome}", flush=True)
    trials = read_trials(url, study)
    complete, _ = part.check_lost(complete, trials, "the driver under the restart")
    clear = survived or (first["returncode"] not in (None, -9) and not first["traceback"])
    part.rows += [("server restarted while a trial trained", f"{'yes' if restarted else 'NO'} "
                   f"(after {restart.get('at_s', '-')} s, took {restart.get('took_s', '-')} s)", "yes", restarted),
                  ("other clients connected at the restart", restart.get("foreign_clients_at_restart", "-"), "-", None),
                  ("driver under the restart", outcome, "-", None),
                  ("  heartbeat failures it printed", first["heartbeat_failures"], "-", None),
                  ("survived, or one clear line (no traceback)", "yes" if clear else "NO", "yes", clear)]
    rerun = None
    if not survived:
        rerun = b.run(cmd, "pg-restart-2.log")
        trials = read_trials(url, study)
        complete, _ = part.check_lost(complete, trials, "the re-run")
        print(f"pg-restart: re-run exit {rerun['returncode']} after {rerun['duration_s']:.1f} s", flush=True)
        part.rows.append(("re-run of the same command", f"exit {rerun['returncode']}", "0", rerun["returncode"] == 0))
    finish(b, part, url, study, budget, complete, clean=rerun or first)
    return part


# ------------------------------------------------------------------------------ PostgreSQL

def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def find_pg_url(a: argparse.Namespace) -> tuple[Optional[str], str]:
    url = a.pg_url or os.environ.get("HOVIT_NAS_TEST_POSTGRES")
    env_file = ROOT / ".ci" / "postgres.env"
    if not url and env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("HOVIT_NAS_TEST_POSTGRES="):
                url = line.split("=", 1)[1].strip()
    if not url:
        return None, "no PostgreSQL URL (--pg-url, $HOVIT_NAS_TEST_POSTGRES or .ci/postgres.env; bash .ci/postgres.sh starts one)"
    try:
        _pg_query(url, "select 1")
    except Exception as exc:  # noqa: BLE001
        return None, f"PostgreSQL at {_masked(url)} unreachable: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return url, ""


def _pg_query(url: str, sql: str) -> list:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with eng.connect() as c:
            return c.execute(text(sql)).all()
    finally:
        eng.dispose()


def pg_ctl_command(url: str) -> tuple[Optional[list[str]], str]:
    """The ``pg_ctl restart`` of the server behind ``url``, run as the owner of its data directory."""
    try:
        data = _pg_query(url, "show data_directory")[0][0]
    except Exception as exc:  # noqa: BLE001
        return None, f"cannot read the server's data_directory ({type(exc).__name__})"
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4].split(".")[0]))
    ctl = shutil.which("pg_ctl") or (found[-1] if found else None)
    if not ctl or not os.path.isdir(data):
        return None, f"no pg_ctl, or the server's data directory {data} is not on this machine"
    owner = Path(data).owner()
    args = [ctl, "-D", data, "-l", os.path.join(data, "log"), "restart", "-m", "fast", "-w", "-t", "120"]
    if os.geteuid() == Path(data).stat().st_uid:
        return args, ""
    if os.geteuid() == 0:
        return ["su", owner, "-c", shlex.join(args)], ""
    return None, f"cannot restart the server: its data directory belongs to {owner}, and this is not root"


def other_clients(url: str, driver_pid: Optional[int] = None) -> int:
    """Client connections to the server other than this query's and the driver's own."""
    ports: set[int] = set()
    if driver_pid:
        try:
            import psutil
            ports = {c.laddr.port for c in psutil.Process(driver_pid).net_connections(kind="inet") if c.laddr}
        except Exception:  # noqa: BLE001
            pass
    rows = _pg_query(url, "select client_port from pg_stat_activity "
                          "where backend_type = 'client backend' and pid <> pg_backend_pid()")
    return sum(1 for (port,) in rows if port not in ports)


def wait_quiet(url: str, limit: float) -> float:
    t0 = time.time()
    n = other_clients(url)
    if n:
        print(f"pg-restart: {n} other clients connected to the server; waiting up to {limit:.0f} s for them to "
              "leave before restarting it", flush=True)
    while n and time.time() - t0 < limit:
        time.sleep(2)
        n = other_clients(url)
    return round(time.time() - t0, 1)


# ---------------------------------------------------------------------------------- output

def table(part: Part) -> str:
    lines = [f"== {part.name}: {part.what} =="]
    if part.skipped:
        return "\n".join(lines + [f"skipped: {part.skipped}"])
    w = max(len(r[0]) for r in part.rows)
    v = min(72, max(len(str(r[1])) for r in part.rows))
    lines.append(f"{'figure':<{w}}  {'value':<{v}}  {'target':<7} result")
    for fig, val, target, ok in part.rows:
        status = "" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"{fig:<{w}}  {str(val):<{v}}  {target:<7} {status}".rstrip())
    failed = [r[0] for r in part.rows if r[3] is False]
    lines.append(f"{part.name}: " + ("PASS" if not failed else "FAIL (" + "; ".join(failed) + ")"))
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    b = Battery(a)
    t0, load0 = time.time(), list(os.getloadavg())
    stamp = f"{os.getpid()}-{int(t0)}"
    c = b.code
    code = (f"code: {'working tree' if c['code'] == 'worktree' else c['code']} at {c['git_head'][:10]}"
            + (f" + uncommitted {', '.join(c['uncommitted_files'])}" if c["uncommitted_files"] else "")
            + (f" (revision {c['revision'][:10]})" if c["revision"] else "") + f", sha256 {c['sha256'][:12]}")
    header = (f"hovit-nas chaos battery: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
              f"seed {a.seed}; HOVIT_NAS_HEARTBEAT={a.heartbeat}; work dir {b.work}\n{code}")
    print(header, flush=True)
    parts: list[Part] = []

    def skip(name: str, what: str, why: str) -> None:
        p = Part(name, what)
        p.skipped = why
        parts.append(p)
        print(f"{name}: skipped: {why}", flush=True)

    try:
        if a.sqlite_kills > 0:
            url = f"sqlite:///{b.work / 'sqlite' / 'study.db'}"
            (b.work / "sqlite").mkdir()
            parts.append(kill_part(b, "sqlite", url, "chaos-sqlite", a.sqlite_kills,
                                   a.budget_sqlite or a.sqlite_kills + 4, f"{a.seed}-sqlite"))
        pg, why = find_pg_url(a) if (a.pg_kills > 0 or a.pg_restart) else (None, "not asked")
        if a.pg_kills > 0:
            if pg:
                parts.append(kill_part(b, "postgresql", pg, f"chaos-pg-{stamp}", a.pg_kills,
                                       a.budget_pg or a.pg_kills + 4, f"{a.seed}-pg"))
            else:
                skip("postgresql", "PostgreSQL, local executor", why)
        if a.ray_kills > 0:
            import importlib.util
            if importlib.util.find_spec("ray") is None:
                skip("ray", "Ray executor on SQLite", "ray is not installed")
            else:
                (b.work / "ray").mkdir()
                parts.append(ray_part(b, f"sqlite:///{b.work / 'ray' / 'study.db'}", "chaos-ray", a.ray_kills,
                                      a.budget_ray or 2 * a.ray_kills + 3, f"{a.seed}-ray"))
        if a.pg_restart:
            if pg:
                p = pg_restart_part(b, pg, f"chaos-pgrestart-{stamp}", a.budget_pg_restart)
                parts.append(p)
                if p.skipped:
                    print(f"pg-restart: skipped: {p.skipped}", flush=True)
            else:
                skip("pg-restart", "PostgreSQL server restart", why)
    except KeyboardInterrupt:
        if b.current is not None:
            _killpg(b.current.pid)
        print(f"interrupted; drivers' logs in {b.work / 'logs'}", file=sys.stderr)
        return 130

    wall = time.time() - t0
    tables = "\n\n".join(table(p) for p in parts)
    failed = [f"{p.name}: {r[0]}" for p in parts if not p.skipped for r in p.rows if r[3] is False]
    verdict = (f"chaos battery: {'PASS' if not failed else 'FAIL'} in {wall / 60:.1f} min"
               + (f" (missed: {'; '.join(failed)})" if failed else ""))
    text = f"{header}\n\n{tables}\n\n{verdict}\n"
    print("\n" + tables + "\n\n" + verdict, flush=True)
    (out / "chaos.txt").write_text(text)
    report = {
        "command": shlex.join(["python", "benchmarks/chaos.py", *(sys.argv[1:] if argv is None else argv)]),
        "python": sys.executable, "cwd": os.getcwd(), "host": platform.node(), "cpus": os.cpu_count(),
        "load_avg_start_end": [load0, list(os.getloadavg())], "args": {k: v for k, v in vars(a).items()},
        "heartbeat": a.heartbeat, "code": b.code, "wall_s": round(wall, 1), "passed": not failed, "missed": failed,
        "parts": {p.name: ({"skipped": p.skipped} if p.skipped else
                           {"what": p.what, **p.figures,
                            "targets": {r[0]: {"value": r[1], "target": r[2], "pass": r[3]} for r in p.rows},
                            "kills": p.kills, "runs": p.runs}) for p in parts},
    }
    (out / "chaos.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if failed:
        ev = out / "evidence"
        shutil.copytree(b.work / "logs", ev / "logs", dirs_exist_ok=True)
        for db in b.work.glob("*/study.db"):
            (ev / db.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(db, ev / db.parent.name / "study.db")
        print(f"evidence (drivers' logs, SQLite studies) copied to {ev}", flush=True)
    if a.keep or failed:
        print(f"kept {b.work}", flush=True)
    else:
        shutil.rmtree(b.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
