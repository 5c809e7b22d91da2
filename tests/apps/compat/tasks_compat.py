"""Starlette app for the differential tests of the request's task (tests/test_compat_tasks.py).

ferrogate does not make an asyncio Task for an HTTP request: it steps the app's coroutine
itself and stands in for the task (src/asgi/runner.rs). Everything here is what apps and
libraries do with "the current task", answered as JSON so that ferrogate's answers can be
compared with uvicorn's, whose requests run in real Tasks.

Routes:
  /current-task        asyncio.current_task() before and after an await
  /all-tasks           asyncio.all_tasks() seen from another task while the request awaits it,
                       and from the request after an await
  /all-tasks-ended     whether the task of the last /all-tasks request is still listed
  /asyncio-timeout     asyncio.timeout() around a long sleep, then the request goes on
  /wait-for            asyncio.wait_for() of a long sleep with a short timeout
  /anyio-fail-after    anyio.fail_after() around a long sleep
  /anyio-move-on       anyio.move_on_after() around a long sleep
  /task-group          an anyio task group: two children finish, the third is cancelled
  /contextvar?tag=T    a context variable set by the request, read after awaits and by a child task
  /contextvar-unset    the same variable, not set: no value may leak from an earlier request
  /shield              asyncio.shield() of a short sleep
  /self-cancel         the request cancels its own task, catches the CancelledError, uncancels
  /self-cancel-uncaught   the same, without catching it
  /threads             asyncio.to_thread() and anyio.to_thread.run_sync()
  /foreign-future      awaits a future of another event loop (asyncio refuses it with a RuntimeError)
  /raise-holding-task  keeps a weak reference to its task and a strong one in a local, then raises
  /tasks-alive         after gc.collect(), how many tasks of /raise-holding-task are still alive
  /hold?tag=T          records "holding", then sleeps in an anyio task group until cancelled;
                       records "hold cleaned up" from its finally block
"""

import asyncio
import contextvars
import gc
import threading
import weakref

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import effects

request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="unset")


async def current_task(request):
    task = asyncio.current_task()
    await asyncio.sleep(0)
    after = asyncio.current_task()
    return JSONResponse({
        "found": task is not None,
        "same_after_await": after is task,
        "done": task.done(),
        "cancelling": task.cancelling(),
        "loop_is_running_loop": task.get_loop() is asyncio.get_running_loop(),
    })


last_listed_task = []


async def listed(task):
    return task in asyncio.all_tasks()


async def all_tasks(request):
    me = asyncio.current_task()
    seen_by_another_task = await asyncio.create_task(listed(me))
    await asyncio.sleep(0)
    last_listed_task[:] = [me]
    return JSONResponse({"seen_by_another_task": seen_by_another_task, "listed_after_await": me in asyncio.all_tasks()})


async def all_tasks_ended(request):
    return JSONResponse({"listed": bool(last_listed_task) and last_listed_task[0] in asyncio.all_tasks()})


async def asyncio_timeout(request):
    timed_out = False
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(5)
    except TimeoutError:
        timed_out = True
    # The timeout uncancelled the task: the request must be able to await again.
    await asyncio.sleep(0.01)
    return JSONResponse({"timed_out": timed_out, "cancelling": asyncio.current_task().cancelling()})


async def wait_for(request):
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
        outcome = "finished"
    except TimeoutError:
        outcome = "timed out"
    await asyncio.sleep(0.01)
    return JSONResponse({"outcome": outcome, "cancelling": asyncio.current_task().cancelling()})


async def anyio_fail_after(request):
    try:
        with anyio.fail_after(0.05):
            await anyio.sleep(5)
        outcome = "finished"
    except TimeoutError:
        outcome = "timed out"
    await anyio.sleep(0.01)
    return JSONResponse({"outcome": outcome})


async def anyio_move_on(request):
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(5)
    await anyio.sleep(0.01)
    return JSONResponse({"cancel_called": scope.cancel_called, "cancelled_caught": scope.cancelled_caught})


