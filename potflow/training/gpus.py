"""Distinct GPUs for concurrent local GPU jobs.

Snakemake's local executor counts a ``gpu`` resource (so at most ``--resources gpu=N`` GPU jobs
run at once) but never tells a job *which* GPU it got: every job would start on GPU 0. A job
therefore claims free GPU indices itself, with one ``flock`` lock file per GPU, and exports them
as ``CUDA_VISIBLE_DEVICES`` before CUDA is initialised. The kernel drops a lock when its process
ends, however it ends, so a crashed job never leaves a GPU claimed.

A scheduler that already assigns GPUs (Slurm sets ``CUDA_VISIBLE_DEVICES`` for ``--gpus``) wins:
an already-set ``CUDA_VISIBLE_DEVICES`` is left as it is and no lock is taken.

The GPUs to hand out are, in order of precedence: the ``pool`` argument, ``$POTFLOW_GPUS``
(comma-separated indices, e.g. ``0,2``), or every GPU that ``nvidia-smi`` lists. Counting GPUs
through torch would initialise CUDA in this process, after which ``CUDA_VISIBLE_DEVICES`` no
longer has any effect, so it is not used here.

In a workflow script::

    with claim_gpus(snakemake.resources.get("gpu", 0)) as claim:
        device = "cuda" if claim.devices else "cpu"   # import/initialise CUDA only now

or around a command: ``potflow gpu -n 1 -- torchrun ...``.
"""

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VISIBLE = "CUDA_VISIBLE_DEVICES"


POOL_ENV = "POTFLOW_GPUS"


LOCK_DIR_ENV = "POTFLOW_GPU_LOCK_DIR"


class GpuClaimError(RuntimeError):
    """The job asks for more GPUs than the machine has, or none became free in time."""


@dataclass
class GpuClaim:
    """GPUs held by this process; ``devices`` are the values put in CUDA_VISIBLE_DEVICES.

    ``source`` says where they came from: ``scheduler`` (CUDA_VISIBLE_DEVICES was already set),
    ``lock`` (claimed here) or ``none`` (no GPU asked for, or the machine has none).
    """

    devices: list
    source: str
    _fds: list = field(default_factory=list, repr=False)

    def release(self):
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops its flock
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _parse_indices(text):
    return [s.strip() for s in str(text).split(",") if s.strip()]


def available_gpus(pool=None, environ=None):
    """GPU indices this machine offers to potflow jobs (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if pool is not None:
        return [str(i) for i in pool]
    if environ.get(POOL_ENV) is not None:
        return _parse_indices(environ[POOL_ENV])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []  # a driver that does not answer offers no GPU
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def default_lock_dir(environ=None):
    environ = os.environ if environ is None else environ
    if environ.get(LOCK_DIR_ENV):
        return Path(environ[LOCK_DIR_ENV])
    # One folder per machine, shared by all users: the GPUs are the machine's.
    return Path(tempfile.gettempdir()) / "potflow-gpu-locks"


def _open_lock_dir(lock_dir):
    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        with contextlib.suppress(FileExistsError):
            lock_dir.mkdir(parents=True)
            # Like /tmp: anyone may add lock files, nobody may delete another's.
            with contextlib.suppress(OSError):
                lock_dir.chmod(0o1777)
    return lock_dir


def _try_lock(lock_dir, index):
    """An fd holding GPU ``index``'s lock, or None if another process holds it."""
    # flock works on a read-only descriptor, so another user's lock file can be locked too.
    fd = os.open(lock_dir / f"gpu{index}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def claim_gpus(
    count=1, *, pool=None, lock_dir=None, timeout=None, poll=0.5, environ=None, log=None
):
    """Claim ``count`` GPUs for this process and export them as CUDA_VISIBLE_DEVICES.

    - CUDA_VISIBLE_DEVICES already set (e.g. by Slurm): left as it is, nothing locked.
    - ``count`` 0: CUDA_VISIBLE_DEVICES is set empty, so a CPU job never lands on a GPU.
    - a machine with no GPU: nothing claimed, the job runs on the CPU (``devices == []``).
    - otherwise waits (``timeout`` seconds, None = for ever) until ``count`` GPUs are free;
      all are taken at once, so two jobs never hold half of each other's GPUs.
    The GPUs stay claimed until ``release()`` (or the end of a ``with`` block) or the end of
    the process.
    """
    environ = os.environ if environ is None else environ
    count = int(count or 0)
    if VISIBLE in environ:
        return GpuClaim(_parse_indices(environ[VISIBLE]), "scheduler")
    if count <= 0:
        environ[VISIBLE] = ""
        return GpuClaim([], "none")
    gpus = available_gpus(pool, environ)
    if not gpus:
        return GpuClaim([], "none")
    if count > len(gpus):
        raise GpuClaimError(
            f"the job asks for {count} GPUs (resources: gpu) but this machine offers "
            f"{len(gpus)} (GPU {', '.join(gpus)}); lower the rule's gpu resource or set {POOL_ENV}"
        )
    lock_dir = _open_lock_dir(lock_dir or default_lock_dir(environ))
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting_said = False
    while True:
        held = []
        for index in gpus:
            fd = _try_lock(lock_dir, index)
            if fd is not None:
                held.append((index, fd))
                if len(held) == count:
                    break
        if len(held) == count:
            devices = [index for index, _ in held]
            environ[VISIBLE] = ",".join(devices)
            return GpuClaim(devices, "lock", [fd for _, fd in held])
        for _, fd in held:
            os.close(fd)  # not enough free: give back the partial set and wait
        if deadline is not None and time.monotonic() >= deadline:
            raise GpuClaimError(
                f"no {count} of the GPUs {', '.join(gpus)} became free within {timeout} s "
                f"(locks in {lock_dir})"
            )
        if log is not None and not waiting_said:
            log(f"waiting for {count} free GPU(s) among {', '.join(gpus)} (locks in {lock_dir})")
            waiting_said = True
        time.sleep(poll)
