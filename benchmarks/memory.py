"""Peak resident memory of a stretch of work, measured by the kernel (Linux /proc); the Python
twin of benchmarks/memory.ts."""
import re


def status_kb(field):
    with open('/proc/self/status') as f:
        return int(re.search(r'^%s:\s+(\d+) kB' % field, f.read(), re.M).group(1))


def reset_peak():
    """Resets the peak (VmHWM) to the current RSS; returns the current RSS in bytes."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return status_kb('VmRSS') * 1024


def peak_bytes():
    """Peak RSS in bytes since the last reset_peak()."""
    return status_kb('VmHWM') * 1024
