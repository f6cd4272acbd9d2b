"""POST /report: the image of a recent wrong reading is stored with its right text, in the layout training reads;
bounded in time and size, validated against the model, shared by workers through the folder."""

import csv
import io
import os
import shutil
import time

import pytest

from captcha_api.training.data import read_labels

from .conftest import KEY, OTHER_KEY, encode
from .test_api import assert_error, b64


@pytest.fixture
def reporting(make_app, tmp_path):
    app = make_app(feedback_dir=str(tmp_path / "feedback"), feedback_keep_seconds=60)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    return app, client, tmp_path / "feedback"


def read(client, png, request_id: str):
    answer = client.post("/predict", json={"image": b64(png)}, headers={"X-Request-ID": request_id})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == request_id
    return answer.get_json()["prediction"]


def right_text(app, reading: str) -> str:
    """A text the tiny model could read (its alphabet, its lengths) that is not its reading."""
    meta = app.extensions["models"].default.metadata
    text = meta.alphabet[: meta.min_length + 1]
    return text if text != reading else meta.alphabet[1 : meta.min_length + 2]


def test_a_report_stores_the_image_with_its_text_for_training(reporting, png):
    app, client, folder = reporting
    reading = read(client, png, "req-1")
    text = right_text(app, reading)
    answer = client.post("/report", json={"request_id": "req-1", "text": text})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["success"] is True and body["stored"] is True and body["model"] == "tiny"
    labelled = read_labels(folder / "tiny")  # what `captcha-ocr train --data` reads
    assert labelled.texts == [text] and labelled.files[0].read_bytes() == png
    assert labelled.files[0].name == body["file"] and body["file"].endswith(".png")
    # The same image again (another request, another text): stored once
    read(client, png, "req-2")
    again = client.post("/report", json={"request_id": "req-2", "text": text})
    assert again.status_code == 200 and again.get_json()["stored"] is False
    assert len(read_labels(folder / "tiny").texts) == 1


def test_a_batch_image_is_reported_by_its_index(reporting, png, captcha_image):
    app, client, folder = reporting
    jpeg = encode(captcha_image, "JPEG")
    answer = client.post("/predict-batch", json={"images": [b64(png), "not base64!", b64(jpeg)]})
    request_id = answer.headers["X-Request-ID"]
    text = right_text(app, answer.get_json()["results"][2]["prediction"])
    assert client.post("/report", json={"request_id": request_id, "index": 2, "text": text}).status_code == 200
    stored = read_labels(folder / "tiny")
    assert stored.files[0].read_bytes() == jpeg and stored.files[0].suffix == ".jpg"
    assert_error(
        client.post("/report", json={"request_id": request_id, "index": 1, "text": text}), 404, "unknown_request"
    )


def test_reports_are_checked_against_the_model_and_the_recent_readings(reporting, png):
    app, client, _ = reporting
    reading = read(client, png, "req-3")
    meta = app.extensions["models"].default.metadata
    for body, status, code in [
        ({"request_id": "nope", "text": right_text(app, reading)}, 404, "unknown_request"),
        ({"request_id": "req-3", "text": "Q" * meta.min_length}, 400, "invalid_parameter"),  # not its alphabet
        ({"request_id": "req-3", "text": meta.alphabet[0] * (meta.max_length + 1)}, 400, "invalid_parameter"),
        ({"request_id": "req-3"}, 400, "invalid_parameter"),
        ({"request_id": "../../etc/passwd", "text": "x"}, 400, "invalid_parameter"),
        ({"request_id": "req-3", "text": right_text(app, reading), "index": -1}, 400, "invalid_parameter"),
    ]:
        assert_error(client.post("/report", json=body), status, code)
    if meta.min_length <= len(reading) <= meta.max_length:
        assert_error(client.post("/report", json={"request_id": "req-3", "text": reading}), 400, "invalid_parameter")
    assert_error(client.post("/report", data="x", content_type="text/plain"), 415, "unsupported_media_type")
    anonymous = app.test_client()
    assert_error(anonymous.post("/report", json={"request_id": "req-3", "text": "x"}), 401, "missing_api_key")


def test_recent_images_are_kept_for_a_bounded_time_and_size(make_app, tmp_path, png):
    folder = tmp_path / "feedback"
    app = make_app(feedback_dir=str(folder), feedback_keep_seconds=60, feedback_keep_mb=0)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    read(client, png, "req-a")
    time.sleep(1.1)  # one pruning a second per worker
    read(client, png, "req-b")
    recent = app.extensions["feedback"].recent
    assert recent.stat().st_mode & 0o777 == 0o700  # the service user's alone
    kept = sorted(p.name for p in recent.iterdir() if not p.name.startswith("."))
    assert kept == []  # a budget of 0 MB keeps nothing once pruned
    timed = make_app(feedback_dir=str(tmp_path / "timed"), feedback_keep_seconds=1)
    timed_client = timed.test_client()
    timed_client.environ_base["HTTP_X_API_KEY"] = KEY
    reading = read(timed_client, png, "req-c")
    old = time.time() - 5
    feedback = timed.extensions["feedback"]
    os.utime(feedback.recent / feedback.entry(KEY, "req-c", 0), (old, old))
    answer = timed_client.post("/report", json={"request_id": "req-c", "text": right_text(timed, reading)})
    assert_error(answer, 404, "unknown_request")
    assert "kept 1 s" in answer.get_json()["error"]["message"]


def test_the_stored_reports_have_a_quota(make_app, tmp_path, png):
    folder = tmp_path / "feedback"
    app = make_app(feedback_dir=str(folder), feedback_max_mb=1)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "filler.bin").write_bytes(b"\0" * (2**20 - 100))
    reading = read(client, png, "req-q")
    assert_error(
        client.post("/report", json={"request_id": "req-q", "text": right_text(app, reading)}), 507, "feedback_full"
    )
    assert not (folder / "tiny" / "labels.csv").exists()


