"""Django settings. Every value comes from the environment (documented in .env.example).

With nothing set the engine runs embedded: SQLite and chDB under var/, an in-memory Celery broker
and channel layer, the worker inside the server process. DATABASE_URL, CLICKHOUSE_URL and REDIS_URL
switch the same code to Postgres, a ClickHouse server and Redis.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import dj_database_url
import django_stubs_ext

from .env import ConfigError, env_bool, env_float, env_int, env_list, env_str

django_stubs_ext.monkeypatch()  # lets admin/queryset generics be subscripted at run time

BASE_DIR = Path(__file__).resolve().parent.parent
# A source checkout keeps templates/, static/ and var/ beside manage.py; an installed package
# (`pip install .`, the `opentracy` command) has them under <prefix>/share/opentracy and ./var.
SOURCE_TREE = (BASE_DIR / "manage.py").is_file()
ASSETS_DIR = BASE_DIR if SOURCE_TREE else Path(sys.prefix) / "share" / "opentracy"
VAR_DIR = Path(env_str("OPENTRACY_VAR_DIR", str(BASE_DIR / "var" if SOURCE_TREE else Path.cwd() / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under var/."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Key for provider credentials at rest; derived from SECRET_KEY unless set on its own.
OPENTRACY_ENCRYPTION_KEY = env_str("OPENTRACY_ENCRYPTION_KEY") or SECRET_KEY
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here, no CDN
    "channels",
    "django_htmx",
    "gateway",
    "traces",
    "datasets",
    "distillation",
    "routing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and dashboard's static files from the ASGI server, no extra web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "opentracy_site.urls"
ASGI_APPLICATION = "opentracy_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [ASSETS_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'opentracy.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The server thread and the test runner share one file; wait instead of failing on a lock.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [ASSETS_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # collectstatic fills it; WhiteNoise expects it to exist
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# ClickHouse: chDB in-process by default; http(s)://host:8123/db for a server.
CLICKHOUSE_URL = env_str("CLICKHOUSE_URL", f"chdb:///{VAR_DIR / 'chdb'}")
# A ClickHouse cluster's name (from its remote_servers config): tables become replicated per shard
# behind Distributed tables of the same names (traces/ch_cluster.py). Empty: one server or chDB.
CLICKHOUSE_CLUSTER = env_str("CLICKHOUSE_CLUSTER", "")
if not CLICKHOUSE_URL.startswith(("chdb://", "http://", "https://")):
    raise ConfigError(f"CLICKHOUSE_URL must start with chdb://, http:// or https://, got {CLICKHOUSE_URL!r}")

REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"distillation.tasks.*": {"queue": "gpu"}}
# Embedded mode runs the worker inside the server process; distributed mode runs `celery worker`.
OPENTRACY_EMBEDDED_WORKER = env_bool("OPENTRACY_EMBEDDED_WORKER", not REDIS_URL)
# ... and its periodic tasks (CELERY_BEAT_SCHEDULE) on a thread beside it; distributed: `celery beat`.
OPENTRACY_EMBEDDED_BEAT = env_bool("OPENTRACY_EMBEDDED_BEAT", OPENTRACY_EMBEDDED_WORKER)

if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gateway.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    # `?format=` names an export format (/api/traces/export), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OpenTracy engine API",
    "DESCRIPTION": "Traces, stats, export, aliases. Authenticate with `Authorization: Bearer <engine key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several components have a `status` field with different choices: name the dataset rows' one.
    "ENUM_NAME_OVERRIDES": {"RowStatusEnum": "datasets.models.DatasetRow.Status"},
}

# Gateway
OPENTRACY_MAX_BODY_BYTES = env_int("OPENTRACY_MAX_BODY_BYTES", 4 * 1024 * 1024)
OPENTRACY_UPSTREAM_TIMEOUT_S = env_float("OPENTRACY_UPSTREAM_TIMEOUT_S", 120.0)
OPENTRACY_UPSTREAM_CONNECT_TIMEOUT_S = env_float("OPENTRACY_UPSTREAM_CONNECT_TIMEOUT_S", 10.0)
# How long a cached API key, alias or credential may be stale in another process.
OPENTRACY_CACHE_TTL_S = env_float("OPENTRACY_CACHE_TTL_S", 30.0)
# Reliability: retries per target (an alias or the request may override), exponential backoff with
# full jitter, and a cooldown for a target after consecutive transient failures.
OPENTRACY_RETRIES = env_int("OPENTRACY_RETRIES", 2)
OPENTRACY_RETRY_BACKOFF_S = env_float("OPENTRACY_RETRY_BACKOFF_S", 0.25)
OPENTRACY_RETRY_MAX_WAIT_S = env_float("OPENTRACY_RETRY_MAX_WAIT_S", 8.0)
OPENTRACY_COOLDOWN_FAILURES = env_int("OPENTRACY_COOLDOWN_FAILURES", 5)
OPENTRACY_COOLDOWN_S = env_float("OPENTRACY_COOLDOWN_S", 30.0)
OPENTRACY_LOCAL_MODEL_PRELOAD = env_bool("OPENTRACY_LOCAL_MODEL_PRELOAD", True)
OPENTRACY_LOCAL_MODEL_DIR = Path(env_str("OPENTRACY_LOCAL_MODEL_DIR", str(VAR_DIR / "models")))
# Clustering's grouping model: empty for the packaged MiniLM alone, else a sentence-transformers
# directory that groups (at most) a sample of each run's prompts (datasets/embedder.py says why).
OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = env_str("OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR", "")
OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE = env_int("OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE", 10_000)
if not 1_000 <= OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE <= 20_000:  # UMAP and HDBSCAN fit on 20k at most
    raise ConfigError("OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE must be from 1000 to 20000")
# Distillation: where jobs write adapters (and merged exports). In distributed mode a volume shared
# by the GPU worker, the web tier and vLLM, mounted at the same path everywhere (vLLM reads the path
# it is given). How approved students are served unless the approval says: "local" or "vllm".
OPENTRACY_ADAPTER_DIR = Path(env_str("OPENTRACY_ADAPTER_DIR", str(VAR_DIR / "distillation"))).resolve()
OPENTRACY_STUDENT_SERVING = env_str("OPENTRACY_STUDENT_SERVING", "local")
# `local` students: LoRA adapters on one shared copy of each base ("adapter"), or each merged into a base copy
# of its own ("merged": a little faster per token, a base's memory per student).
OPENTRACY_LOCAL_STUDENTS = env_str("OPENTRACY_LOCAL_STUDENTS", "adapter")
if OPENTRACY_LOCAL_STUDENTS not in ("adapter", "merged"):
    raise ConfigError(f"OPENTRACY_LOCAL_STUDENTS must be adapter or merged, got {OPENTRACY_LOCAL_STUDENTS!r}")
if OPENTRACY_STUDENT_SERVING not in ("local", "vllm"):
    raise ConfigError(f"OPENTRACY_STUDENT_SERVING must be local or vllm, got {OPENTRACY_STUDENT_SERVING!r}")

# Trace writer
# Routing (routing/): threads for the router's prompt embedding; the built-in policy's λ.
OPENTRACY_ROUTER_EMBED_THREADS = env_int("OPENTRACY_ROUTER_EMBED_THREADS", 2)
OPENTRACY_ROUTER_DEFAULT_LAMBDA = env_float("OPENTRACY_ROUTER_DEFAULT_LAMBDA", 0.1)
# The learner (routing/learning.py): routed traffic of the last N days (provider failures,
# feedback) updates each policy's error profile every interval, on the default queue.
OPENTRACY_ROUTER_LEARN_DAYS = env_int("OPENTRACY_ROUTER_LEARN_DAYS", 30)
OPENTRACY_ROUTER_LEARN_INTERVAL_S = env_float("OPENTRACY_ROUTER_LEARN_INTERVAL_S", 600.0)
if OPENTRACY_ROUTER_LEARN_DAYS < 1 or OPENTRACY_ROUTER_LEARN_INTERVAL_S <= 0:
    raise ConfigError("OPENTRACY_ROUTER_LEARN_DAYS must be >= 1 and OPENTRACY_ROUTER_LEARN_INTERVAL_S > 0")
# Periodic tasks: `celery -A opentracy_site beat` in distributed mode; in embedded mode a beat thread
# runs beside the embedded worker (OPENTRACY_EMBEDDED_BEAT).
OPENTRACY_CANARY_JUDGE_INTERVAL_S = env_float("OPENTRACY_CANARY_JUDGE_INTERVAL_S", 600.0)
# A running long job whose worker has not beaten for this long is put right (opentracy_site/heartbeat.py).
OPENTRACY_JOB_HEARTBEAT_S = env_int("OPENTRACY_JOB_HEARTBEAT_S", 120)
if OPENTRACY_CANARY_JUDGE_INTERVAL_S <= 0 or OPENTRACY_JOB_HEARTBEAT_S < 1:
    raise ConfigError("OPENTRACY_CANARY_JUDGE_INTERVAL_S must be > 0 and OPENTRACY_JOB_HEARTBEAT_S >= 1")
CELERY_BEAT_SCHEDULE = {
    "routing.learn_all": {
        "task": "routing.learn_all",
        "schedule": OPENTRACY_ROUTER_LEARN_INTERVAL_S,
        "options": {"queue": "default"},
    },
    "opentracy_site.sweep_dead_jobs": {
        "task": "opentracy_site.sweep_dead_jobs",
        "schedule": max(1.0, OPENTRACY_JOB_HEARTBEAT_S / 2),
        "options": {"queue": "default"},
    },
    "distillation.canary_judge_running": {
        "task": "distillation.canary_judge_running",
        "schedule": OPENTRACY_CANARY_JUDGE_INTERVAL_S,
        "options": {"queue": "default"},
    },
}
OPENTRACY_TRACE_BATCH_SIZE = env_int("OPENTRACY_TRACE_BATCH_SIZE", 1000)
OPENTRACY_TRACE_FLUSH_INTERVAL_S = env_float("OPENTRACY_TRACE_FLUSH_INTERVAL_S", 1.0)
OPENTRACY_TRACE_QUEUE_SIZE = env_int("OPENTRACY_TRACE_QUEUE_SIZE", 50_000)
OPENTRACY_TRACE_SPOOL_DIR = Path(env_str("OPENTRACY_TRACE_SPOOL_DIR", str(VAR_DIR / "spool")))
OPENTRACY_TRACE_REPLAY_INTERVAL_S = env_float("OPENTRACY_TRACE_REPLAY_INTERVAL_S", 10.0)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "celery": {"level": "WARNING"}},
}
