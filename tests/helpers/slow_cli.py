"""Run the medvlm CLI with every optimizer step slowed down, so a test can kill it mid-run.

Usage: python -m tests.helpers.slow_cli SECONDS_PER_STEP medvlm-args...
The numerics are untouched: only a sleep is added after each training step.
"""

import sys
import time

from medvlm.cli import main
from medvlm.train.trainer import MedvlmTrainer

delay = float(sys.argv[1])
original = MedvlmTrainer.training_step


def slow_step(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    time.sleep(delay)
    return result


MedvlmTrainer.training_step = slow_step
raise SystemExit(main(sys.argv[2:]))
