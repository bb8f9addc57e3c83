"""inkdeploy: deploy and operate a Django/Celery stack on plain Debian VMs."""

__version__ = "0.1.0"
