"""Stand-ins for the Slurm commands that snakemake-executor-plugin-slurm calls, for tests.

Not a scheduler: ``sbatch`` records its arguments, starts the submitted job at once on this
machine (in the background, in its own session, output to ``--output``) and prints the job id;
``sacct``/``squeue`` report each job's state from its record in the plugin's parsable formats;
``scancel`` kills a job's process group; ``srun`` (which the plugin's jobstep executor runs
inside the job) records its arguments and runs its command. ``sinfo``, ``sacctmgr``, ``sshare``
and ``scontrol`` answer the questions the plugin asks about partitions, accounts and MinJobAge.

State lives in ``$STANDIN_SLURM_DIR``: ``jobs/<id>.json`` (one record per job: parsed sbatch
options, argv, state, exit code), ``srun.jsonl`` (one line per srun) and ``calls.log``.
Each command is a small sh script beside this file that runs it with ``$STANDIN_SLURM_PYTHON``.
An option the stand-in does not know makes sbatch fail, so a test notices new plugin behaviour.
"""

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("STANDIN_SLURM_DIR", "/tmp/slurm-standin"))
PARTITION = "standin"
ACCOUNT = "standin_account"
NODE = "standin-node"
FINAL = ("COMPLETED", "FAILED", "CANCELLED")

# sbatch options: name in the record, and whether the value is a separate argument.
SBATCH_VALUE = {
    "--job-name": "job_name", "-J": "job_name", "--output": "output", "-o": "output",
    "--comment": "comment", "-A": "account", "--account": "account", "-p": "partition",
    "--partition": "partition", "-t": "time", "--time": "time", "--mem": "mem",
    "--mem-per-cpu": "mem_per_cpu", "-D": "workdir", "--chdir": "workdir", "-C": "constraint",
    "--constraint": "constraint", "--qos": "qos", "--clusters": "clusters", "--nodes": "nodes",
    "-N": "nodes", "--ntasks": "ntasks", "-n": "ntasks", "--cpus-per-task": "cpus_per_task",
    "-c": "cpus_per_task", "--cpus-per-gpu": "cpus_per_gpu", "--gpus": "gpus", "-G": "gpus",
    "--gres": "gres", "--ntasks-per-gpu": "ntasks_per_gpu", "--ntasks-per-node": "ntasks_per_node",
    "--export": "export", "--wrap": "wrap", "--exclude": "exclude", "--reservation": "reservation",
    "--array": "array",
}  # fmt: skip
SBATCH_FLAGS = {"--parsable": "parsable", "--requeue": "requeue", "--no-requeue": "no_requeue"}


def log_call(argv):
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "calls.log", "a") as fh:
        fh.write(shlex.join(argv) + "\n")


def job_path(jobid):
    return STATE / "jobs" / f"{jobid}.json"


def read_job(jobid):
    for _ in range(50):  # a writer replaces the file atomically; retry a torn read anyway
        try:
            return json.loads(job_path(jobid).read_text())
        except (json.JSONDecodeError, FileNotFoundError):
            time.sleep(0.02)
    return None


def write_job(job):
    path = job_path(job["id"])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, path)


