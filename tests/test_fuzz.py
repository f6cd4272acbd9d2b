"""Fuzzing of input parsing and preprocessing with atheris, for a bounded time: nothing escapes but the project's
own invalid-input errors (fuzz/fuzz_inputs.py says what is fuzzed)."""

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

SECONDS = int(os.environ.get("CAPTCHA_FUZZ_SECONDS", "30"))


def test_fuzzing_finds_no_crash(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("atheris is not installed; CI installs it from requirements-dev.txt")
        pytest.skip("atheris is not installed (pip install -r requirements-dev.txt)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_inputs.py"),
            f"-max_total_time={SECONDS}",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-"))]
    assert done.returncode == 0 and not crashes, done.stderr[-5000:]
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) > 1000, done.stderr[-2000:]
    assert len(list(corpus.iterdir())) >= 8  # the seeds of every format, plus what the fuzzer kept
