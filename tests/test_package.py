"""The project as a package: `pip install .` carries the shipped models and the `captcha-ocr` command."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Built from a copy of the project's files (those git tracks or would): a build writes build/ and *.egg-info
    # beside the sources, and must not see what a run left in the work tree.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the project's files cannot be told from what a run left")
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("captcha_ocr-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_the_shipped_models_and_no_tooling_data(wheel):
    names = set(wheel.namelist())
    for model in ("fssp", "captcha-v2"):
        assert {f"captcha_api/shipped_model/{model}.onnx", f"captcha_api/shipped_model/{model}.json"} <= names
    assert not any(name.startswith(("tests/", "scripts/", "runs/", "model/")) for name in names)


def test_the_wheel_declares_its_command_and_dependencies(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = wheel.read(meta).decode()
    entry_points = wheel.read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "captcha-ocr = captcha_api.cli:main" in entry_points
    serving = [line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line]
    for name in serving:  # requirements.txt is the list of the default install
        assert f"Requires-Dist: {name}==" in metadata, name
    assert "Provides-Extra: train" in metadata and "Provides-Extra: dev" in metadata
    assert "Requires-Dist: tensorflow-cpu==" in metadata and 'extra == "train"' in metadata
