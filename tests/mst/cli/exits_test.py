"""`exits.run`: a script's process skips the interpreter's last collection at exit; a process
that calls a script's `main` and goes on keeps collecting."""

import subprocess
import sys

from support import REPO

# A script body leaves garbage in a reference cycle whose finaliser prints: the interpreter's last
# collection would find it and print "collected" at exit.
SCRIPT = """
import gc, sys
from mst.cli import exits
class Cycle:
  def __del__(self):
    print("collected", flush=True)
def body(argv):
  cycle = Cycle()
  cycle.me = cycle
  return exits.OK
status = exits.run("mst-test", body, [])
{after}
sys.exit(status)
"""


def _output(after: str = "") -> str:
  done = subprocess.run([sys.executable, "-c", SCRIPT.format(after=after)], cwd=REPO,
                        capture_output=True, text=True, check=True, timeout=120)
  return done.stdout


def test_a_scripts_process_exits_without_walking_its_objects_again():
  assert _output() == ""


def test_garbage_is_still_collected_while_the_process_goes_on():
  assert _output("gc.collect()") == "collected\n"
