"""What a hovit-nas study is in Optuna's terms: its two objectives, and the keys under which it and
its trials record their settings and roles (Optuna user attrs).

``record.py`` reads these records into typed dataclasses; the modules of this package write and
test them by these keys.
"""
from __future__ import annotations

DIRECTIONS = ["maximize", "minimize"]
OBJECTIVES = ["accuracy", "latency_ms"]
FIXED_POINT_ATTR = "fixed_point"
ANCHOR_ATTR = "latency_anchor"  # latency.Calibration as a dict: see executors/common.ensure_anchor
DUPLICATE_ATTR = "duplicate_of"
CONFIRMS_ATTR = "confirms"  # a confirmation run (confirm/run.py): the search trial it retrains
UID_ATTR = "study_uid"  # a random id written when a study is created: its identity, whatever its name
CONFIRMS_UID_ATTR = "confirms_uid"  # a confirmation study: the identity of the search it confirms
DATA_ARGS_ATTR = "data_args"  # a study's data as command-line options (``data_args``), for the commands it prints
