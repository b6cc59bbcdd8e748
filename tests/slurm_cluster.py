"""A real single-node SLURM cluster on this host, for the tests marked `slurm`.

Debian's slurm-wlm and munge are installed with apt-get when their daemons are missing
(this needs root). Everything the cluster writes lives in one folder: slurm.conf and
gres.conf for this host (controller and compute node both on 127.0.0.1, the host's own
CPU count and memory, one fake GPU), a munge key and socket, state, spool, logs. The
three daemons (munged, slurmctld, slurmd) run in the foreground as children of this
process; stop() cancels what is still queued and ends exactly those three PIDs. Memory is
enforced (a job step above its --mem is killed), so requests that are too small fail.

If the test process dies without stopping the cluster, the kernel sends each daemon
SIGTERM (PR_SET_PDEATHSIG), so nothing outlives the session.

Client commands find the cluster through SLURM_CONF (see Cluster.env()). Inside a job
the Snakemake jobstep executor drops every SLURM_* variable before it calls srun, so
srun there would look for /etc/slurm/slurm.conf: Cluster.env() therefore also puts a
folder first on PATH whose `srun` names the config before calling the real one.

Run by hand:  python tests/slurm_cluster.py FOLDER  (starts, prints the environment,
waits for Enter, stops).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "srun", "scontrol")
APT_PACKAGES = ("slurm-wlm", "munge")
# Memory left to the host (Snakemake, the test process, the daemons) when the node's
# RealMemory is set from the host's total.
MEMORY_MARGIN_MB = 1024
NODE = "localhost"


class Unavailable(Exception):
    """SLURM cannot be provided here (not root, no apt-get, install failed)."""


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def missing_programs():
    return [name for name in DAEMONS + CLIENTS + ("mungekey",) if not _which(name)]


def install():
    """Install slurm-wlm and munge with apt-get if any program is missing.

    Raises Unavailable with the reason when that cannot be done here."""
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"SLURM programs {missing} are missing and installing them needs root")
    apt = shutil.which("apt-get")
    if not apt:
        raise Unavailable(f"SLURM programs {missing} are missing and there is no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = ([apt, "update", "-q"],
             [apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES])
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"'{' '.join(step)}' failed:\n{(done.stdout + done.stderr)[-2000:]}")
    still = missing_programs()
    if still:
        raise Unavailable(f"after apt-get install {' '.join(APT_PACKAGES)}, {still} are still missing")


def host_memory_mb():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    cpus: int
    memory_mb: int
    processes: dict = field(default_factory=dict)  # daemon name -> Popen

    @property
    def conf(self):
        return self.folder / "etc" / "slurm.conf"

    def env(self, base=None):
        """Environment for client commands (and Snakemake) talking to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.folder / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *cmd, check=True, timeout=60):
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def logs(self):
        """The tail of each daemon's log (for failure messages)."""
        text = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / "log" / name
            if path.exists():
                text.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(text)

    def pids(self):
        return {name: proc.pid for name, proc in self.processes.items()}

    def stop(self):
        """Cancel queued jobs, then end exactly the daemons this Cluster started."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", str(os.getuid()), check=False, timeout=20)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    queue = self.run("squeue", "--noheader", "--states=RUNNING,PENDING,COMPLETING",
                                     check=False, timeout=20)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(1)
            except subprocess.TimeoutExpired:
                pass
        # slurmd first (it ends its job steps), the controller, munge last.
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.processes.clear()


def _write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def write_config(folder, cpus, memory_mb, ctld_port, slurmd_port):
    folder = Path(folder)
    for sub in ("etc", "state", "spool", "log", "run", "munge", "bin"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o700)
    conf = folder / "etc" / "slurm.conf"
    _write(conf, f"""\
# Written by tests/slurm_cluster.py: one node on 127.0.0.1, for tests only.
ClusterName=shardmaptest
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge" / "munge.socket"}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "run" / "slurmctld.pid"}
SlurmdPidFile={folder / "run" / "slurmd.pid"}
SlurmctldLogFile={folder / "log" / "slurmctld.log"}
SlurmdLogFile={folder / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes by their parents, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
LaunchParameters=use_interactive_step
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database: status comes from squeue, which keeps finished jobs for
# MinJobAge seconds (the plugin wants at least 3 x its first status interval).
AccountingStorageType=accounting_storage/none
# Memory is enforced without cgroups: every second each job step's resident memory is
# summed from /proc, and a step above its job's --mem is killed.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmdTimeout=60
GresTypes=gpu
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    # A GPU that is not there: the scheduler counts it, nothing opens it.
    _write(folder / "etc" / "gres.conf", f"NodeName={NODE} Name=gpu File=/dev/null\n")
    real_srun = _which("srun")
    _write(folder / "bin" / "srun",
           f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{real_srun}" "$@"\n', mode=0o755)
    return conf


def _die_with_parent():
    """In the daemon, before exec: get SIGTERM when the process that started it dies, even
    by SIGKILL, so no daemon outlives its test session."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait(predicate, timeout, what, cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n"
                                   + cluster.logs())
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n" + cluster.logs())


def start(folder, cpus=None, memory_mb=None):
    """Write the configuration into `folder`, start munged, slurmctld and slurmd, and
    wait until the node is idle. On any failure the daemons already started are stopped."""
    folder = Path(folder).resolve()
    cpus = cpus or os.cpu_count()
    memory_mb = memory_mb or max(512, host_memory_mb() - MEMORY_MARGIN_MB)
    write_config(folder, cpus, memory_mb, _free_port(), _free_port())
    cluster = Cluster(folder, cpus, memory_mb)
    key = folder / "munge" / "munge.key"
    subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True,
                   capture_output=True, timeout=30)
    key.chmod(0o600)
    logs = folder / "log"

    def launch(name, cmd):
        out = open(logs / f"{name}.stdout", "w")
        cluster.processes[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=cluster.env(),
                                                   start_new_session=True, preexec_fn=_die_with_parent)
        out.close()

    try:
        socket_path = folder / "munge" / "munge.socket"
        launch("munged", [_which("munged"), "--foreground", "--force", f"--socket={socket_path}",
                          f"--key-file={key}", f"--pid-file={folder / 'run' / 'munged.pid'}",
                          f"--log-file={logs / 'munged.log'}", f"--seed-file={folder / 'munge' / 'seed'}"])
        _wait(socket_path.exists, 30, "the munge socket", cluster)
        launch("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
        _wait(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, 60,
              "slurmctld to answer", cluster)
        launch("slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(cluster.conf)])

        def idle():
            state = cluster.run("sinfo", "--noheader", "--nodes", NODE, "--format=%T", check=False)
            return state.returncode == 0 and state.stdout.strip().rstrip("*") == "idle"

        _wait(idle, 90, f"node {NODE} to be idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":
    import sys

    install()
    running = start(sys.argv[1])
    try:
        print(f"SLURM_CONF={running.conf}\nPATH={running.env()['PATH']}\ndaemons: {running.pids()}")
        input("Enter stops the cluster. ")
    finally:
        running.stop()
