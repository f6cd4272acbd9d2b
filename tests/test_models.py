"""Several models served at once, chosen per request, and per-request decoding constraints, over the API."""

import io
import json
import shutil

import pytest

from .conftest import KEY
from .test_api import assert_error, b64, check_reading


@pytest.fixture
def model_folder(tiny_artifact, tmp_path):
    """The tiny model, a 'mirror' of it (same network, alphabet reversed: its reading is the tiny one's, each
    character mapped to the mirrored one) and a model whose files are broken."""
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_artifact.with_suffix(suffix), folder / f"tiny{suffix}")
        shutil.copy(tiny_artifact.with_suffix(suffix), folder / f"mirror{suffix}")
    meta = json.loads((folder / "mirror.json").read_text())
    meta["name"], meta["alphabet"] = "mirror", meta["alphabet"][::-1]
    (folder / "mirror.json").write_text(json.dumps(meta, ensure_ascii=False))
    (folder / "broken.onnx").write_bytes(b"not a model")
    shutil.copy(tiny_artifact.with_suffix(".json"), folder / "broken.json")
    (folder / "notes.json").write_text("{}")  # no model beside it: not a model
    (folder / "trained.keras").write_bytes(b"a Keras file, never opened by the ONNX runtime")
    shutil.copy(tiny_artifact.with_suffix(".json"), folder / "trained.json")
    return folder


@pytest.fixture
def multi(make_app, model_folder):
    client = make_app(model=model_folder / "tiny", runtime="onnx").test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    return client


def mirrored(text: str, alphabet: str) -> str:
    return text.translate(str.maketrans(alphabet, alphabet[::-1]))


def test_info_lists_every_served_model(multi):
    body = multi.get("/info").get_json()
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"tiny", "mirror"}  # broken.* failed to load, trained.* has no ONNX file: left out
    not_served = {m["name"]: m["reason"] for m in body["not_served"]}
    assert set(not_served) == {"broken", "trained"}
    assert "cannot load the ONNX model" in not_served["broken"]
    assert all("/" not in reason for reason in not_served.values()), not_served  # file names, not server paths
    assert not_served["trained"].startswith("no trained.onnx: CAPTCHA_RUNTIME=onnx serves ONNX models only")
    assert models["tiny"]["default"] is True and models["mirror"]["default"] is False
    assert models["mirror"]["alphabet"] == models["tiny"]["alphabet"][::-1]
    assert body["model"]["name"] == "tiny"
    for model in models.values():
        assert {"max_sequence_length", "min_sequence_length", "accuracy", "runtime"} <= set(model)


def test_a_request_picks_its_model_by_name(multi, png):
    alphabet = multi.get("/info").get_json()["model"]["alphabet"]
    default = check_reading(multi.post("/predict", json={"image": b64(png)}))["prediction"]
    ways = [
        multi.post("/predict?model=mirror", json={"image": b64(png)}),
        multi.post("/predict", json={"image": b64(png), "model": "mirror"}),
        multi.post("/predict", data={"image": (io.BytesIO(png), "c.png"), "model": "mirror"}),
        multi.post("/predict?model=tiny", json={"image": b64(png)}),
    ]
    readings = [check_reading(answer)["prediction"] for answer in ways]
    assert readings == [mirrored(default, alphabet)] * 3 + [default]
    batch = multi.post("/predict-batch?model=mirror", json={"images": [b64(png)] * 2}).get_json()
    assert [r["prediction"] for r in batch["results"]] == [mirrored(default, alphabet)] * 2


def test_an_unknown_model_is_404_naming_the_served_ones(multi, png):
    answer = multi.post("/predict?model=nope", json={"image": b64(png)})
    assert_error(answer, 404, "unknown_model")
    assert "mirror, tiny" in answer.get_json()["error"]["message"]
    assert_error(multi.post("/predict-batch", json={"images": [b64(png)], "model": "broken"}), 404, "unknown_model")


def test_model_dir_none_serves_the_default_alone(make_app, model_folder):
    client = make_app(model=model_folder / "tiny", model_dir="none").test_client()
    body = client.get("/info", headers={"X-API-Key": KEY}).get_json()
    assert [m["name"] for m in body["models"]] == ["tiny"]


def test_another_folder_adds_its_models_to_the_default(make_app, tiny_artifact, model_folder):
    app = make_app(model=tiny_artifact, model_dir=str(model_folder))
    body = app.test_client().get("/info", headers={"X-API-Key": KEY}).get_json()
    assert {m["name"] for m in body["models"]} == {"tiny", "mirror"}
    # The configured default, not its namesake in the folder (/info names models; it shows no server path).
    assert str(app.extensions["models"].default.path).startswith(str(tiny_artifact))


