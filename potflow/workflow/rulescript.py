"""Glue for the thin scripts in workflow_scripts/: logging and one-line errors."""

import contextlib
import sys
import traceback

from potflow.errors import PotflowInputError


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def run_rule(body, log_path=None):
    """Call ``body()`` with stdout/stderr copied to ``log_path``.

    A PotflowInputError ends the job with its one-line message and exit status 1;
    any other exception keeps its traceback in the log.
    """
    log = open(log_path, "w") if log_path else None  # noqa: SIM115
    out, err = sys.stdout, sys.stderr
    if log:
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        body()
    except PotflowInputError as exc:
        sys.stderr.write(f"potflow error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
    except Exception:
        if log:
            traceback.print_exc(file=log)
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        if log:
            with contextlib.suppress(Exception):
                log.close()


def rule_step(rule, steps):
    """The function for ``rule`` among a script's ``steps`` (name -> function).

    A workflow that imports potflow as a module renames its rules (``potflow_evaluate_fit``),
    so the longest step name that ends the rule name wins.
    """
    matches = [name for name in steps if rule == name or rule.endswith("_" + name)]
    if not matches:
        raise KeyError(f"no step for rule {rule!r} (known: {', '.join(sorted(steps))})")
    return steps[max(matches, key=len)]
