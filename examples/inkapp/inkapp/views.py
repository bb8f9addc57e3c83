import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from . import metrics
from .models import Visit
from .tasks import square


@require_http_methods(["GET", "POST"])
def index(request):
    if request.method == "POST":
        note = request.POST.get("note", "")[:200]
        visit = Visit.objects.create(version=settings.APP_VERSION, note=note)
        cache.delete("inkapp:visits")
        result = square.delay(visit.id)
        cache.set("inkapp:last_task", result.id, 600)
        return redirect("index")
    visits = cache.get("inkapp:visits")
    cached = visits is not None
    if not cached:
        visits = Visit.objects.count()
        cache.set("inkapp:visits", visits, 30)
    task = None
    task_id = cache.get("inkapp:last_task")
    if task_id:
        res = square.AsyncResult(task_id)
        task = {"id": task_id, "state": res.state, "result": res.result if res.ready() else None}
    context = {
        "version": settings.APP_VERSION,
        "visits": visits,
        "cached": cached,
        "recent": Visit.objects.all()[:5],
        "task": task,
        "beat": cache.get("inkapp:beat"),
    }
    return render(request, "inkapp/index.html", context)


def healthz(request):
    """Database and cache both answer, and which version this is. 503 with the reason if not."""
    checks, started = {}, time.perf_counter()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["db"] = "ok"
    except Exception as exc:  # the health endpoint reports, never raises
        checks["db"] = f"error: {exc.__class__.__name__}: {exc}"[:200]
    try:
        cache.set("inkapp:healthz", "1", 10)
        checks["cache"] = "ok" if cache.get("inkapp:healthz") == "1" else "error: read back failed"
    except Exception as exc:
        checks["cache"] = f"error: {exc.__class__.__name__}: {exc}"[:200]
    healthy = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if healthy else "fail",
        "version": settings.APP_VERSION,
        "checks": checks,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if healthy else 503)


def metrics_view(request):
    data, content_type = metrics.render()
    return HttpResponse(data, content_type=content_type)
