from celery import shared_task


@shared_task
def square(number: int) -> dict:
    """A trivial task: its result, read back by the page, proves the broker round trip."""
    import socket

    return {"square": number * number, "worker": socket.gethostname()}
