from django.db import models


class Visit(models.Model):
    """One write per page submission: proves the database path works end to end."""

    created = models.DateTimeField(auto_now_add=True)
    version = models.CharField(max_length=64)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]
