"""The solver-compatible APIs (captcha_api/service/compat/) through Flask's test client: 2captcha's in.php and
res.php, the JSON task API, their errors, options, keys, limits, reports and task store. The official client
libraries drive them against a live service in tests/test_compat_clients.py."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import time

import numpy as np
import pytest

from captcha_api.service import compat
from captcha_api.service.compat import errors as compat_errors
from captcha_api.service.compat.store import ID_HIGH, ID_LOW

from .conftest import KEY, OTHER_KEY, ROOT, encode

TEXT = "text/plain"
SHIPPED = ROOT / "model" / "fssp"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(client, png, **params):
    """in.php with the image as base64 in a urlencoded form; the task id."""
    answer = client.post("/in.php", data={"key": KEY, "method": "base64", "body": b64(png), **params})
    assert answer.status_code == 200 and answer.mimetype == TEXT, answer.data
    text = answer.get_data(as_text=True)
    assert text.startswith("OK|"), text
    return text[3:]


def result(client, task_id, key=KEY, **params) -> str:
    return client.get("/res.php", query_string={"key": key, "action": "get", "id": task_id, **params}).get_data(
        as_text=True
    )


def create(client, png, key=KEY, **task):
    answer = client.post(
        "/createTask", json={"clientKey": key, "task": {"type": "ImageToTextTask", "body": b64(png), **task}}
    )
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    return answer.get_json()


def task_result(client, task_id, key=KEY) -> dict:
    answer = client.post("/getTaskResult", json={"clientKey": key, "taskId": task_id})
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    return answer.get_json()


def assert_task_error(body: dict, name: str) -> None:
    """A task-API error: errorId, errorCode and errorDescription, all three (a client joins the last two)."""
    expected = getattr(compat_errors, name.removeprefix("ERROR_"))
    assert body["errorId"] == expected.error_id != 0 and body["errorCode"] == name, body
    assert isinstance(body["errorDescription"], str) and body["errorDescription"], body


@pytest.fixture
def make_app(make_app):
    """The service on the shipped FSSP model (conftest's tiny model reads the test image as nothing, which these
    APIs answer as unsolvable)."""
    return lambda **overrides: make_app(**{"model": SHIPPED, **overrides})


@pytest.fixture
def anonymous(app):
    return app.test_client()  # no X-API-Key header: the compatible APIs carry their key in the parameters


@pytest.fixture
def predicted(client, png):
    return client.post("/predict", json={"image": b64(png)}).get_json()["prediction"]


def test_the_guard_knows_every_compatible_path(app):
    rules = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in ("twocaptcha", "taskapi")}
    assert rules == compat.PATHS


# ------------------------------------------------------------------------------------------ 2captcha classic API


def test_in_php_takes_the_image_every_way_the_clients_send_it(anonymous, png, predicted):
    ids = [
        submit(anonymous, png),  # urlencoded, method=base64
        submit(anonymous, png, body="data:image/png;base64," + b64(png)),  # a data URL
    ]
    multipart = anonymous.post(
        "/in.php", data={"key": KEY, "method": "post", "file": (io.BytesIO(png), "captcha.png"), "soft_id": "4580"}
    )
    ids.append(multipart.get_data(as_text=True)[3:])
    query = anonymous.get("/in.php", query_string={"key": KEY, "method": "base64", "body": b64(png)})
    ids.append(query.get_data(as_text=True)[3:])
    as_json = anonymous.post("/in.php", json={"key": KEY, "method": "base64", "body": b64(png), "json": 1})
    assert as_json.get_json()["status"] == 1
    ids.append(as_json.get_json()["request"])
    assert all(i.isdigit() and ID_LOW <= int(i) <= ID_HIGH for i in ids) and len(set(ids)) == len(ids)
    for task_id in ids:
        assert result(anonymous, task_id) == f"OK|{predicted}"  # the first poll finds it ready
    assert json.loads(result(anonymous, ids[0], json=1)) == {"status": 1, "request": predicted}
    assert result(anonymous, ids[0], action="get2") == f"OK|{predicted}|0"


def test_res_php_answers_several_ids_and_names_what_fails(anonymous, png, predicted):
    first, second = submit(anonymous, png), submit(anonymous, png)
    answer = anonymous.get("/res.php", query_string={"key": KEY, "action": "get", "ids": f"{first},{second},77,x"})
    assert answer.get_data(as_text=True) == f"{predicted}|{predicted}|ERROR_WRONG_CAPTCHA_ID|ERROR_WRONG_ID_FORMAT"


@pytest.mark.parametrize(
    "params, error",
    [
        ({}, "ERROR_WRONG_USER_KEY"),
        ({"key": "not-a-key-of-this-service"}, "ERROR_KEY_DOES_NOT_EXIST"),
        ({"key": KEY, "method": "base64"}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ({"key": KEY, "method": "post"}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        ({"key": KEY, "method": "base64", "body": b64(b"not an image at all")}, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
        ({"key": KEY, "method": "base64", "body": "%%%"}, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
        ({"key": KEY, "method": "userrecaptcha"}, "ERROR_BAD_PARAMETERS"),
        ({"key": KEY, "method": "base64", "body": "x", "numeric": "7"}, "ERROR_BAD_PARAMETERS"),
        ({"key": KEY, "method": "base64", "body": "x", "min_len": "abc"}, "ERROR_BAD_PARAMETERS"),
    ],
)
def test_in_php_errors_are_2captchas_strings_with_200(anonymous, params, error):
    text = anonymous.post("/in.php", data=params)
    assert text.status_code == 200 and text.mimetype == TEXT and text.get_data(as_text=True) == error
    as_json = anonymous.post("/in.php", data={**params, "json": "1"})
    body = as_json.get_json()
    assert as_json.status_code == 200 and body["status"] == 0 and body["request"] == error and body["error_text"]


def test_an_image_over_the_limit_is_too_big_not_a_413(make_app, png):
    client = make_app(max_image_bytes=1000).test_client()
    big = encode(__import__("PIL.Image", fromlist=["Image"]).effect_noise((200, 60), 64).convert("RGB"), "PNG")
    assert len(big) > 1000
    answer = client.post("/in.php", data={"key": KEY, "method": "base64", "body": b64(big)})
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"
    # A body far past any image (the key is inside, so the guard reads these bodies without one): refused unread.
    huge = client.post("/createTask", data=b"{" + b" " * 3_000_000 + b"}", content_type="application/json")
    assert_task_error(huge.get_json(), "ERROR_TOO_BIG_CAPTCHA_FILESIZE")
    assert "bytes" in huge.get_json()["errorDescription"]


def test_a_task_is_its_keys_alone(make_app, png):
    client = make_app(api_keys=[KEY, OTHER_KEY]).test_client()
    task_id = submit(client, png)
    assert result(client, task_id, key=OTHER_KEY) == "ERROR_WRONG_CAPTCHA_ID"
    assert result(client, task_id, key="wrong-key-0123456789") == "ERROR_KEY_DOES_NOT_EXIST"
    assert result(client, str(int(task_id) + 1)) == "ERROR_WRONG_CAPTCHA_ID"
    assert result(client, "12ab") == "ERROR_WRONG_ID_FORMAT"
    assert result(client, "9" * 30) == "ERROR_WRONG_ID_FORMAT"
    task = create(client, png)
    assert_task_error(task_result(client, task["taskId"], key=OTHER_KEY), "ERROR_NO_SUCH_CAPCHA_ID")
    for odd in ("abc", True, None, [1], {"a": 1}, -5, 10**40):
        assert_task_error(task_result(client, odd), "ERROR_NO_SUCH_CAPCHA_ID")


def test_balance_is_a_bare_number_of_images_left(make_app, png):
    client = make_app(rate_limit="10/minute").test_client()
    balance = client.get("/res.php", query_string={"key": KEY, "action": "getbalance"})
    assert balance.mimetype == TEXT and float(balance.get_data(as_text=True)) == 10
    submit(client, png)
    client.post("/predict", json={"image": b64(png)}, headers={"X-API-Key": KEY})  # one allowance for both APIs
    assert float(client.get("/res.php", query_string={"key": KEY, "action": "getbalance"}).data) == 8
    assert client.post("/getBalance", json={"clientKey": KEY}).get_json() == {"errorId": 0, "balance": 8.0}
    unlimited = make_app().test_client()  # rate_limit "" in the tests' settings
    assert float(unlimited.get("/res.php", query_string={"key": KEY, "action": "getbalance"}).data) == 1_000_000


def test_actions_that_do_not_exist(anonymous):
    for params, error in (
        ({"key": KEY}, "ERROR_NO_SUCH_METHOD"),
        ({"key": KEY, "action": "x"}, "ERROR_NO_SUCH_METHOD"),
    ):
        assert anonymous.get("/res.php", query_string=params).get_data(as_text=True) == error


# ------------------------------------------------------------------------------------------------ the task API


def test_create_task_then_the_first_poll_is_ready(anonymous, png, predicted):
    task = create(anonymous, png)
    assert set(task) == {"errorId", "taskId"} and task["errorId"] == 0 and isinstance(task["taskId"], int)
    answer = task_result(anonymous, task["taskId"])
    assert answer["errorId"] == 0 and answer["status"] == "ready" and answer["solution"] == {"text": predicted}
    assert answer["cost"] == "0" and answer["solveCount"] == 1 and answer["endTime"] >= answer["createTime"]
    assert task_result(anonymous, str(task["taskId"]))["status"] == "ready"  # an id sent back as a string


def test_task_fields_in_every_case_the_clients_use(anonymous, png):
    # CapMonster sends Case and CapMonsterModule; anti-captcha case; a body encoded twice (CapMonster's Python
    # client encodes a str it is given) or sent as a data URL reads as the image.
    for body in (b64(b64(png).encode()), "data:image/png;base64," + b64(png)):
        answer = anonymous.post(
            "/createTask",
            json={
                "clientKey": KEY,
                "task": {"type": "imagetotexttask", "body": body, "Case": True, "CapMonsterModule": "universal"},
                "softId": 55,
            },
        ).get_json()
        assert answer["errorId"] == 0, answer
        assert task_result(anonymous, answer["taskId"])["status"] == "ready"


@pytest.mark.parametrize(
    "payload, error",
    [
        ({}, "ERROR_KEY_DOES_NOT_EXIST"),
        ({"clientKey": "nope-nope-nope-nope"}, "ERROR_KEY_DOES_NOT_EXIST"),
        ({"clientKey": KEY}, "ERROR_TASK_ABSENT"),
        ({"clientKey": KEY, "task": "x"}, "ERROR_TASK_ABSENT"),
        ({"clientKey": KEY, "task": {"type": "RecaptchaV2TaskProxyless"}}, "ERROR_TASK_NOT_SUPPORTED"),
        ({"clientKey": KEY, "task": {"type": "ImageToTextTask"}}, "ERROR_ZERO_CAPTCHA_FILESIZE"),
        (
            {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": b64(b"GIF89a")}},
            "ERROR_IMAGE_TYPE_NOT_SUPPORTED",
        ),
        ({"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": 5}}, "ERROR_BAD_PARAMETERS"),
    ],
)
def test_create_task_errors(anonymous, payload, error):
    answer = anonymous.post("/createTask", json=payload)
    assert answer.status_code == 200
    assert_task_error(answer.get_json(), error)


def test_a_missing_key_is_named_per_protocol(anonymous):
    """2captcha has a name for a missing key; the task API's clients know only ERROR_KEY_DOES_NOT_EXIST."""
    assert anonymous.post("/in.php", data={"method": "base64"}).data == b"ERROR_WRONG_USER_KEY"
    missing = anonymous.post("/createTask", json={"task": {}}).get_json()
    assert_task_error(missing, "ERROR_KEY_DOES_NOT_EXIST")
    assert "send your API key" in missing["errorDescription"]


