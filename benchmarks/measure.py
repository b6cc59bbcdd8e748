"""What the benchmark scripts measure in their child processes."""

import json
import resource
import subprocess
import sys


def peak_rss_mb():
    """This process's peak resident memory in MB (VmHWM: unlike ru_maxrss it is not
    inherited from the parent across fork and exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_fresh_process(script, script_args, env):
    """Run ``script`` with ``script_args`` in a fresh Python process (so its peak RSS is
    its own) and return the JSON object on the last line it prints."""
    out = subprocess.run([sys.executable, str(script), *script_args], env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
