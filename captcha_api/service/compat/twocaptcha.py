"""2captcha's classic API (in.php and res.php), as its official clients speak it.

Answers are always HTTP 200, as 2captcha's are (its clients drop the body of any other status): `OK|<id>`,
`OK|<text>`, `CAPCHA_NOT_READY` (2captcha's spelling) or `ERROR_<NAME>` in plain text, nothing around them; with
json=1, {"status": 1, "request": ...} or {"status": 0, "request": "ERROR_<NAME>", "error_text": ...}."""

from __future__ import annotations

from flask import Blueprint, jsonify, make_response, request
from spectree import Response

from ..openapi import documented
from ..routes import images_limit
from . import errors as e
from . import params as p
from . import responses as r
from . import solve

bp = Blueprint("twocaptcha", __name__)
PATHS = frozenset({"/in.php", "/res.php"})
NOT_READY = "CAPCHA_NOT_READY"
REPORTED = "OK_REPORT_RECORDED"
TAG = "compat: 2captcha classic API"  # the endpoints' group in /docs


def _wants_json() -> bool:
    try:
        value = p.merged().get("json")
    except Exception:  # noqa: BLE001 - parameters that cannot be read (the error being answered): text
        return False
    return value is True or value == 1 or str(value).strip().lower() in ("1", "true", "yes", "on")


def answer(status: int, value: str, **extra):
    """An answer in the form the request asked for (json=1 or text)."""
    if _wants_json():
        return jsonify({"status": status, "request": value, **extra})
    response = make_response(value)
    response.mimetype = "text/plain"
    return response


def error_answer(error: e.CompatError, headers=None):
    response = answer(0, error.name, error_text=error.text)
    if headers:
        response.headers.update(headers)
    return response


@bp.route("/in.php", methods=["GET", "POST"])
@images_limit
@documented(
    query=p.InParams,
    form=p.InForm,
    json=p.InParams,
    resp=Response(HTTP_200=r.TwoCaptchaAnswer),
    operation_id="twocaptcha_in",
    tags=[TAG],
)
def submit():
    """Send a captcha image (2captcha's in.php).

    The image as a multipart file in 'file' (method=post) or as base64 in 'body' (method=base64); the parameters in
    the query string, a urlencoded or multipart form, or a JSON body. The image is read at once: the answer is
    `OK|<id>` (text) or {"status": 1, "request": "<id>"} (json=1), and the first res.php?action=get finds it
    ready. Always HTTP 200: an error is `ERROR_<NAME>`."""
    values = p.merged()
    given = p.parse(p.InParams, values)
    _key, key_model = p.credentials(values)
    method = given.method.strip().lower()
    if method not in ("post", "base64"):
        raise e.BAD_PARAMETERS(f"method={given.method!r}: this service reads image captchas (post or base64)")
    file = (request.files.get("file") or next(iter(request.files.values()), None)) if method == "post" else None
    if method == "post" and file is None:
        raise e.ZERO_CAPTCHA_FILESIZE("method=post: send the image as a multipart file in 'file'")
    data = p.image(given.body, file)
    order = p.order(
        data,
        numeric=given.numeric,
        min_length=given.min_len,
        max_length=given.max_len,
        math=given.calc,
        key_model=key_model,
    )
    task = solve.create(order, _key)
    return answer(1, str(task.id)) if _wants_json() else answer(1, f"OK|{task.id}")


def _result(task_id_value, key: str) -> tuple[int, str]:
    task = solve.find(solve.task_number(task_id_value), key)
    if task is None:
        raise e.WRONG_CAPTCHA_ID(f"no task {task_id_value} of this API key (unknown, or kept no more)")
    if task.status != "ready":
        raise solve.failure(task)
    return task.id, task.text


@bp.route("/res.php", methods=["GET", "POST"])
@documented(
    query=p.ResParams,
    form=p.ResParams,
    json=p.ResParams,
    resp=Response(HTTP_200=r.TwoCaptchaAnswer),
    operation_id="twocaptcha_res",
    tags=[TAG],
)
def result():
    """A task's result, the balance, or a report (2captcha's res.php).

    action=get&id=ID: `OK|<text>` (text) or {"status": 1, "request": "<text>"} (json=1); several ids
    (ids=ID1,ID2) answer their results joined with '|'. action=get2: the text and its cost, `OK|<text>|0`.
    action=getbalance: a bare number, the images this key may still send under CAPTCHA_RATE_LIMIT.
    action=reportbad / reportgood &id=ID: `OK_REPORT_RECORDED`; a wrong reading's image goes to the feedback
    folder for labelling. Always HTTP 200: an error is `ERROR_<NAME>`."""
    values = p.merged()
    given = p.parse(p.ResParams, values)
    key, _model = p.credentials(values)
    action = given.action.strip().lower()
    if action == "getbalance":
        return answer(1, r.balance(key))
    if action in ("reportbad", "reportgood"):
        solve.charge_image()  # a report costs an image of the allowance, as POST /report does
        task = solve.find(solve.task_number(given.id), key)
        if task is None:
            raise e.WRONG_CAPTCHA_ID(f"no task {given.id} of this API key (unknown, or kept no more)")
        if not solve.report(task, key, correct=action == "reportgood"):
            raise e.DUPLICATE_REPORT(f"task {task.id} was reported already")
        return answer(1, REPORTED)
    if action == "get" and given.ids:
        ids = [part for part in given.ids.split(",") if part.strip()][: p.MAX_IDS]
        texts = []
        for value in ids:
            try:
                texts.append(_result(value, key)[1])
            except e.CompatError as error:
                if error.name == e.NO_SLOT_AVAILABLE.name:
                    raise  # the store is down: every other id would wait for it too
                texts.append(error.name)
        return answer(1, "|".join(texts))
    if action in ("get", "get2"):
        _id, text = _result(given.id, key)
        if action == "get2":
            return answer(1, text, price="0") if _wants_json() else answer(1, f"OK|{text}|0")
        return answer(1, text) if _wants_json() else answer(1, f"OK|{text}")
    if not action:
        raise e.NO_SUCH_METHOD("res.php needs an action: get, get2, getbalance, reportbad or reportgood")
    raise e.NO_SUCH_METHOD(f"no action {action[:40]!r}: get, get2, getbalance, reportbad or reportgood")


@bp.errorhandler(Exception)
def any_error(error: Exception):
    """Every failure of these endpoints, the service's own (a wrong key, a rate limit, a body too large) too."""
    compat, headers = r.translate(error)
    return r.note_error(compat, error_answer(compat, headers))
