import asyncio

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from effects import record


def contact(request):
    """A form protected by CsrfViewMiddleware (the template has {% csrf_token %})."""
    if request.method == "POST":
        name = request.POST.get("name", "")
        record("contact posted", name=name)
        return HttpResponse(f"Thanks, {name}.", content_type="text/plain; charset=utf-8")
    return render(request, "contact.html")


async def stream(request):
    """An async view with an async iterator: StreamingHttpResponse under ASGI."""
    n = int(request.GET.get("n", "5"))

    async def parts():
        for i in range(n):
            yield f"part {i}\n"
            await asyncio.sleep(0.001)

    return StreamingHttpResponse(parts(), content_type="text/plain; charset=utf-8")
