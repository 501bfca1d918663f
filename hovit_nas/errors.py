"""Exceptions that mean "the user gave us something wrong" (CLI exit 2) vs. a failed trial."""


class HovitError(Exception):
    """Bad input: the CLI prints the message as one line and exits with code 2."""


class ConfigError(HovitError, ValueError):
    """A config or search-space file is invalid; the message names the file and field."""


class DataError(HovitError, ValueError):
    """A dataset spec is unusable; the message names the path or file."""


class StorageError(HovitError):
    """A study storage URL cannot be opened."""


class QuantizationError(HovitError):
    """A post-training quantization tool failed on one model (models/quantize.py): in a search,
    that trial fails with the reason and the study goes on."""


class TrialFailed(RuntimeError):
    """A trial could not produce metrics (NaN loss, out of memory, ...): recorded as FAIL."""


class SearchFailed(RuntimeError):
    """A search or confirmation stopped because too many of its trials failed (executors'
    ``Failures``), short of its budget: the CLI prints one line and exits with code 1."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception message, or its type's name when it has none (tools such
    as OpenVINO, onnxruntime and NNCF raise multi-line messages whose first line says what)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def one_line(exc: BaseException) -> str:
    """The last meaningful line of an exception message.

    DataLoader workers re-raise exceptions with the worker traceback folded into the message;
    the user needs only the original sentence at its end.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    for prefix in ("hovit_nas.errors.DataError: ", "hovit_nas.errors.ConfigError: ", "DataError: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return last


def exit_status(exc: BaseException) -> tuple[int, str]:
    """The CLI's one mapping from an exception to (exit code, the line it prints)."""
    if isinstance(exc, HovitError):
        return 2, f"error: {one_line(exc)}"
    if isinstance(exc, (TrialFailed, SearchFailed)):
        return 1, f"failed: {one_line(exc)}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    return 1, (f"internal error: {type(exc).__name__}: {one_line(exc)} "
               "(set HOVIT_NAS_DEBUG=1 for the traceback)")