@pytest.mark.parametrize(
    "task, message",
    [
        ({"numeric": 9}, "numeric"),
        ({"minLength": 9}, "reads 4 to 7 characters"),
        ({"minLength": 5, "maxLength": 3}, "above the maximum"),
        ({"maxLength": "lots"}, "maxLength"),
        ({"math": True}, "arithmetic signs"),
        ({"recognizingThreshold": 101}, "recognizingThreshold"),
        ({"CapMonsterModule": "no-such-model"}, "no model 'no-such-model'"),
    ],
)
def test_options_the_model_cannot_meet_are_refused_not_guessed(anonymous, png, task, message):
    answer = create(anonymous, png, **task)
    assert_task_error(answer, "ERROR_BAD_PARAMETERS")
    assert message in answer["errorDescription"]


def test_options_act_inside_decoding(anonymous, png):
    digits, letters = "2456789", "бвгджклмнпрст"
    for options, check in (
        ({"numeric": 1}, lambda text: set(text) <= set(digits)),
        ({"numeric": 2}, lambda text: set(text) <= set(letters)),
        ({"numeric": 3}, lambda text: set(text) <= set(digits) or set(text) <= set(letters)),
        ({"minLength": 6, "maxLength": 6}, lambda text: len(text) == 6),
        ({"minLength": 2, "maxLength": 4}, lambda text: len(text) == 4),  # within what the model reads: 4
    ):
        answer = task_result(anonymous, create(anonymous, png, **options)["taskId"])
        assert answer["status"] == "ready" and check(answer["solution"]["text"]), (options, answer)
    classic = submit(anonymous, png, numeric="1", min_len="4", max_len="4")
    text = result(anonymous, classic)[3:]
    assert len(text) == 4 and set(text) <= set(digits)


