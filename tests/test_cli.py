"""The command-line tools: generate, train (with resume), evaluate --json, export, serve, scripts/predict.py, and
what a new user reads: --help, and the output of a training run."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from captcha_api.cli import build_parser, main
from captcha_api.core.artifact import ModelMetadata
from scripts.process import free_port

from .conftest import ROOT

pytest.importorskip("keras", reason="training dependencies (requirements-train.txt) are not installed")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    assert main(["generate", "--count", "24", "--out", str(out), "--seed", "3", "--workers", "1"]) == 0
    return out


def test_generate_one_length(tmp_path):
    from captcha_api.training.data import read_labels

    assert main(["generate", "--count", "6", "--out", str(tmp_path), "--length", "7", "--workers", "1"]) == 0
    assert {len(text) for text in read_labels(tmp_path).texts} == {7}


def test_evaluate_json_last_line(tiny_artifact, labelled, capsys):
    assert main(["evaluate", "--data", str(labelled), "--model", str(tiny_artifact), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["n"] == 24
    assert 0.0 <= figures["exact_match"] <= 1.0
    assert figures["char_accuracy"] <= 1.0
    assert figures["ms_per_image"] > 0
    assert any(line.startswith("exact match") for line in lines)


def test_evaluate_records_figures_in_metadata(tiny_artifact, labelled, tmp_path):
    import shutil

    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_artifact.with_suffix(suffix), tmp_path / f"copy{suffix}")
    model = tmp_path / "copy"
    assert main(["evaluate", "--data", str(labelled), "--model", str(model), "--record", "generated"]) == 0
    recorded = ModelMetadata.load(model.with_suffix(".json")).accuracy["generated"]
    assert recorded["n"] == 24 and "exact_match" in recorded and recorded["runtime"] == "onnx"


def test_train_checkpoints_and_resumes(labelled, tmp_path, caplog):
    caplog.set_level("INFO")
    common = ["train", "--name", "mini", "--synthetic", str(labelled), "--real", str(labelled)]
    common += ["--val-real", "6", "--real-repeat", "1", "--batch-size", "8", "--patience", "5"]
    common += ["--work-dir", str(tmp_path / "run")]
    assert main([*common, "--epochs", "1"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and (tmp_path / "run" / "curve.png").is_file()
    assert main([*common, "--epochs", "2"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert any("resuming from" in r.getMessage() for r in caplog.records)
    meta = ModelMetadata.load(tmp_path / "run" / "mini.json")
    assert meta.blank_index == len(meta.alphabet) and len(meta.training["holdout_files"]) == 6
    assert (tmp_path / "run" / "mini.keras").is_file() and (tmp_path / "run" / "mini.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # everything in the run's folder, nothing beside


def test_export_cli_writes_onnx(tiny_keras_artifact, tmp_path):
    out = tmp_path / "again.onnx"
    assert main(["export", "--model", str(tiny_keras_artifact.with_suffix(".keras")), "--out", str(out)]) == 0
    assert out.stat().st_size > 100_000


def test_predict_script_writes_tab_separated_lines(tiny_artifact, labelled, tmp_path):
    out = tmp_path / "predictions.txt"
    command = [sys.executable, str(ROOT / "scripts" / "predict.py"), str(labelled), "--model", str(tiny_artifact)]
    result = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24
    for line in lines:
        name, prediction, confidence = line.split("\t")
        assert name.endswith(".jpg") and 0.0 <= float(confidence) <= 1.0


def test_predict_script_reports_bad_files(tiny_artifact, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    command = [sys.executable, str(ROOT / "scripts" / "predict.py"), str(bad), "--model", str(tiny_artifact), "-o", "-"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "broken.png" in result.stderr


def test_pseudolabel_keeps_confident_readings_and_copies_their_images(tiny_artifact, labelled, tmp_path):
    from captcha_api.core.artifact import DEFAULT_MODEL
    from captcha_api.training.data import read_labels

    out = tmp_path / "pseudo"
    args = ["pseudolabel", "--data", str(labelled), "--out", str(out), "--model", str(DEFAULT_MODEL)]
    assert main([*args, "--min-confidence", "0", "--min-length", "0"]) == 0
    everything = read_labels(out)
    truth = dict(zip((p.name for p in read_labels(labelled).files), read_labels(labelled).texts))
    assert everything.texts and all(everything.texts)  # empty readings are never kept
    assert sum(truth[p.name] == t for p, t in zip(everything.files, everything.texts)) >= 0.9 * len(truth)
    assert all(path.parent == out / "images" for path in everything.files)
    assert all(path.read_bytes() == (labelled / path.name).read_bytes() for path in everything.files)
    assert main([*args, "--min-confidence", "1.01"]) == 0
    assert (out / "labels.csv").read_text(encoding="utf-8").strip() == "filename,text"


def test_train_on_any_labelled_folder(own_style, tmp_path, caplog):
    from captcha_api.core.runtime import Recognizer
    from captcha_api.training.data import read_labels

    caplog.set_level("INFO")
    out = tmp_path / "run"
    args = ["train", "--data", str(own_style), "--name", "latin", "--epochs", "1", "--real-repeat", "2"]
    assert main([*args, "--batch-size", "8", "--work-dir", str(out)]) == 0
    folder = read_labels(own_style)
    texts = folder.texts
    meta = ModelMetadata.load(out / "latin.json")
    assert meta.alphabet == "".join(sorted(set("".join(texts))))  # derived from the labels, case kept
    assert (meta.min_length, meta.max_length) == (min(map(len, texts)), max(map(len, texts)))
    held_out = meta.training["holdout_files"]
    assert len(held_out) == 15 and meta.training["real_images"] == 15  # 15% asked, at least 20, at most half
    validation = meta.accuracy["validation"]
    assert validation["holdout_only"] and validation["n"] == 15 and validation["runtime"] == "onnx"
    assert (out / "latin.keras").is_file() and (out / "latin.onnx").is_file()
    reading = Recognizer(out / "latin", "onnx").read(folder.files[0].read_bytes())
    assert set(reading.text) <= set(meta.alphabet)
    assert any("held-out real images: 15" in r.getMessage() for r in caplog.records)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["held_out"]["n"] == 15 and len(report["mistakes"]) == round(15 * (1 - validation["exact_match"]))


def test_train_on_a_folder_needs_a_name_and_readable_lengths(own_style, tmp_path):
    with pytest.raises(SystemExit, match="--name"):
        main(["train", "--data", str(own_style)])
    long = tmp_path / "long"
    long.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (200, 60), "white").save(long / f"{'a' * 13}{i}.png")
    with pytest.raises(ValueError, match="at most 12"):
        main(
            [
                "train",
                "--data",
                str(long),
                "--name",
                "long",
                "--work-dir",
                str(tmp_path / "r"),
            ]
        )


def test_help_names_every_command_and_explains_every_option(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    with pytest.raises(SystemExit):
        main(["--help"])
    overview = capsys.readouterr().out
    assert all(name in parser.description and f"    {name} " in overview for name in commands)
    for name, command in commands.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # as one line: the wrapping is the terminal's
        assert "%%" not in text, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings}: no help"
            if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                assert f"(default: {action.default})" in text, f"{name} {action.option_strings}: no default"
    assert "15% of the images are held out" in " ".join(commands["train"].format_help().split())


@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_serve_writes_each_line_once_in_its_format(tiny_artifact, tmp_path, log_format):
    """The development server: one handler (the app's, in CAPTCHA_LOG_FORMAT) and one access line a request."""
    port = free_port()
    env = {**os.environ, "CAPTCHA_HOST": "127.0.0.1", "CAPTCHA_PORT": str(port), "CAPTCHA_API_KEYS": ""}
    env |= {"CAPTCHA_MODEL": str(tiny_artifact), "CAPTCHA_RUNTIME": "onnx", "CAPTCHA_LOG_FORMAT": log_format}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen(
            [sys.executable, "-m", "captcha_api", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Ctrl+C as a terminal sends it: a suite started in the background (`pytest &`) ignores SIGINT, and a
            # child would inherit that and never stop.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            # Ready once it says so: polling /health would write access lines of its own.
            deadline = time.monotonic() + 60
            while "CTRL+C" not in log_path.read_text() and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
                assert response.status == 200
            server.send_signal(signal.SIGINT)  # Ctrl+C
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    lines = log_path.read_text().splitlines()
    health = [line for line in lines if "GET /health" in line]
    assert len(health) == 1, lines
    assert sum("loaded model" in line for line in lines) == 1, lines
    logged = [line for line in lines if not line.startswith(" * ")]  # Flask prints its banner; it does not log it
    if log_format == "json":
        records = [json.loads(line) for line in logged]
        assert [r["path"] for r in records if r["logger"] == "captcha_api.access"] == ["/health"]
    else:
        assert "captcha_api.access: GET /health 200" in health[0]
        assert not any(line.startswith("{") for line in logged)
    # The development server's colours, stripped: no escape code, raw or as each format writes it.
    assert not any(code in line for line in lines for code in ("\x1b", "\\x1b", "\\u001b"))


# What TensorFlow, absl, Keras and tf2onnx print around a training run: C++ log lines (absl's "I0000 00:00:..." and
# the older "I tensorflow/..."), CPU and CUDA notices, tf2onnx's conversion notes, Python warnings from their
# internals, and Keras' bar redrawn with escape codes and backspaces where nothing redraws it.
NOISE = ("oneDNN", "TF_ENABLE_ONEDNN_OPTS", "cuda", "cuInit", "cpu_feature_guard", "This TensorFlow binary", "absl")
NOISE += ("I tensorflow/", "W tensorflow/", "E tensorflow/", "E external/", "tf2onnx", "\x1b[", "\b")
NOISE_LINES = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|\w+Warning: ", re.MULTILINE)


def test_train_prints_progress_and_the_held_out_figure_without_framework_noise(own_style, tmp_path):
    # As in a new user's shell: the tests' own process may have set a TensorFlow log level when it loaded Keras.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = ["train", "--data", str(own_style), "--name", "latin", "--epochs", "1", "--real-repeat", "2"]
    args += ["--batch-size", "8", "--work-dir", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "captcha_api", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "epoch 1: loss=" in output and "held-out real images: 15, exact match" in output
    assert [marker for marker in NOISE if marker.lower() in output.lower()] == [], output
    assert NOISE_LINES.findall(output) == [], output
