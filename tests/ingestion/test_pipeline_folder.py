"""Two processes may build the load's pipeline while one resets it before a load (a CLI run
starting while a scheduled run loads): neither may fail on the half-made working folder."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from common.settings import REPO_DIR

ROUNDS = 40
CODE = """
import sys
from common.settings import load_settings
from ingestion.pipeline import make_pipeline, reset_local_state
settings = load_settings()
for _ in range(int(sys.argv[1])):
    pipeline = make_pipeline(settings)
    reset_local_state(pipeline, settings)
"""


def test_building_and_resetting_the_pipeline_in_two_processes_never_fails(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    env = {**os.environ, **settings.subprocess_env()}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CODE, str(ROUNDS)],
            cwd=REPO_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
