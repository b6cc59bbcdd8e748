"""What the benchmark scripts measure in their child processes."""

import resource


def peak_rss_mb():
    """This process's peak resident memory in MB (VmHWM: unlike ru_maxrss it is not
    inherited from the parent across fork and exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