def test_numeric_4_needs_digits_and_letters_in_the_reading(anonymous, png):
    answer = task_result(anonymous, create(anonymous, png, numeric=4)["taskId"])
    text = answer.get("solution", {}).get("text", "")
    if answer["errorId"] == 0:
        assert any(c.isdigit() for c in text) and any(c.isalpha() for c in text)
    else:
        assert_task_error(answer, "ERROR_CAPTCHA_UNSOLVABLE")


def test_a_threshold_fails_the_task_below_it(anonymous, png, client):
    confidence = client.post("/predict", json={"image": b64(png)}).get_json()["confidence"]
    assert confidence < 1
    low = task_result(anonymous, create(anonymous, png, recognizingThreshold=0)["taskId"])
    assert low["status"] == "ready"
    high = task_result(anonymous, create(anonymous, png, recognizingThreshold=100)["taskId"])
    assert_task_error(high, "ERROR_CAPTCHA_UNSOLVABLE")
    assert "below min_confidence" in high["errorDescription"]


@pytest.fixture
def two_models(tmp_path):
    """A folder serving the FSSP model as 'tiny' (the default) and a copy named 'strict' whose metadata sets
    min_confidence 1.0."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name, extra in (("tiny", {}), ("strict", {"min_confidence": 1.0})):
        shutil.copy(SHIPPED.with_suffix(".onnx"), folder / f"{name}.onnx")
        meta = json.loads(SHIPPED.with_suffix(".json").read_text())
        (folder / f"{name}.json").write_text(json.dumps({**meta, "name": name, **extra}))
    return folder


def test_a_model_by_key_form_or_module_and_its_own_threshold(make_app, two_models, png):
    client = make_app(model=two_models / "tiny", model_dir=str(two_models)).test_client()
    default = create(client, png)
    assert task_result(client, default["taskId"])["status"] == "ready"
    by_module = create(client, png, CapMonsterModule="strict")
    assert_task_error(task_result(client, by_module["taskId"]), "ERROR_CAPTCHA_UNSOLVABLE")
    by_key = create(client, png, key=f"{KEY}__strict")
    assert_task_error(task_result(client, by_key["taskId"], key=f"{KEY}__strict"), "ERROR_CAPTCHA_UNSOLVABLE")
    by_key_classic = submit(client, png, key=f"{KEY}__strict")
    assert result(client, by_key_classic) == "ERROR_CAPTCHA_UNSOLVABLE"
    # the request's own threshold wins over the model's
    lenient = create(client, png, CapMonsterModule="strict", recognizingThreshold=0)
    assert task_result(client, lenient["taskId"])["status"] == "ready"
    assert result(client, by_key_classic, key=f"{KEY}__tiny") == "ERROR_CAPTCHA_UNSOLVABLE"  # the same key owns both
    assert_task_error(create(client, png, key=f"{KEY}__nothing"), "ERROR_BAD_PARAMETERS")
    assert_task_error(create(client, png, key="wrong-key-0123456789__strict"), "ERROR_KEY_DOES_NOT_EXIST")


def test_a_model_metadata_threshold_out_of_range_is_not_served(tmp_path, tiny_artifact):
    from captcha_api.core.artifact import ModelMetadata

    meta = json.loads(tiny_artifact.with_suffix(".json").read_text())
    path = tmp_path / "odd.json"
    for bad in (1.5, -0.1, "high", True):
        path.write_text(json.dumps({**meta, "min_confidence": bad}))
        with pytest.raises(ValueError, match="min_confidence"):
            ModelMetadata.load(path)


# ------------------------------------------------------------------------------------- limits, reports, store


def test_task_creation_draws_on_the_image_allowance_and_polls_do_not(make_app, png):
    client = make_app(rate_limit="3/minute").test_client()
    client.post("/predict", json={"image": b64(png)}, headers={"X-API-Key": KEY})
    first, second = create(client, png), submit(client, png)
    refused = create(client, png)
    assert_task_error(refused, "ERROR_TOO_MUCH_REQUESTS")
    assert client.post("/in.php", data={"key": KEY, "method": "base64", "body": b64(png)}).data == (
        b"ERROR_TOO_MUCH_REQUESTS"
    )
    for _ in range(10):
        assert task_result(client, first["taskId"])["status"] == "ready"
        assert result(client, second).startswith("OK|")


def test_wrong_keys_count_toward_the_lockout(make_app, png):
    client = make_app(auth_failure_limit="3/minute").test_client()
    for _ in range(3):
        assert_task_error(create(client, png, key="wrong-key-0123456789"), "ERROR_KEY_DOES_NOT_EXIST")
    locked = create(client, png)  # the right key too, from this address, until the window passes
    assert_task_error(locked, "ERROR_TOO_MUCH_REQUESTS")


def test_reportbad_keeps_the_image_for_labelling_once(make_app, tmp_path, png):
    app = make_app()
    client = app.test_client()
    task_id = submit(client, png)
    report = client.get("/res.php", query_string={"key": KEY, "action": "reportbad", "id": task_id})
    assert report.get_data(as_text=True) == "OK_REPORT_RECORDED"
    again = client.get("/res.php", query_string={"key": KEY, "action": "reportbad", "id": task_id})
    assert again.get_data(as_text=True) == "ERROR_DUPLICATE_REPORT"
    stored = list((tmp_path / "feedback" / "fssp" / "unlabelled").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == png
    assert not (tmp_path / "feedback" / "fssp" / "labels.csv").exists()  # no text: nothing to train on yet
    task = create(client, png)["taskId"]
    for path in ("/reportIncorrectImageCaptcha", "/reportIncorrect"):
        answer = client.post(path, json={"clientKey": KEY, "taskId": task}).get_json()
        if path == "/reportIncorrectImageCaptcha":
            assert answer == {"errorId": 0, "status": "success"}
        else:
            assert_task_error(answer, "ERROR_DUPLICATE_REPORT")
    good = create(client, encode(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (200, 60), "white"), "PNG"))
    assert client.post("/reportCorrect", json={"clientKey": KEY, "taskId": good["taskId"]}).get_json()["errorId"] == 0
    assert len(list((tmp_path / "feedback" / "fssp" / "unlabelled").iterdir())) == 1  # same image; good adds none
    assert_task_error(
        client.post("/reportCorrect", json={"clientKey": KEY, "taskId": 5}).get_json(), "ERROR_NO_SUCH_CAPCHA_ID"
    )


def test_tasks_expire(make_app, png):
    client = make_app(task_ttl_seconds=1).test_client()
    task_id = submit(client, png)
    assert result(client, task_id).startswith("OK|")
    time.sleep(1.2)
    assert result(client, task_id) == "ERROR_WRONG_CAPTCHA_ID"


def test_a_full_store_refuses_new_tasks_until_old_ones_expire(make_app, png):
    client = make_app(task_max=2, task_ttl_seconds=1).test_client()
    create(client, png), create(client, png)
    assert_task_error(create(client, png), "ERROR_NO_SLOT_AVAILABLE")
    time.sleep(1.2)
    assert create(client, png)["errorId"] == 0


def test_a_stray_file_in_the_stores_place_is_moved_aside(make_app, tmp_path, png, caplog):
    store = tmp_path / "tasks.sqlite3"
    store.write_bytes(b"left here by someone: not a database" * 100)
    client = make_app(task_store=str(store)).test_client()
    assert create(client, png)["errorId"] == 0
    assert sqlite3.connect(store).execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    aside = list(tmp_path.glob("tasks.sqlite3.broken-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"left here")
    assert "not a usable database" in caplog.text


def test_a_database_of_something_else_in_the_stores_place_is_moved_aside(make_app, tmp_path, png):
    store = tmp_path / "tasks.sqlite3"
    other = sqlite3.connect(store)
    other.execute("CREATE TABLE tasks (name TEXT)")
    other.commit()
    other.close()
    client = make_app(task_store=str(store)).test_client()
    assert create(client, png)["errorId"] == 0
    (aside,) = tmp_path.glob("tasks.sqlite3.broken-*")
    assert sqlite3.connect(aside).execute("PRAGMA table_info(tasks)").fetchall()[0][1] == "name"


def test_in_php_reads_the_file_field_among_others(anonymous, png, predicted):
    form = {
        "key": KEY,
        "method": "post",
        "imginstructions": (io.BytesIO(b"instructions for a human"), "hint.png"),
        "file": (io.BytesIO(png), "captcha.png"),
    }
    task_id = anonymous.post("/in.php", data=form).get_data(as_text=True)[3:]
    assert result(anonymous, task_id) == f"OK|{predicted}"


def test_an_unusable_store_fails_only_the_compatible_apis(make_app, tmp_path, png):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    client = make_app(task_store=str(folder)).test_client()  # a folder where the file should be
    assert_task_error(create(client, png), "ERROR_NO_SLOT_AVAILABLE")
    assert client.post("/in.php", data={"key": KEY, "method": "base64", "body": b64(png)}).data == (
        b"ERROR_NO_SLOT_AVAILABLE"
    )
    native = client.post("/predict", json={"image": b64(png)}, headers={"X-API-Key": KEY})
    assert native.status_code == 200


def test_the_store_can_be_off(make_app, png):
    client = make_app(task_store="none").test_client()
    answer = client.post("/createTask", json={"clientKey": KEY})
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


def test_an_open_service_takes_any_key_and_still_keeps_tasks_apart(make_app, png):
    client = make_app(api_keys=[]).test_client()
    mine, theirs = create(client, png, key="mine"), create(client, png, key="theirs")
    assert task_result(client, mine["taskId"], key="mine")["status"] == "ready"
    assert_task_error(task_result(client, mine["taskId"], key="theirs"), "ERROR_NO_SUCH_CAPCHA_ID")
    assert task_result(client, theirs["taskId"], key="theirs")["status"] == "ready"
    assert create(client, png, key="")["errorId"] == 0  # no key at all: open means open


# ----------------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "path, kwargs",
    [
        ("/createTask", {"data": b"\xff\xfe garbage", "content_type": "application/json"}),
        ("/createTask", {"data": b"[" * 100_000, "content_type": "application/json"}),
        ("/createTask", {"data": b"[1,2,3]", "content_type": "text/plain"}),
        ("/createTask", {"json": {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": "A" * 10}}}),
        ("/createTask", {"json": {"clientKey": [KEY], "task": {"type": ["x"]}}}),
        (
            "/createTask",
            {"json": {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": b64(b"x" * 10), "numeric": True}}},
        ),
        ("/getTaskResult", {"json": {"clientKey": {"a": KEY}, "taskId": 1}}),
        ("/getBalance", {"data": b"clientKey=" + KEY.encode(), "content_type": "application/x-www-form-urlencoded"}),
        ("/in.php", {"data": {"key": KEY, "method": "post", "file": (io.BytesIO(b""), "empty.png")}}),
        ("/in.php", {"data": b"--x\r\nbroken", "content_type": "multipart/form-data; boundary=x"}),
        ("/in.php", {"json": {"key": 5, "method": None, "body": ["a"]}}),
        ("/res.php", {"json": {"key": KEY, "action": ["get"], "id": {"x": 1}}}),
        ("/res.php", {"query_string": {"key": KEY, "action": "get", "ids": ",".join(["1"] * 5000)}}),
    ],
)
def test_nothing_a_client_sends_is_a_500_or_an_html_page(anonymous, path, kwargs, caplog):
    answer = anonymous.post(path, **kwargs)
    assert answer.status_code == 200 and answer.mimetype in (TEXT, "application/json"), answer.data[:200]
    assert b"<html" not in answer.data.lower() and "unhandled error" not in caplog.text
    if answer.mimetype == "application/json" and path != "/in.php" and path != "/res.php":
        body = answer.get_json()
        assert body["errorId"] == 0 or (body["errorCode"] and body["errorDescription"])


# ------------------------------------------------------------------------- found by an attacker's review


def test_a_get_with_a_body_is_read_within_the_compatible_bound(make_app):
    client = make_app().test_client()
    big = b'{"key": "' + b"k" * 2_000_000 + b'"}'
    answer = client.open("/res.php?action=getbalance", method="GET", data=big, content_type="application/json")
    assert answer.get_data(as_text=True) == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_bodies_without_a_key_header_draw_on_a_budget_of_their_own(make_app, png):
    from werkzeug.test import EnvironBuilder

    app = make_app(max_buffered_bytes=16 * 2**20)
    guard = app.wsgi_app
    seen = []

    def inner(environ, start_response):
        seen.append((guard.pool.held, guard.keyless.held))
        start_response("200 OK", [])
        return [b""]

    guard.app, original = inner, guard.app
    try:
        body = json.dumps({"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": b64(png)}}).encode()
        for headers in ({}, {"X-API-Key": KEY}):
            environ = EnvironBuilder(
                path="/createTask", method="POST", data=body, content_type="application/json", headers=headers
            ).get_environ()
            b"".join(guard(environ, lambda *a: None))
    finally:
        guard.app = original
    assert seen == [(0, len(body)), (len(body), 0)]
    assert guard.keyless.limit == 4 * 2**20 and guard.pool.held == guard.keyless.held == 0


def test_a_store_database_with_a_trigger_is_moved_aside_not_spun_on(make_app, tmp_path, png):
    from captcha_api.service.compat.store import SqliteStore

    store = tmp_path / "tasks.sqlite3"
    db = sqlite3.connect(store)
    for statement in SqliteStore.SCHEMA:
        db.execute(statement)
    db.execute("CREATE TRIGGER drop_all BEFORE INSERT ON tasks BEGIN SELECT RAISE(IGNORE); END")
    db.commit()
    db.close()
    client = make_app(task_store=str(store)).test_client()
    task = create(client, png)
    assert task["errorId"] == 0 and task_result(client, task["taskId"])["status"] == "ready"
    assert len(list(tmp_path.glob("tasks.sqlite3.broken-*"))) == 1


def test_one_key_holds_a_quarter_of_the_store_at_most(make_app, png):
    client = make_app(api_keys=[KEY, OTHER_KEY], task_max=8).test_client()
    for _ in range(2):
        assert create(client, png)["errorId"] == 0
    full = create(client, png)
    assert_task_error(full, "ERROR_NO_SLOT_AVAILABLE")
    assert "quarter of CAPTCHA_TASK_MAX" in full["errorDescription"]
    assert create(client, png, key=OTHER_KEY)["errorId"] == 0


def test_ids_out_of_range_are_unknown_without_a_traceback(anonymous, caplog):
    for value in ("99999999999999999999", "1", str(2**53)):
        assert result(anonymous, value) == "ERROR_WRONG_CAPTCHA_ID"
    for value in (10**19, 2**63, 0):
        assert_task_error(task_result(anonymous, value), "ERROR_NO_SUCH_CAPCHA_ID")
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text


def test_workers_follow_a_store_file_deleted_under_them(make_app, tmp_path, png):
    store = tmp_path / "tasks.sqlite3"
    first, second = (make_app(task_store=str(store)).test_client() for _ in range(2))  # two workers' stores
    create(first, png), create(second, png)
    for name in ("tasks.sqlite3", "tasks.sqlite3-wal", "tasks.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    task = create(first, png)
    assert task_result(second, task["taskId"])["status"] == "ready"  # both on the new file


def test_reports_draw_on_the_allowance_and_unlabelled_images_on_a_quarter_of_the_folder(
    make_app, tmp_path, captcha_image
):
    from PIL import Image

    client = make_app(rate_limit="4/minute").test_client()
    image = encode(Image.effect_noise((200, 60), 40).convert("RGB"), "PNG")
    task = create(client, image)
    assert client.post("/reportIncorrect", json={"clientKey": KEY, "taskId": task["taskId"]}).get_json()["errorId"] == 0
    other, _third = create(client, image), create(client, image)  # four images of the allowance spent
    refused = client.post("/reportCorrect", json={"clientKey": KEY, "taskId": other["taskId"]}).get_json()
    assert_task_error(refused, "ERROR_TOO_MUCH_REQUESTS")
    small = make_app(feedback_max_mb=1).test_client()
    stored = 0
    captcha = np.asarray(captcha_image.convert("RGB"), dtype=np.float64)
    for seed in range(80):
        # a readable captcha (only a solved task's image is kept) made ~30 KB by light noise, different each time
        grain = np.random.default_rng(seed).normal(0, 12, captcha.shape)
        noisy = encode(Image.fromarray(np.clip(captcha + grain, 0, 255).astype(np.uint8)), "PNG")
        task = create(small, noisy)
        reported = small.post("/reportIncorrect", json={"clientKey": KEY, "taskId": task["taskId"]})
        assert reported.get_json()["errorId"] == 0  # the report is recorded even when its image is not kept
        stored = len(list((tmp_path / "feedback" / "fssp" / "unlabelled").iterdir()))
    assert 0 < stored * 30_000 <= 2**20 // 4 + 40_000


def test_other_methods_are_answered_in_the_protocols_format(anonymous, png):
    for method, path in (("PUT", "/in.php"), ("DELETE", "/res.php"), ("GET", "/createTask"), ("PATCH", "/getBalance")):
        answer = anonymous.open(path, method=method)
        assert answer.status_code == 200
        if path.endswith(".php"):
            assert answer.get_data(as_text=True) == "ERROR_NO_SUCH_METHOD"
        else:
            assert_task_error(answer.get_json(), "ERROR_NO_SUCH_METHOD")
    head = anonymous.head("/in.php", query_string={"key": KEY, "method": "base64", "body": b64(png)})
    assert head.status_code == 200
    assert anonymous.get("/res.php", query_string={"key": KEY, "action": "getbalance"}).data == b"1000000"


def test_parameters_the_clients_send_as_they_like(anonymous, png, predicted):
    ids = [submit(anonymous, png) for _ in range(3)] * 33  # 99 ids, 1,700 characters
    answer = anonymous.get("/res.php", query_string={"key": KEY, "action": "get", "ids": ",".join(ids)})
    assert answer.get_data(as_text=True) == "|".join([predicted] * 99)
    as_number = anonymous.post("/res.php", json={"key": KEY, "action": "get", "id": int(ids[0]), "json": 1})
    assert as_number.get_json() == {"status": 1, "request": predicted}
    get2 = anonymous.post("/res.php", json={"key": KEY, "action": "get2", "id": ids[0], "json": 1}).get_json()
    assert get2 == {"status": 1, "request": predicted, "price": "0"}
    loose = {"soft_id": 4580, "textinstructions": "x" * 5000, "lang": ["ru"], "header_acao": "1"}
    answer = anonymous.post("/in.php", json={"key": KEY, "method": "base64", "body": b64(png), **loose})
    assert answer.get_data(as_text=True).startswith("OK|")


def test_an_empty_reading_is_unsolvable_not_an_empty_answer(anonymous):
    from PIL import Image

    blank = encode(Image.new("RGB", (200, 60), "white"), "PNG")
    task = create(anonymous, blank)
    assert_task_error(task_result(anonymous, task["taskId"]), "ERROR_CAPTCHA_UNSOLVABLE")


def test_numeric_letters_and_either_follow_the_models_alphabet(make_app, tmp_path, png):
    from captcha_api.service.compat.solve import _charsets

    assert _charsets(2, "abc+-12", "m") == ["abc"] and _charsets(3, "0123", "m") == ["0123"]
    assert _charsets(3, "ab12", "m") == ["12", "ab"] and _charsets(0, "ab", "m") == [None]
    with pytest.raises(compat_errors.CompatError, match="reads none"):
        _charsets(1, "abc", "m")


def test_a_shared_limit_storage_the_store_cannot_share_must_name_one():
    from captcha_api.service.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CAPTCHA_TASK_STORE must be set"):
        load_settings({"CAPTCHA_RATELIMIT_STORAGE_URI": "redis+sentinel://h:26379/mymaster"})
    settings = load_settings({"CAPTCHA_RATELIMIT_STORAGE_URI": "redis://h:6379", "CAPTCHA_TASK_STORE": ""})
    assert settings.task_store_location == "redis://h:6379"


# ------------------------------------------------------------------------- found by a second review


def test_a_path_with_leading_slashes_is_guarded_as_the_route_it_reaches(make_app):
    client = make_app().test_client()
    big = b'{"key": "' + b"k" * 2_000_000 + b'"}'
    for path in ("//res.php", "///in.php"):
        answer = client.open(
            "/res.php", method="POST", data=big, content_type="application/json", environ_overrides={"PATH_INFO": path}
        )
        assert answer.get_data(as_text=True) == "ERROR_TOO_BIG_CAPTCHA_FILESIZE", path


def test_a_get_body_is_never_read_for_parameters(anonymous, png):
    answer = anonymous.open(
        "/in.php",
        method="GET",
        data=json.dumps({"key": KEY, "method": "base64", "body": b64(png)}),
        content_type="application/json",
    )
    assert answer.get_data(as_text=True) == "ERROR_WRONG_USER_KEY"  # the key was in the body: not read


def test_one_address_takes_a_quarter_of_the_keyless_budget_at_most():
    from captcha_api.service.guard import _Pool

    pool = _Pool(400, share=0.25)
    assert pool.take("a", 100) and not pool.take("a", 1)
    assert pool.take("b", 100) and pool.take("c", 100) and pool.take(None, 100) and not pool.take("d", 1)
    pool.release("a", 100)
    assert pool.take("d", 100) and pool.by_address == {"b": 100, "c": 100, "d": 100}
    for address in ("b", "c", "d", None):
        pool.release(address, 100)
    assert pool.held == 0 and pool.by_address == {}


def test_without_keys_a_store_share_is_per_address_not_per_made_up_key(make_app, png):
    client = make_app(api_keys=[], task_max=8).test_client()
    answers = [create(client, png, key=key) for key in "abcdefg"]
    assert [a["errorId"] for a in answers[:2]] == [0, 0]
    assert all(a["errorCode"] == "ERROR_NO_SLOT_AVAILABLE" for a in answers[2:]), answers


def test_workers_opening_a_new_store_at_once_all_get_it(tmp_path):
    import threading

    from captcha_api.service.compat.store import SqliteStore, Task

    for round_ in range(10):
        path = tmp_path / f"tasks{round_}.sqlite3"
        stores = [SqliteStore(path, ttl=60, max_tasks=100) for _ in range(4)]
        start, failures = threading.Barrier(4), []

        def add(store, start=start, failures=failures):
            start.wait()
            try:
                store.add(lambda task_id: Task(id=task_id, owner="o", status="ready", text="x"), "h")
            except Exception as error:  # noqa: BLE001 - what a worker would have answered with
                failures.append(error)

        threads = [threading.Thread(target=add, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
