"""runtime/paddle_import.py: importing paddle on a worker thread leaves the
process's SIGTERM handler alone (Paddle's glog would take it over). Each case
runs in a fresh interpreter, since paddle's bootstrap happens once per process."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import real_models_config

SCRIPT = """
import os, signal, threading, time
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append("handled"))
def load():
    {load}
worker = threading.Thread(target=load)
worker.start()
worker.join()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("after SIGTERM:", got)
"""


def run(load: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT.format(load=load)],
                          capture_output=True, text=True, timeout=180)


def test_plain_import_of_paddle_takes_over_sigterm():
    # The root cause, shown so that this file notices if Paddle ever stops doing it.
    pytest.importorskip("paddle")
    done = run("import paddle")
    assert done.returncode != 0 and "after SIGTERM" not in done.stdout
    assert "SIGTERM" in done.stdout + done.stderr  # glog's FatalError report


def test_import_paddle_keeps_the_handler_in_place():
    pytest.importorskip("paddle")
    done = run("from posepipe.runtime.paddle_import import import_paddle; import_paddle(); import paddle.inference")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "after SIGTERM: ['handled']" in done.stdout


def test_building_a_pipeline_keeps_the_handler_in_place(shared_dir):
    # Every path that imports paddle while building a pipeline (device choice, backends) goes through it.
    pytest.importorskip("paddle")
    load = f"import posepipe; posepipe.create_pipeline(config={real_models_config(shared_dir)!r})"
    done = run(load)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "after SIGTERM: ['handled']" in done.stdout
