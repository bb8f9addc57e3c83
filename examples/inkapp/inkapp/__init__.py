"""inkapp: the demo application inkdeploy deploys and tests rollouts with."""

from .celery_app import app as celery_app

__all__ = ["celery_app"]
