"""Settings from the environment: the app role writes them to a 0600 environment file.

INKAPP_DB_HOSTS      comma-separated PostgreSQL hosts (libpq multi-host; the primary is found
                     with target_session_attrs=read-write)
INKAPP_DB_*          NAME, USER, PASSWORD, PORT
INKAPP_REDIS_SENTINELS  host:port,host:port,...    INKAPP_REDIS_MASTER  monitored master name
INKAPP_REDIS_PASSWORD, INKAPP_REDIS_SENTINEL_PASSWORD
INKAPP_CACHE=locmem and INKAPP_DB_ENGINE=sqlite run it without services (tests, a laptop).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
env = os.environ.get

SECRET_KEY = env("INKAPP_SECRET_KEY") or env("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise RuntimeError("Set INKAPP_SECRET_KEY (the app role writes it to the environment file).")
DEBUG = env("INKAPP_DEBUG", "") == "1"
ALLOWED_HOSTS = [h for h in env("INKAPP_ALLOWED_HOSTS", "localhost").split(",") if h]
# The release inkdeploy installed (set by inkdeploy_release.settings), unless overridden.
APP_VERSION = env("INKAPP_VERSION") or env("INKDEPLOY_RELEASE_VERSION", "dev")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "inkapp",
]
MIDDLEWARE = [
    "inkapp.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "inkapp.urls"
WSGI_APPLICATION = "inkapp.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

if env("INKAPP_DB_ENGINE", "postgresql") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("INKAPP_DB_NAME", str(BASE_DIR / "inkapp.sqlite3")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": env("INKAPP_DB_HOSTS", "localhost"),
            "PORT": env("INKAPP_DB_PORT", "5432"),
            "NAME": env("INKAPP_DB_NAME", "inkapp"),
            "USER": env("INKAPP_DB_USER", "inkapp"),
            "PASSWORD": env("INKAPP_DB_PASSWORD", ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            # libpq tries the hosts in turn and keeps the one that accepts writes.
            "OPTIONS": {"target_session_attrs": "read-write", "connect_timeout": 3},
        }
    }

SENTINELS = [
    (h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]))
    for h in env("INKAPP_REDIS_SENTINELS", "").split(",")
    if h
]
REDIS_MASTER = env("INKAPP_REDIS_MASTER", "inkdeploy")
REDIS_PASSWORD = env("INKAPP_REDIS_PASSWORD", "")
SENTINEL_KWARGS = (
    {"password": env("INKAPP_REDIS_SENTINEL_PASSWORD")}
    if env("INKAPP_REDIS_SENTINEL_PASSWORD")
    else {}
)

if env("INKAPP_CACHE", "sentinel") == "locmem":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{REDIS_MASTER}/0",
            "OPTIONS": {
                # The master is asked of the sentinels, so the cache follows a failover.
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": SENTINELS,
                "SENTINEL_KWARGS": SENTINEL_KWARGS,
                "PASSWORD": REDIS_PASSWORD,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }

CELERY_BROKER_URL = (
    ";".join(f"sentinel://:{REDIS_PASSWORD}@{host}:{port}/1" for host, port in SENTINELS)
    or "memory://"
)
CELERY_RESULT_BACKEND = CELERY_BROKER_URL.replace("/1", "/2") if SENTINELS else "cache+memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"master_name": REDIS_MASTER, "sentinel_kwargs": SENTINEL_KWARGS}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
CELERY_TASK_ALWAYS_EAGER = env("INKAPP_CELERY_EAGER", "") == "1"
CELERY_TASK_STORE_EAGER_RESULT = CELERY_TASK_ALWAYS_EAGER

STATIC_URL = "static/"
# Where collectstatic puts files (never the package's own static/ folder); the app role sets
# INKDEPLOY_STATIC_ROOT to the release directory instead.
STATIC_ROOT = env("INKAPP_STATIC_ROOT", str(Path.cwd() / "staticfiles"))
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,  # keep Gunicorn's access and error loggers
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("INKAPP_LOG_LEVEL", "INFO")},
}
