"""The Celery application; workers run `celery -A inkapp.celery_app worker`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkapp.settings")

app = Celery("inkapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["inkapp"])
