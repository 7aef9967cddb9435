"""glibc malloc settings for long runs: keep freed buffers for reuse instead of handing them back to
the operating system and faulting them in again.

XLA's CPU runtime allocates a train step's large temporary buffers (hundreds of MB) from its worker
threads and frees them at the end of the step. glibc serves such a request from a thread's own arena
with a fresh `mmap` (an arena heap holds at most 64 MB) and unmaps it on `free`, so every step
touched every page anew: the demo's 1500 steps took 80 million minor page faults and more than
four minutes of system time. With one arena, no `mmap` for allocations and a high trim threshold,
a freed buffer stays in the heap and the next step reuses it. `mst-predict` uses it too (each
forward's buffers: on 9 photos, 330k page faults became 125k and system time halved), and so do
the experiments scripts that train in their own process (`sweep.py run`: a 150-step demo run took
8.8 million page faults and 24 s of system time without it, 0.6 million and 5 s with it). Other
allocators and platforms are left alone.
"""

import ctypes
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
SETTINGS = (
    (_M_ARENA_MAX, 1),  # every thread allocates from the main heap, which can grow past 64 MB
    (_M_MMAP_MAX, 0),  # large blocks come from that heap too, so `free` keeps them
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top is never returned to the system
    (_M_TOP_PAD, 64 << 20),  # and it grows in 64 MB steps
)


def keep_freed_memory() -> bool:
  """Applies `SETTINGS` with glibc's `mallopt`; False where that is not glibc. Call it first
  thing in a process, before other threads start."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc (musl, for one, has no mallopt)
    return False
  return all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
