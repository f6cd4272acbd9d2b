"""The JSON task API that anti-captcha, CapMonster Cloud and 2captcha (its v2 API) share, as their official clients
speak it: POST /createTask, /getTaskResult, /getBalance and the reports, each a JSON object in and out.

Every answer is HTTP 200 with an errorId (0: no error), as theirs are: their clients drop the body of any other
status, or read a 5xx as "still working". An error carries errorId, errorCode and errorDescription, all three (one
client library joins the last two and fails without either)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from spectree import Response

from ..openapi import documented
from ..routes import images_limit
from . import errors as e
from . import params as p
from . import responses as r
from . import solve

bp = Blueprint("taskapi", __name__)
PATHS = frozenset(
    {
        "/createTask",
        "/getTaskResult",
        "/getBalance",
        "/reportIncorrectImageCaptcha",
        "/reportIncorrect",
        "/reportCorrect",
    }
)
IMAGE_TASK = "imagetotexttask"
TAG = "compat: task API (anti-captcha, CapMonster Cloud, 2captcha v2)"  # the endpoints' group in /docs


def _ok(**fields):
    return jsonify({"errorId": 0, **fields})


def _task(body: dict, key: str):
    ref = p.parse(p.TaskRef, body)
    task = solve.find(solve.task_number(ref.taskid), key)
    if task is None:
        raise e.NO_SUCH_CAPCHA_ID(f"no task {ref.taskid} of this API key (unknown, or kept no more)")
    return task


@bp.post("/createTask")
@images_limit
@documented(
    json=p.CreateTask,
    resp=Response(HTTP_200=r.TaskCreated),
    operation_id="create_task",
    tags=[TAG],
)
def create_task():
    """Send a captcha image (ImageToTextTask).

    The image is read at once: the first /getTaskResult finds the task ready. 'numeric', 'minLength' and
    'maxLength' constrain the reading inside decoding; 'recognizingThreshold' (0-100) fails the task with
    ERROR_CAPTCHA_UNSOLVABLE below it; 'CapMonsterModule', or a clientKey of the form '<key>__<model>', picks a
    served model."""
    body = p.task_body()
    key, key_model = p.credentials(body)
    if not isinstance(body.get("task"), dict):
        raise e.TASK_ABSENT("send {'clientKey': ..., 'task': {'type': 'ImageToTextTask', 'body': ...}}")
    kind = body["task"].get("type")
    if not isinstance(kind, str) or kind.strip().lower() != IMAGE_TASK:
        raise e.TASK_NOT_SUPPORTED(f"task type {str(kind)[:60]!r}: this service reads ImageToTextTask only")
    if not body["task"].get("body"):
        raise e.ZERO_CAPTCHA_FILESIZE("the task has no image: send it as base64 in task.body")
    task = p.parse(p.ImageToTextTask, body["task"])
    order = p.order(
        p.image(task.body),
        numeric=task.numeric,
        min_length=task.minlength,
        max_length=task.maxlength,
        math=task.math,
        threshold=task.recognizingthreshold,
        module=task.capmonstermodule,
        key_model=key_model,
    )
    return _ok(taskId=solve.create(order, key).id)


@bp.post("/getTaskResult")
@documented(
    json=p.TaskRef,
    resp=Response(HTTP_200=r.TaskResult),
    operation_id="get_task_result",
    tags=[TAG],
)
def get_task_result():
    """A task's result: status 'ready' with solution.text, or an error (ERROR_CAPTCHA_UNSOLVABLE below the
    threshold, ERROR_NO_SUCH_CAPCHA_ID for a task unknown, expired or another key's). Not rate limited."""
    body = p.task_body()
    key, _model = p.credentials(body)
    task = _task(body, key)
    if task.status != "ready":
        raise solve.failure(task)
    return _ok(
        status="ready",
        solution={"text": task.text},
        cost="0",
        ip=task.client_ip,
        createTime=int(task.created),
        endTime=int(task.ended),
        solveCount=1,
    )


@bp.post("/getBalance")
@documented(
    json=p.KeyOnly,
    resp=Response(HTTP_200=r.Balance),
    operation_id="get_balance",
    tags=[TAG],
)
def get_balance():
    """The images this key may still send now under CAPTCHA_RATE_LIMIT (readings cost nothing here)."""
    key, _model = p.credentials(p.task_body())
    return _ok(balance=float(r.balance(key)))


def _report(correct: bool):
    body = p.task_body()
    key, _model = p.credentials(body)
    solve.charge_image()  # a report costs an image of the allowance, as POST /report does
    task = _task(body, key)
    if not solve.report(task, key, correct):
        raise e.DUPLICATE_REPORT(f"task {task.id} was reported already")
    return _ok(status="success")


REPORT_DOC = dict(
    json=p.TaskRef,
    resp=Response(HTTP_200=r.Reported),
    tags=[TAG],
)


@bp.post("/reportIncorrectImageCaptcha")
@documented(operation_id="report_incorrect_image_captcha", **REPORT_DOC)
def report_incorrect_image():
    """Report a wrong reading (anti-captcha's name): its image, while still kept, goes to the feedback folder
    (CAPTCHA_FEEDBACK_DIR/MODEL/unlabelled/) for labelling."""
    return _report(correct=False)


@bp.post("/reportIncorrect")
@documented(operation_id="report_incorrect", **REPORT_DOC)
def report_incorrect():
    """Report a wrong reading (2captcha's v2 name): as /reportIncorrectImageCaptcha."""
    return _report(correct=False)


@bp.post("/reportCorrect")
@documented(operation_id="report_correct", **REPORT_DOC)
def report_correct():
    """Report a right reading: recorded (a later report of the task is a duplicate); nothing is stored."""
    return _report(correct=True)


@bp.errorhandler(Exception)
def any_error(error: Exception):
    """Every failure of these endpoints, the service's own (a wrong key, a rate limit, a body too large) too."""
    compat, headers = r.translate(error)
    return error_answer(compat, headers)


def error_answer(error: e.CompatError, headers=None):
    error = e.for_task_api(error)
    response = jsonify(r.task_error(error))
    if headers:
        response.headers.update(headers)
    return r.note_error(error, response)