async def task_group(request):
    finished = []

    async def child(name, delay):
        await anyio.sleep(delay)
        finished.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(child, "first", 0.01)
        tg.start_soon(child, "second", 0.02)
        tg.start_soon(child, "never", 5)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    return JSONResponse({"finished": finished, "cancelled": tg.cancel_scope.cancel_called})


async def contextvar(request):
    before = request_tag.get()
    request_tag.set(request.query_params["tag"])
    # Other requests run while this one sleeps; each must keep its own value.
    await asyncio.sleep(0.02)
    after_sleep = request_tag.get()

    async def child():
        await asyncio.sleep(0)
        return request_tag.get()

    in_child = await asyncio.create_task(child())
    await anyio.sleep(0.01)
    return JSONResponse({"before": before, "after_sleep": after_sleep, "in_child": in_child, "at_end": request_tag.get()})


async def contextvar_unset(request):
    await asyncio.sleep(0)
    return JSONResponse({"value": request_tag.get()})


async def shield(request):
    value = await asyncio.shield(asyncio.sleep(0.01, result=5))
    return JSONResponse({"value": value})


async def self_cancel(request):
    task = asyncio.current_task()
    task.cancel("by the app")
    caught = None
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError as e:
        caught = e.args[0] if e.args else ""
        task.uncancel()
    await asyncio.sleep(0.01)
    return JSONResponse({"caught": caught, "cancelling": task.cancelling()})


async def self_cancel_uncaught(request):
    asyncio.current_task().cancel()
    await asyncio.sleep(1)
    return JSONResponse({"reached": True})


async def threads(request):
    main = threading.get_ident()
    in_asyncio = await asyncio.to_thread(threading.get_ident)
    in_anyio = await anyio.to_thread.run_sync(threading.get_ident)
    # anyio's worker thread can call back into the loop, which it finds through the task.
    from_thread = await anyio.to_thread.run_sync(lambda: anyio.from_thread.run_sync(threading.get_ident))
    return JSONResponse({"asyncio_other_thread": in_asyncio != main, "anyio_other_thread": in_anyio != main,
                         "from_thread_on_loop": from_thread == main})


async def foreign_future(request):
    other = asyncio.new_event_loop()
    try:
        await other.create_future()
        outcome = "awaited"
    except RuntimeError as e:
        outcome = "refused" if "attached to a different loop" in str(e) else f"other error: {e}"
    finally:
        other.close()
    return JSONResponse({"outcome": outcome})


held_tasks: list[weakref.ref] = []


async def raise_holding_task(request):
    # The traceback keeps this frame, and the frame keeps the task: a cycle only the
    # collector can free.
    task = asyncio.current_task()
    held_tasks.append(weakref.ref(task))
    await asyncio.sleep(0)
    raise ValueError("on purpose, holding the task")


async def tasks_alive(request):
    gc.collect()
    return JSONResponse({"held": len(held_tasks), "alive": sum(1 for ref in held_tasks if ref() is not None)})


async def hold(request):
    tag = request.query_params["tag"]
    effects.record("holding", tag=tag)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 3600)
            await anyio.sleep(3600)
    finally:
        effects.record("hold cleaned up", tag=tag)
    return JSONResponse({"reached": True})


app = Starlette(routes=[
    Route("/current-task", current_task),
    Route("/all-tasks", all_tasks),
    Route("/all-tasks-ended", all_tasks_ended),
    Route("/asyncio-timeout", asyncio_timeout),
    Route("/wait-for", wait_for),
    Route("/anyio-fail-after", anyio_fail_after),
    Route("/anyio-move-on", anyio_move_on),
    Route("/task-group", task_group),
    Route("/contextvar", contextvar),
    Route("/contextvar-unset", contextvar_unset),
    Route("/shield", shield),
    Route("/self-cancel", self_cancel),
    Route("/self-cancel-uncaught", self_cancel_uncaught),
    Route("/threads", threads),
    Route("/foreign-future", foreign_future),
    Route("/raise-holding-task", raise_holding_task),
    Route("/tasks-alive", tasks_alive),
    Route("/hold", hold),
])
