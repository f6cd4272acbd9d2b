"""Drive the captcha-solving services' official Python clients, unchanged, against this service: run in their own
virtual environment (.venv-clients) by tests/test_compat_clients.py, as a scraper's code would use them.

Reads a JSON object from stdin: {"urls": {"twocaptcha": "127.0.0.1:8443", "anticaptcha": "127.0.0.1:5000",
"capmonster": "http://127.0.0.1:5000"}, "steps": [{"client", "op", "key", ...}]} and prints one JSON line per step:
{"ok": true, ...what the client returned} or {"ok": false, "error": exception class, "message": its text}.
Nothing here talks HTTP itself: every request is the client library's own."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback


def twocaptcha(urls: dict, step: dict) -> dict:
    from twocaptcha import TwoCaptcha

    # pollingInterval: the client polls at once, then waits this many whole seconds between polls.
    solver = TwoCaptcha(step["key"], server=urls["twocaptcha"], defaultTimeout=30, pollingInterval=1)
    if step["op"] == "solve":
        answer = solver.normal(step["image"], **step.get("options", {}))
        return {"text": answer["code"], "id": answer["captchaId"]}
    if step["op"] == "balance":
        return {"balance": solver.balance()}
    if step["op"] == "report":
        return {"answer": solver.report(step["id"], step["correct"])}
    raise ValueError(step["op"])


def anticaptcha(urls: dict, step: dict) -> dict:
    from python_anticaptcha import AnticaptchaClient, ImageToTextTask

    client = AnticaptchaClient(step["key"], host=urls["anticaptcha"], use_ssl=False)
    if step["op"] == "solve":
        with open(step["image"], "rb") as image:
            job = client.createTask(ImageToTextTask(image, **step.get("options", {})))
        job.join(maximum_time=30)
        return {"text": job.get_captcha_text(), "id": job.task_id}
    if step["op"] == "balance":
        return {"balance": client.getBalance()}
    if step["op"] == "report":
        from python_anticaptcha.sync_client import Job

        return {"answer": Job(client, step["id"]).report_incorrect_image()}
    raise ValueError(step["op"])


def capmonster(urls: dict, step: dict) -> dict:
    from capmonstercloudclient import CapMonsterClient, ClientOptions
    from capmonstercloudclient.requests import ImageToTextRequest

    client = CapMonsterClient(options=ClientOptions(api_key=step["key"], service_url=urls["capmonster"]))
    if step["op"] == "solve":
        with open(step["image"], "rb") as image:
            request = ImageToTextRequest(image_bytes=image.read(), **step.get("options", {}))
        solution = asyncio.run(client.solve_captcha(request))
        return {"text": solution["text"]}
    if step["op"] == "balance":
        return {"balance": asyncio.run(client.get_balance())}
    raise ValueError(step["op"])


CLIENTS = {"twocaptcha": twocaptcha, "anticaptcha": anticaptcha, "capmonster": capmonster}


def main() -> None:
    job = json.load(sys.stdin)
    for step in job["steps"]:
        started = time.monotonic()
        try:
            outcome = {"ok": True, **CLIENTS[step["client"]](job["urls"], step)}
        except Exception as error:  # noqa: BLE001 - what the client raised is the result
            outcome = {"ok": False, "error": type(error).__name__, "message": str(error)}
            if isinstance(error, (ValueError, KeyError, TypeError)) and "--debug" in sys.argv:
                traceback.print_exc()
        outcome["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(outcome, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