def test_reports_off_and_an_unwritable_folder_never_fail_a_reading(make_app, tmp_path, png):
    off = make_app(feedback_dir="none").test_client()
    off.environ_base["HTTP_X_API_KEY"] = KEY
    assert off.post("/predict", json={"image": b64(png)}).status_code == 200
    assert_error(off.post("/report", json={"request_id": "x", "text": "x"}), 503, "feedback_unavailable")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would be")
    broken = make_app(feedback_dir=str(blocked)).test_client()
    broken.environ_base["HTTP_X_API_KEY"] = KEY
    assert broken.post("/predict", json={"image": b64(png)}).status_code == 200
    assert_error(broken.post("/report", json={"request_id": "x", "text": "x"}), 503, "feedback_unavailable")


def test_labels_csv_stays_whole_when_many_reports_append_at_once(tmp_path):
    """Writers starting together on a new file: one header, every row whole (CI once saw the header twice)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from captcha_api.service.feedback import _append_label

    for round_ in range(60):
        labels = tmp_path / f"labels{round_}.csv"
        start = threading.Barrier(8)

        def append(i, labels=labels, start=start):
            start.wait()
            _append_label(labels, f"img{i}.png", f't,{i}"x')

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(append, range(8)))
        text = labels.read_text(encoding="utf-8")
        assert text.count("filename,text") == 1, text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert {r["filename"] for r in rows} == {f"img{i}.png" for i in range(8)} and len(rows) == 8
        assert all(r["text"] == f't,{r["filename"][3:-4]}"x' for r in rows)


def test_an_image_still_being_written_is_not_taken(reporting, png):
    app, client, folder = reporting
    reading = read(client, png, "req-w")
    feedback = app.extensions["feedback"]
    path = feedback.recent / feedback.entry(KEY, "req-w", 0)
    path.write_bytes(path.read_bytes()[:-10])  # as another worker would see it mid-write
    answer = client.post("/report", json={"request_id": "req-w", "text": right_text(app, reading)})
    assert_error(answer, 404, "unknown_request")
    assert not (folder / "tiny").exists()


def test_a_reading_is_reported_only_by_the_key_that_read_it(make_app, tmp_path, png):
    app = make_app(feedback_dir=str(tmp_path / "feedback"), api_keys=[KEY, OTHER_KEY])
    client = app.test_client()
    mine = client.post("/predict", json={"image": b64(png)}, headers={"X-API-Key": KEY, "X-Request-ID": "order-1"})
    theirs = client.post(
        "/predict", json={"image": b64(png[:-1] + b"\0")}, headers={"X-API-Key": OTHER_KEY, "X-Request-ID": "order-1"}
    )
    assert mine.status_code == 200 and theirs.status_code in (200, 400)  # their own request, same id: no overwrite
    text = right_text(app, mine.get_json()["prediction"])
    by_other = client.post("/report", json={"request_id": "order-1", "text": text}, headers={"X-API-Key": OTHER_KEY})
    if theirs.status_code == 200:
        assert by_other.status_code == 200 and by_other.get_json()["file"] != ""
    stored = client.post("/report", json={"request_id": "order-1", "text": text}, headers={"X-API-Key": KEY})
    assert stored.status_code == 200 and stored.get_json()["stored"] is True
    labelled = read_labels(tmp_path / "feedback" / "tiny")
    assert png in [f.read_bytes() for f in labelled.files]


def test_request_ids_cannot_hide_from_pruning_or_leave_the_folder(make_app, tmp_path, png):
    app = make_app(feedback_dir=str(tmp_path / "feedback"), feedback_keep_seconds=60, feedback_keep_mb=0)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    for request_id in (".x", "..", ".", "...", ".probe-1"):
        assert (
            client.post("/predict", json={"image": b64(png)}, headers={"X-Request-ID": request_id}).status_code == 200
        )
    recent = app.extensions["feedback"].recent
    assert all(not p.name.startswith(".") for p in recent.iterdir())  # hashed names
    time.sleep(1.1)
    read(client, png, "later")
    assert [p for p in recent.iterdir() if not p.name.startswith(".probe-")] == []  # a budget of 0 keeps none


def test_a_recent_folder_made_by_someone_else_turns_reports_off(make_app, tmp_path, png):
    from captcha_api.service.feedback import recent_folder

    folder = tmp_path / "feedback"
    squatted = recent_folder(folder)
    squatted.mkdir(mode=0o777, parents=True)
    squatted.chmod(0o777)
    try:
        app = make_app(feedback_dir=str(folder))
        assert app.extensions["feedback"].usable is False
        client = app.test_client()
        client.environ_base["HTTP_X_API_KEY"] = KEY
        assert client.post("/predict", json={"image": b64(png)}).status_code == 200
        assert list(squatted.iterdir()) == []  # nothing written into it
        assert_error(client.post("/report", json={"request_id": "x", "text": "x"}), 503, "feedback_unavailable")
    finally:
        shutil.rmtree(squatted, ignore_errors=True)


def test_a_link_planted_in_the_feedback_folder_is_not_followed(reporting, png, tmp_path):
    app, client, folder = reporting
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "labels.csv").symlink_to(outside)
    reading = read(client, png, "req-l")
    answer = client.post("/report", json={"request_id": "req-l", "text": right_text(app, reading)})
    assert_error(answer, 503, "feedback_unavailable")
    assert outside.read_text() == ""
    assert list((folder / "tiny" / "images").iterdir()) == []  # the image taken back with its row
