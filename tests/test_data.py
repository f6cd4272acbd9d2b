"""Labelled folders: a labels.csv may name only images inside its own folder."""

import subprocess
import sys

import pytest
from PIL import Image

from captcha_api.training.data import LabelsError, read_labels

from .conftest import ROOT


@pytest.fixture
def outside(tmp_path):
    """A folder with an image beside it (outside it) that a hostile labels.csv tries to reach."""
    secret = tmp_path / "secret.png"
    Image.new("L", (200, 60), 255).save(secret)
    folder = tmp_path / "labelled"
    folder.mkdir()
    Image.new("L", (200, 60), 255).save(folder / "ok.png")
    return folder, secret


@pytest.mark.parametrize("entry", ["../secret.png", "images/../../secret.png", "ABSOLUTE", "", "."])
def test_an_entry_outside_the_folder_is_refused_naming_it(outside, entry):
    folder, secret = outside
    entry = str(secret) if entry == "ABSOLUTE" else entry
    (folder / "labels.csv").write_text(f"filename,text\nok.png,25бв\n{entry},4567\n", encoding="utf-8")
    with pytest.raises(LabelsError) as error:
        read_labels(folder)
    message = str(error.value)
    assert "line 3" in message and repr(entry) in message and "inside" in message


def test_entries_inside_the_folder_still_load(outside):
    folder, _ = outside
    (folder / "sub").mkdir()
    Image.new("L", (200, 60), 255).save(folder / "sub" / "b.png")
    (folder / "labels.csv").write_text("filename,text\nok.png,25бв\nsub/b.png,4567\n./sub/../ok.png,77\n")
    labelled = read_labels(folder)
    assert labelled.texts == ["25бв", "4567", "77"]
    assert [p.resolve() for p in labelled.files] == [
        (folder / "ok.png").resolve(),
        (folder / "sub" / "b.png").resolve(),
        (folder / "ok.png").resolve(),
    ]


def test_evaluate_refuses_the_entry_in_one_line_and_reads_nothing(outside):
    folder, secret = outside
    (folder / "labels.csv").write_text(f"filename,text\n{secret},4567\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "captcha_api", "evaluate", "--data", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and str(secret) in done.stderr
    assert "Traceback" not in done.stderr and "4567" not in done.stdout
