"""Differential tests of the request's task (tests/apps/compat/tasks_compat.py).

ferrogate runs an HTTP request's coroutine without an asyncio Task and stands in for the
task itself (src/asgi/runner.rs). Timeouts, cancel scopes, context variables and worker
threads all go through "the current task", so each route here is answered by ferrogate
and by uvicorn (whose requests are real Tasks) and the answers compared."""

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from compat_support import COMPAT_APPS_DIR, assert_same_response, effects, wait_effect


@pytest.fixture(scope="module")
def pair(pair_factory):
    return pair_factory("tasks_compat:app")


def both(pair, path):
    return pair.map(lambda srv: httpx.get(srv.url + path, timeout=10))


@pytest.mark.parametrize("path, expected", [
    ("/current-task", {"found": True, "same_after_await": True, "done": False, "cancelling": 0,
                       "loop_is_running_loop": True}),
    ("/all-tasks", {"seen_by_another_task": True, "listed_after_await": True}),
    ("/asyncio-timeout", {"timed_out": True, "cancelling": 0}),
    ("/wait-for", {"outcome": "timed out", "cancelling": 0}),
    ("/anyio-fail-after", {"outcome": "timed out"}),
    ("/anyio-move-on", {"cancel_called": True, "cancelled_caught": True}),
    ("/task-group", {"finished": ["first", "second"], "cancelled": True}),
    ("/shield", {"value": 5}),
    ("/self-cancel", {"caught": "by the app", "cancelling": 0}),
    ("/threads", {"asyncio_other_thread": True, "anyio_other_thread": True, "from_thread_on_loop": True}),
    ("/foreign-future", {"outcome": "refused"}),
])
def test_what_the_current_task_does(pair, path, expected):
    fg, uv = both(pair, path)
    assert uv.status_code == 200 and uv.json() == expected, f"uvicorn (the reference) answered {uv.status_code} {uv.text}"
    assert_same_response(fg, uv, what=path)


def test_a_request_is_no_longer_listed_by_all_tasks_once_it_ended(pair):
    both(pair, "/all-tasks")
    fg, uv = both(pair, "/all-tasks-ended")
    assert uv.status_code == 200 and uv.json() == {"listed": False}, f"uvicorn (the reference) answered {uv.status_code} {uv.text}"
    assert_same_response(fg, uv, what="/all-tasks-ended")


def test_a_request_that_cancels_itself_gets_a_500(pair):
    fg, uv = both(pair, "/self-cancel-uncaught")
    assert uv.status_code == 500
    assert fg.status_code == 500, fg.text
    # And the server goes on serving.
    fg, uv = both(pair, "/shield")
    assert_same_response(fg, uv, what="/shield after a request cancelled itself")


def test_a_failed_request_that_held_its_task_is_freed(pair):
    """The exception a request ended with keeps its frames, which keep the task: the
    collector must be able to free the whole cycle."""
    for srv in pair:
        for _ in range(5):
            assert httpx.get(srv.url + "/raise-holding-task", timeout=10).status_code == 500
    fg, uv = both(pair, "/tasks-alive")
    assert uv.json() == {"held": 5, "alive": 0}
    assert fg.json() == {"held": 5, "alive": 0}, "tasks of failed requests stay in memory"


def test_context_variables_stay_with_their_request(pair):
    """Requests that interleave each keep their own value, their child tasks see it, and
    no value leaks into a later request."""
    tags = [uuid.uuid4().hex[:8] for _ in range(24)]

    def run(srv):
        with httpx.Client(base_url=srv.url, timeout=10, limits=httpx.Limits(max_connections=24)) as client:
            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(lambda t: client.get("/contextvar", params={"tag": t}).json(), tags))
            return answers, client.get("/contextvar-unset").json()

    (fg_answers, fg_unset), (uv_answers, uv_unset) = pair.map(run)
    expected = [{"before": "unset", "after_sleep": t, "in_child": t, "at_end": t} for t in tags]
    assert uv_answers == expected
    assert fg_answers == expected
    assert fg_unset == uv_unset == {"value": "unset"}


def test_graceful_timeout_cancels_a_request_inside_a_task_group(server_factory, tmp_path):
    """A request awaiting in an anyio task group when the graceful timeout runs out is
    cancelled through its stand-in task: its finally block runs, the client gets a 503."""
    effects_path = tmp_path / "effects.jsonl"
    srv = server_factory("tasks_compat:app", "--app-dir", str(COMPAT_APPS_DIR), "--timeout-graceful-shutdown", "1",
                         cwd=COMPAT_APPS_DIR, env={"COMPAT_EFFECTS": str(effects_path)})
    srv.effects_path = effects_path
    tag = uuid.uuid4().hex[:8]
    result = {}

    def run():
        try:
            result["response"] = httpx.get(f"{srv.url}/hold", params={"tag": tag}, timeout=30)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_effect(srv, "holding", tag=tag)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(timeout=15) == 0
    t.join(10)
    assert result.get("response") is not None and result["response"].status_code == 503, result
    assert effects(srv, "hold cleaned up", tag=tag), "the request's finally block did not run"
    log = srv.log()
    assert "cancelled at the graceful-shutdown timeout" in log
    assert "Task was destroyed" not in log and "Traceback" not in log, srv.log_tail(20)