@pytest.mark.parametrize("length", [5, "5", "3-6", "2..4", 1])
def test_length_constraint_gives_a_reading_of_that_length(client, png, length):
    low, high = (
        (int(length), int(length)) if str(length).isdigit() else map(int, str(length).replace("..", "-").split("-"))
    )
    reading = check_reading(client.post("/predict", json={"image": b64(png), "length": length}))["prediction"]
    assert low <= len(reading) <= high


def test_charset_constraint_reads_only_allowed_characters(client, png):
    free = check_reading(client.post("/predict", json={"image": b64(png)}))["prediction"]
    charset = "2457"
    for answer in (
        client.post(f"/predict?charset={charset}&length={max(1, len(free))}", json={"image": b64(png)}),
        client.post("/predict", data={"image": (io.BytesIO(png), "c.png"), "charset": charset, "length": "1-7"}),
    ):
        reading = check_reading(answer)["prediction"]
        assert reading and set(reading) <= set(charset)
    constrained = check_reading(
        client.post(f"/predict?charset={charset}&length={max(1, len(free))}", json={"image": b64(png)})
    )["prediction"]
    assert len(constrained) == max(1, len(free))  # a masked slot is read as an allowed character, not dropped


def test_constraints_apply_to_every_image_of_a_batch(client, png):
    body = client.post("/predict-batch", json={"images": [b64(png)] * 3, "length": 6, "charset": "бвг"}).get_json()
    assert body["success"] is True
    assert all(len(r["prediction"]) == 6 and set(r["prediction"]) <= set("бвг") for r in body["results"])


@pytest.mark.parametrize(
    "options",
    [
        {"length": "many"},
        {"length": "6-4"},
        {"length": -1},
        {"length": True},
        {"length": 5.5},
        {"length": 40},  # longer than the model's 25 time steps can hold
        {"charset": "abc"},  # not in the model's alphabet
        {"charset": ""},
        {"charset": ["2", "4"]},
        {"charset": "22"},
        {"model": ""},
        {"model": 7},
        {"model": "x" * 500},
    ],
)
def test_bad_options_are_400_invalid_parameter(client, png, options):
    assert_error(client.post("/predict", json={"image": b64(png), **options}), 400, "invalid_parameter")
    assert check_reading(client.post("/predict", json={"image": b64(png)}))  # the worker still answers


def test_bad_options_in_the_query_string_are_400(client, png):
    assert_error(client.post("/predict?length=abc", json={"image": b64(png)}), 400, "invalid_parameter")
    assert_error(client.post("/predict?charset=xyz", json={"image": b64(png)}), 400, "invalid_parameter")


@pytest.mark.parametrize("damage", ["alphabet-of-another-length", "nested-json"])
def test_a_stray_model_that_fails_its_first_run_is_left_out(make_app, model_folder, damage):
    """Metadata that does not fit its network failed only at warm-up, outside the loading guard, and stopped every
    worker; a JSON nested past the parser's stack did the same. Such a model is logged and left out."""
    odd = model_folder / "odd"
    shutil.copy(model_folder / "tiny.onnx", odd.with_suffix(".onnx"))
    if damage == "nested-json":
        odd.with_suffix(".json").write_text("[" * 100_000 + "]" * 100_000)
    else:
        meta = json.loads((model_folder / "tiny.json").read_text())
        meta.update(name="odd", alphabet=meta["alphabet"] + "xyzw", blank_index=meta["blank_index"] + 4)
        odd.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False))
    client = make_app(model=model_folder / "tiny", runtime="onnx").test_client()
    body = client.get("/info", headers={"X-API-Key": KEY}).get_json()
    assert "odd" not in {m["name"] for m in body["models"]} and "tiny" in {m["name"] for m in body["models"]}


def test_every_reading_names_the_version_of_its_model(multi, png, model_folder):
    from captcha_api.core.artifact import ModelArtifact

    version = ModelArtifact.version_of(model_folder / "tiny.onnx")
    assert len(version) == 12 and int(version, 16) >= 0
    info = multi.get("/info").get_json()
    assert {m["name"]: m["version"] for m in info["models"]} == {"tiny": version, "mirror": version}
    for answer in (
        multi.post("/predict", json={"image": b64(png)}),
        multi.post("/predict-batch?model=mirror", json={"images": [b64(png)]}),
    ):
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == version
    assert "X-Model-Version" not in multi.post("/predict", json={}).headers  # no reading, no version
    (model_folder / "tiny.onnx").write_bytes((model_folder / "tiny.onnx").read_bytes() + b"\0")
    assert ModelArtifact.version_of(model_folder / "tiny.onnx") != version  # other bytes, another version
