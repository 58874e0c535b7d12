"""A private single-node SLURM cluster for the tests: munged, slurmctld and slurmd on 127.0.0.1.

Everything (munge key and socket, slurm.conf, state, spool, logs) lives in one directory; nothing
under /etc or /run is touched, and clients find the cluster through SLURM_CONF only. The node is
this machine with the CPUs and memory `slurmd -C` detects, plus one placeholder GPU (a GRES backed
by /dev/null) so jobs that ask for `--gpus=1` are scheduled as on a GPU cluster; they then run on
the CPU because there is no CUDA device. No accounting database: job states come from `squeue`,
kept for MIN_JOB_AGE seconds after a job ends.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")
# The slurm plugin checks squeue-based status only if MinJobAge >= 3 x its first status interval.
MIN_JOB_AGE = 3600
START_TIMEOUT_S = 60


def _find(name: str) -> str | None:
    """The program on PATH, or in /usr/sbin, /sbin where Debian puts the daemons."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def missing_binaries() -> list[str]:
    """Names of the SLURM/munge programs that are not installed."""
    return [name for name in DAEMONS + CLIENTS if _find(name) is None]


def _which(name: str) -> str:
    path = _find(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH or in /usr/sbin (apt-get install slurm-wlm munge)")
    return path


def node_hardware() -> dict[str, int]:
    """CPUs, sockets, cores, threads and RealMemory (MB) of this machine, as `slurmd -C` sees them."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    missing = [key for key in keys if key not in fields]
    if missing:
        raise ValueError(f"`slurmd -C` printed no {', '.join(missing)}: {out.strip()!r}")
    return {key: int(fields[key]) for key in keys}


def _free_port() -> int:
    """A TCP port free now (another program could take it before the daemon binds: unlikely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running private cluster. `env` is the environment its clients (sbatch, squeue) need."""

    root: Path
    node: str
    hardware: dict[str, int]
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client against this cluster."""
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=check, timeout=30)

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller knows (finished ones stay MIN_JOB_AGE s): id, name, comment, state."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T").stdout
        keys = ("id", "name", "comment", "state")
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]

    def logs(self, tail: int = 40) -> str:
        """The last lines of each daemon log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def write_config(root: Path, hardware: dict[str, int], user: str) -> tuple[Path, str]:
    """munge key, slurm.conf and gres.conf for one node = this machine, and the srun wrapper;
    returns (slurm.conf, node name)."""
    node = socket.gethostname().split(".")[0]  # slurmctld must find itself in SlurmctldHost
    for sub in ("munge", "munge/key", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o755)  # clients connect to the socket inside
    (root / "munge/key").chmod(0o700)  # munged refuses a key others can read
    key = root / "munge/key/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node_line = " ".join(f"{k}={v}" for k, v in hardware.items())
    conf = f"""\
ClusterName=bertgeom-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {node_line} Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    (root / "slurm.conf").write_text(conf)
    (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    # snakemake-executor-plugin-slurm-jobstep 0.6.1 removes every SLURM_* variable, SLURM_CONF too,
    # before its srun inside the job; real clusters have /etc/slurm/slurm.conf, this one does not.
    shim = root / "bin" / "srun"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nSLURM_CONF="{root}/slurm.conf" exec "{_which("srun")}" "$@"\n')
    shim.chmod(0o755)
    return root / "slurm.conf", node


def _wait(predicate, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{cluster.logs()}")
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"SLURM test cluster: no {what} after {START_TIMEOUT_S} s\n{cluster.logs()}")


def _munge_ok(cluster: SlurmCluster) -> bool:
    sock = str(cluster.root / "munge/munge.socket")
    return subprocess.run([_which("munge"), "-n", "-S", sock], capture_output=True).returncode == 0


def _node_idle(cluster: SlurmCluster) -> bool:
    result = cluster.run("sinfo", "--noheader", "--Node", "--format=%t", check=False)
    return result.returncode == 0 and result.stdout.strip() == "idle"


def start(root: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in the foreground under `root`; return once the node is idle.

    Stops whatever it started if any step fails.
    """
    root = Path(root)
    hardware = node_hardware()
    conf, node = write_config(root, hardware, getpass.getuser())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    cluster = SlurmCluster(root=root, node=node, hardware=hardware, env=env)
    commands = {
        "munged": [
            _which("munged"), "--foreground", "--force",
            f"--socket={root}/munge/munge.socket", f"--key-file={root}/munge/key/munge.key",
            f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/key/munged.seed",
            f"--log-file={root}/log/munged.log",
        ],
        "slurmctld": [_which("slurmctld"), "-D", "-c", "-f", str(conf)],
        "slurmd": [_which("slurmd"), "-D", "-N", node, "-f", str(conf)],
    }
    ready = {
        "munged": (lambda: _munge_ok(cluster), "munge credential"),
        "slurmctld": (lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, "slurmctld answer"),
        "slurmd": (lambda: _node_idle(cluster), "idle node"),
    }
    try:
        for name, command in commands.items():
            with open(root / "log" / f"{name}.out", "wb") as out:
                cluster.procs[name] = subprocess.Popen(
                    command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            predicate, what = ready[name]
            _wait(predicate, what, cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def stop(cluster: SlurmCluster, timeout_s: float = 15) -> None:
    """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged (SIGTERM, then SIGKILL)."""
    if "slurmctld" in cluster.procs and cluster.procs["slurmctld"].poll() is None:
        try:
            ids = [job["id"] for job in cluster.jobs() if job["state"] in ("PENDING", "RUNNING", "CONFIGURING")]
            if ids:
                cluster.run("scancel", *ids, check=False)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and any(
                    job["state"] in ("RUNNING", "COMPLETING") for job in cluster.jobs()
                ):
                    time.sleep(0.5)
        except (subprocess.SubprocessError, OSError):
            pass  # the daemons go down below anyway
    for name in reversed(list(cluster.procs)):
        proc = cluster.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
