"""Settings from the environment: inkdeploy's app role writes them to a 0600 environment file.

INKDEPLOY_DATABASE_DSN       libpq connection string of the primary (multi-host,
                             target_session_attrs=read-write), INKDEPLOY_DATABASE_PASSWORD
INKDEPLOY_REDIS_SENTINELS    host:port,host:port,...   INKDEPLOY_REDIS_MASTER_NAME  monitored master
INKDEPLOY_REDIS_PASSWORD, INKDEPLOY_REDIS_SENTINEL_PASSWORD
INKDEPLOY_REDIS_BROKER_DB, INKDEPLOY_REDIS_CACHE_DB   Celery's and the cache's Redis databases
INKDEPLOY_REDIS_TLS_CA_FILE  when set: Redis and Sentinel speak TLS, verified against this CA
INKAPP_SECRET_KEY, INKAPP_ALLOWED_HOSTS              the app's own settings
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
    from psycopg.conninfo import conninfo_to_dict

    # libpq tries the DSN's hosts in turn and keeps the one that accepts writes.
    _default_dsn = "host=localhost dbname=inkapp user=inkapp"
    _dsn = conninfo_to_dict(env("INKDEPLOY_DATABASE_DSN", _default_dsn))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": _dsn.pop("host", "localhost"),
            "PORT": _dsn.pop("port", "5432"),
            "NAME": _dsn.pop("dbname", "inkapp"),
            "USER": _dsn.pop("user", "inkapp"),
            "PASSWORD": env("INKDEPLOY_DATABASE_PASSWORD") or _dsn.pop("password", ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 3, **_dsn},
        }
    }

SENTINELS = [
    (h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]))
    for h in env("INKDEPLOY_REDIS_SENTINELS", "").split(",")
    if h
]
REDIS_MASTER = env("INKDEPLOY_REDIS_MASTER_NAME", "inkdeploy")
REDIS_PASSWORD = env("INKDEPLOY_REDIS_PASSWORD", "")
BROKER_DB = int(env("INKDEPLOY_REDIS_BROKER_DB", "0"))
CACHE_DB = int(env("INKDEPLOY_REDIS_CACHE_DB", "1"))
REDIS_TLS_CA_FILE = env("INKDEPLOY_REDIS_TLS_CA_FILE", "")
# With TLS every connection (sentinels, master, cache pool, broker, results) verifies the server
# against the internal CA; the certificates name the addresses the sentinels report.
_REDIS_TLS = (
    {"ssl_cert_reqs": "required", "ssl_ca_certs": REDIS_TLS_CA_FILE} if REDIS_TLS_CA_FILE else {}
)


def _sentinel_kwargs() -> dict:
    """Connections to the sentinels: short timeouts and no retries, so a dead sentinel costs one
    connect timeout and the next one is asked (inkdeploy docs/redis.md, "Retries")."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = {"socket_timeout": 1, "socket_connect_timeout": 1, "retry": Retry(NoBackoff(), 0)}
    if env("INKDEPLOY_REDIS_SENTINEL_PASSWORD"):
        kwargs["password"] = env("INKDEPLOY_REDIS_SENTINEL_PASSWORD")
    if _REDIS_TLS:
        kwargs.update(ssl=True, **_REDIS_TLS)
    return kwargs


if env("INKAPP_CACHE", "sentinel") == "locmem" or not SENTINELS:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    DJANGO_REDIS_CONNECTION_FACTORY = "django_redis.pool.SentinelConnectionFactory"
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{REDIS_MASTER}/{CACHE_DB}",
            "OPTIONS": {
                # The master is asked of the sentinels, so the cache follows a failover.
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "SENTINELS": SENTINELS,
                "SENTINEL_KWARGS": _sentinel_kwargs(),
                "PASSWORD": REDIS_PASSWORD,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                # the pool's "ssl" picks the sentinel-managed TLS connection class
                "CONNECTION_POOL_KWARGS": {"ssl": True, **_REDIS_TLS} if _REDIS_TLS else {},
            },
        }
    }

if SENTINELS:
    CELERY_BROKER_URL = ";".join(
        f"sentinel://:{REDIS_PASSWORD}@{host}:{port}/{BROKER_DB}" for host, port in SENTINELS
    )
    CELERY_RESULT_BACKEND = CELERY_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "master_name": REDIS_MASTER,
        "sentinel_kwargs": _sentinel_kwargs(),
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "retry_on_timeout": True,
        "visibility_timeout": 3600,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
    if _REDIS_TLS:
        CELERY_BROKER_USE_SSL = dict(_REDIS_TLS)
        CELERY_REDIS_BACKEND_USE_SSL = dict(_REDIS_TLS)
else:
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = env("INKAPP_CELERY_EAGER", "") == "1"
CELERY_TASK_STORE_EAGER_RESULT = CELERY_TASK_ALWAYS_EAGER
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 3600
# Beat (on exactly one host, see inkdeploy's celery role): a heartbeat the page shows.
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "inkapp.tasks.heartbeat", "schedule": 10.0},
}

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
