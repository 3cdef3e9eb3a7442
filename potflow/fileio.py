"""Atomic writes: a killed job or a full disk never leaves a truncated file behind.

A write goes to a hidden temporary beside the output (``.NAME.*.tmp``) that is renamed onto the
output only when complete. A failed write (``OSError``, e.g. no space left) removes it and ends
with a one-line ``PotflowWriteError`` naming the output; temporaries a killed job left behind
are removed by the next write of the same output.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from potflow.errors import PotflowWriteError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clean_stale_temporaries(path):
    """Remove the temporaries a killed atomic write of ``path`` left beside it."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _write_error(path, exc):
    """A PotflowWriteError for a write that failed with ``exc`` (or with an OSError behind it,
    as torch's writer reports one), else None (an interrupt, any other error)."""
    if not isinstance(exc, Exception):
        return None
    cause = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    reason = cause.strerror or str(cause) or type(cause).__name__
    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = ""
    return PotflowWriteError(path, f"cannot write ({reason}{free}); nothing was written")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        error = _write_error(path, exc)
        if error is not None:
            raise error from None
        raise


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _write_error(path, exc)
        if error is not None:
            raise error from None
        raise


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="\n") as fh:
            fh.write(text)


def write_tsv(path, table, float_format=None):
    """A pandas table as tab-separated text with one header line, written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format=float_format)


def write_torch(path, obj):
    """``torch.save`` of plain tensors and values, atomically."""
    import torch  # here, not at the top: Snakemake imports fileio to parse the workflow

    buffer = io.BytesIO()
    torch.save(obj, buffer)  # in memory: torch's many small writes through a Python file cost 2x
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())  # a failed write (disk full) raises its OSError here


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz(path, **arrays):
    """Uncompressed npz, atomically; load it with ``np.load(path, allow_pickle=False)``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