@contextlib.contextmanager
def jobs_locked():
    """Serialises state changes between the job runners and scancel."""
    with open(STATE / "jobs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def finish_job(jobid, **fields):
    with jobs_locked():
        job = read_job(jobid)
        if job["state"] != "CANCELLED":  # scancel won: keep its verdict
            job.update(fields)
            write_job(job)


def all_jobs():
    jobs = []
    for path in sorted((STATE / "jobs").glob("*.json"), key=lambda p: int(p.stem)):
        job = read_job(path.stem)
        if job is not None:
            jobs.append(job)
    return jobs


def new_jobid():
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "next_jobid", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        jobid = int(fh.read().strip() or 1000) + 1
        fh.seek(0)
        fh.truncate()
        fh.write(str(jobid))
    return str(jobid)


def parse_sbatch(argv):
    opts, positional, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if arg in SBATCH_FLAGS:
            opts[SBATCH_FLAGS[arg]] = True
        elif key in SBATCH_VALUE and eq:
            opts[SBATCH_VALUE[key]] = value
        elif arg in SBATCH_VALUE:
            opts[SBATCH_VALUE[arg]] = argv[i + 1]
            i += 1
        elif len(arg) > 2 and arg[:2] in SBATCH_VALUE and not arg.startswith("--"):
            opts[SBATCH_VALUE[arg[:2]]] = arg[2:]  # -n1, -c4
        elif arg.startswith("-"):
            raise SystemExit(f"sbatch (stand-in): unknown option {arg}")
        else:
            positional.append(arg)
        i += 1
    return opts, positional


def sbatch(argv):
    opts, positional = parse_sbatch(argv)
    if "array" in opts:
        raise SystemExit("sbatch (stand-in): --array is not supported")
    if "wrap" in opts:
        script = "#!/bin/sh\n" + opts["wrap"] + "\n"
    elif positional:
        script = sys.stdin.read() if positional[0] in ("-", "/dev/stdin") else Path(positional[0]).read_text()
    else:
        raise SystemExit("sbatch (stand-in): no --wrap and no script")
    jobid = new_jobid()
    (STATE / "jobs").mkdir(parents=True, exist_ok=True)
    workdir = opts.get("workdir", os.getcwd())
    output = opts.get("output", f"slurm-{jobid}.out").replace("%j", jobid)
    script_path = STATE / "jobs" / f"{jobid}.sh"
    script_path.write_text(script)
    job = {
        "id": jobid, "name": opts.get("job_name", "sbatch"), "argv": argv, "options": opts,
        "workdir": workdir, "output": str(Path(workdir, output)), "script": str(script_path),
        "state": "PENDING", "exit_code": None, "pid": None, "submitted": time.time(),
    }  # fmt: skip
    write_job(job)
    runner = [sys.executable, os.path.abspath(__file__), "_run", jobid]
    with open(job["output"], "ab") as out:
        subprocess.Popen(
            runner, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    print(jobid if opts.get("parsable") else f"Submitted batch job {jobid}")


def job_environment(job):
    opts = job["options"]
    env = dict(os.environ)  # --export=ALL: the submitter's environment
    env.update(
        SLURM_JOB_ID=job["id"], SLURM_JOBID=job["id"], SLURM_JOB_NAME=job["name"],
        SLURM_SUBMIT_DIR=job["workdir"], SLURM_JOB_PARTITION=opts.get("partition", PARTITION),
        SLURM_NTASKS=opts.get("ntasks", "1"), SLURMD_NODENAME=NODE,
    )  # fmt: skip
    if "cpus_per_task" in opts:
        env["SLURM_CPUS_PER_TASK"] = opts["cpus_per_task"]
    if "mem" in opts:
        env["SLURM_MEM_PER_NODE"] = opts["mem"]
    if "gpus" in opts:
        count = int(str(opts["gpus"]).split(":")[-1])
        env["SLURM_GPUS"] = opts["gpus"]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(count))
    return env


def run_job(jobid):
    """The background half of sbatch: run the job script, record how it ended.
    ``STANDIN_START_DELAY`` (seconds): how long a job waits in the queue (PENDING) first."""
    time.sleep(float(os.environ.get("STANDIN_START_DELAY", "0")))
    with jobs_locked():
        job = read_job(jobid)
        if job["state"] == "CANCELLED":
            return
        # this runner leads the job's process group: scancel kills the group
        job.update(state="RUNNING", pid=os.getpid(), started=time.time())
        write_job(job)
    code = subprocess.call(["/bin/sh", job["script"]], env=job_environment(job))
    finish_job(jobid, state="COMPLETED" if code == 0 else "FAILED", exit_code=code, ended=time.time())


def states_for(argv):
    """Jobs selected by --name (the plugin's run id) or -j/--jobs, as (id, state)."""
    name = jobs = None
    for i, arg in enumerate(argv):
        if arg in ("--name", "-j", "--jobs") and i + 1 < len(argv):
            name, jobs = (argv[i + 1], jobs) if arg == "--name" else (name, argv[i + 1])
        elif arg.startswith("--name="):
            name = arg.split("=", 1)[1]
    selected = []
    for job in all_jobs():
        if name is not None and job["name"] != name:
            continue
        if jobs is not None and job["id"] not in jobs.split(","):
            continue
        selected.append((job["id"], job["state"]))
    return selected


def sacct(argv):
    text = " ".join(argv)
    if "Account" in text:  # the plugin guessing an account from past jobs
        print(ACCOUNT)
    elif "--format=Reason" in text or "Reason" in text:  # why a job (step) failed
        jobid = argv[argv.index("-j") + 1].split(".")[0]
        job = read_job(jobid)
        if job and job["state"] == "FAILED" and argv[argv.index("-j") + 1].endswith(".0"):
            print(f"NonZeroExitCode (exit code {job['exit_code']})")
    elif "nodelist" in text:
        print(NODE)
    elif "JobIdRaw,State" in text:
        for jobid, state in states_for(argv):
            print(f"{jobid}|{state}")
    else:
        raise SystemExit(f"sacct (stand-in): unexpected query {text}")


def squeue(argv):
    fmt = "%i %T"
    for i, arg in enumerate(argv):
        if arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        elif arg in ("--format", "-o"):
            fmt = argv[i + 1]
    for jobid, state in states_for(argv):
        print(fmt.replace("%i", jobid).replace("%T", state))


def scancel(argv):
    for jobid in (a for a in argv if not a.startswith("-")):
        with jobs_locked():
            job = read_job(jobid)
            if job is None:
                raise SystemExit(f"scancel (stand-in): invalid job id {jobid}")
            if job["state"] in FINAL:
                continue
            job["state"] = "CANCELLED"
            write_job(job)
        if job["pid"]:  # None: still pending, its runner will not start it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job["pid"], signal.SIGTERM)


SRUN_VALUE = {"-n", "-N", "-c", "-J", "--jobid", "--ntasks", "--nodes", "--cpus-per-task", "--gpus", "--mem"}


def srun(argv):
    """Run the command after the options; record the options (as the job step's request)."""
    i, opts = 0, []
    while i < len(argv) and argv[i].startswith("-"):
        opts.append(argv[i])
        if argv[i] in SRUN_VALUE:
            opts.append(argv[i + 1])
            i += 1
        i += 1
    command = argv[i:]
    with open(STATE / "srun.jsonl", "a") as fh:
        fh.write(json.dumps({"jobid": os.environ.get("SLURM_JOB_ID"), "options": opts}) + "\n")
    for opt in opts:
        if opt.startswith("--gpus="):
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(int(opt.split("=")[1]))))
    if not command:
        raise SystemExit("srun (stand-in): no command")
    os.execvp(command[0], command)


def main():
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "_run":
        return run_job(argv[0])
    log_call([command, *argv])
    if command == "sbatch":
        sbatch(argv)
    elif command == "sacct":
        sacct(argv)
    elif command == "squeue":
        squeue(argv)
    elif command == "scancel":
        scancel(argv)
    elif command == "srun":
        srun(argv)
    elif command == "sinfo" and any("%G" in a for a in argv):
        print("64|512000|gpu:1")  # CPUs|memory|gres (sinfo -o %c|%m|%G): potflow checks jobs fit
    elif command == "sinfo":
        print(f"PARTITION\n{PARTITION}*")
    elif command in ("sacctmgr", "sshare"):
        print(ACCOUNT)
    elif command == "scontrol":
        print("MinJobAge               = 300 sec")
    else:
        raise SystemExit(f"slurm stand-in: unknown command {command}")


if __name__ == "__main__":
    main()
