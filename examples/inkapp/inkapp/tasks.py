from celery import shared_task


@shared_task
def square(number: int) -> dict:
    """A trivial task: its result, read back by the page, proves the broker round trip."""
    import socket

    return {"square": number * number, "worker": socket.gethostname()}


@shared_task
def heartbeat() -> str:
    """Run by Celery beat every 10 s: the page shows when beat last ran, proving beat is alive."""
    import datetime

    from django.core.cache import cache

    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    cache.set("inkapp:beat", stamp, 3600)
    return stamp


@shared_task
def nap(seconds: float) -> dict:
    """Sleep, then say which release ran it: a long task to show warm shutdown on deploys."""
    import time

    from django.conf import settings

    time.sleep(seconds)
    return {"slept": seconds, "version": settings.APP_VERSION}


@shared_task
def tally(run: str, number: int, seconds: float) -> dict:
    """Count its start, sleep, count its end, in the cache under drill RUN and task NUMBER: a
    drill that restarts the workers checks that every task started once and finished once (none
    lost, none run twice)."""
    import socket
    import time

    from django.conf import settings
    from django.core.cache import cache

    key = f"inkapp:tally:{run}:{number}"
    cache.add(f"{key}:started", 0, 3600)
    cache.incr(f"{key}:started")
    started = time.time()
    time.sleep(seconds)
    cache.add(f"{key}:done", 0, 3600)
    cache.incr(f"{key}:done")
    result = {
        "number": number,
        "worker": socket.gethostname(),
        "started": started,
        "finished": time.time(),
        "version": settings.APP_VERSION,
    }
    cache.set(f"{key}:result", result, 3600)
    return result
