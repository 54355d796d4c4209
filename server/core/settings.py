"""The one settings registry.

Every setting has a name, a type, a default, an environment variable (``OPENASTRO_<NAME>``) and help.
Settings are resolved once at start-up, in this order (later wins):

1. the defaults below (the *embedded* defaults: SQLite and a file store under ``./var``, local executor),
2. an optional TOML file (``--config FILE`` or ``OPENASTRO_CONFIG``), keys are setting names,
3. the environment (``OPENASTRO_DATABASE_URL=...``).

The resolved :class:`Settings` object is frozen and passed explicitly; nothing reads the environment at
import time.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

ENV_PREFIX = "OPENASTRO_"


class SettingsError(ValueError):
    """A setting has an unknown name or an invalid value."""


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be > 0")
    return number


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    number = int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return number


def _probability(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be a number in [0, 1]")
    return number


def _port(value: Any) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("must be a TCP port 1-65535")
    return number


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _optional_text(value: Any) -> str:
    return str(value).strip()


def _storage_url(value: Any) -> str:
    text = str(value).strip()
    if not text:
        return ""
    if not text.startswith("s3://") or not text[5:].split("/", 1)[0]:
        raise ValueError("must be empty (the local store) or s3://BUCKET[/PREFIX]")
    return text.rstrip("/")


def _part_size(value: Any) -> int:
    number = _positive_int(value)
    if number < 5 * 1024 * 1024:
        raise ValueError("must be >= 5 MiB (5242880): the S3 API's smallest multipart part")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _default_ncores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


SETTINGS: tuple[Setting, ...] = (
    Setting("var_dir", "./var", _text, "Directory for embedded state (database, object store, work dirs)."),
    Setting("database_url", "", _optional_text,
            "SQLAlchemy URL. Empty: SQLite at VAR_DIR/openastro.db. MariaDB: mysql+mysqldb://user:pw@host/db"),
    Setting("storage_dir", "", _optional_text, "Object store root. Empty: VAR_DIR/store."),
    Setting("storage_url", "", _storage_url,
            "Object store on the S3 API: s3://BUCKET/PREFIX (AWS S3, B2, any S3-compatible server). "
            "Empty: the local store in STORAGE_DIR. Credentials: the usual AWS variables or files (boto3's chain)."),
    Setting("s3_endpoint_url", "", _optional_text,
            "Endpoint of an S3-compatible server (B2: https://s3.REGION.backblazeb2.com). Empty: AWS."),
    Setting("s3_region", "", _optional_text, "S3 region. Empty: boto3's default (AWS_DEFAULT_REGION), else us-east-1."),
    Setting("storage_cache_dir", "", _optional_text,
            "Local cache of verified copies of S3 objects (path() hands these to readers). "
            "Empty: VAR_DIR/store-cache."),
    Setting("s3_multipart_threshold", 64 * 1024 * 1024, _part_size,
            "Objects of at least this many bytes are uploaded in parts (multipart, resumable), bytes."),
    Setting("s3_part_size", 16 * 1024 * 1024, _part_size, "Size of one multipart part, bytes (>= 5 MiB)."),
    Setting("s3_max_attempts", 6, _positive_int,
            "Attempts per S3 request on transient errors (throttling, 5xx, timeouts), exponential backoff."),
    Setting("rice_compress", True, _bool,
            "Store integer raw frames RICE-compressed (lossless, fpack format); the original is reproducible."),
    Setting("executor", "local", _choice("local", "boinc"), "Who runs work units: local process pool or BOINC."),
    Setting("ncores", None, _positive_int, "Worker processes for the local executor (default: usable cores)."),
    Setting("boinc_project_dir", "", _optional_text, "Root of the BOINC project (for the boinc executor)."),
    Setting("solve_timeout_s", 60.0, _positive_float, "Time limit for one astrometry.net solve, seconds."),
    Setting("astrometry_index_dir", "/usr/share/astrometry", _text, "Directory with astrometry.net index files."),
    Setting("catalog", "bundled", _choice("bundled", "online"), "Reference catalog provider for calibration."),
    Setting("catalog_cache_dir", "", _optional_text, "Cache for online catalog cone searches. Empty: VAR_DIR/catalog-cache."),
    Setting("lombscargle_threads", 1, _positive_int,
            "OpenMP threads for nifty-ls (1 is fastest on small machines: 2 threads measured 70x slower)."),
    Setting("upload_max_bytes", 512 * 1024 * 1024, _positive_int, "Largest accepted live upload, bytes."),
    Setting("upload_max_concurrent", 4, _positive_int,
            "Uploads the API receives and checks at the same time; more wait in a queue (see upload_max_waiting)."),
    Setting("upload_max_waiting", 32, _non_negative_int,
            "Uploads that may wait for a free slot; beyond that the API answers 503 with Retry-After."),
    Setting("fits_max_image_bytes", 4 * 1024**3, _positive_int,
            "Largest FITS image accepted (declared data size, or decompressed size of a .fits.fz), bytes."),
    Setting("fits_max_tile_bytes", 16 * 1024**2, _positive_int,
            "Largest decompressed tile of a .fits.fz image, bytes (tiles are checked one at a time)."),
    Setting("store_temp_grace_s", 60.0, _non_negative_float,
            "At start-up, remove store temp files older than this (seconds) that no live process holds."),
    Setting("api_host", "127.0.0.1", _text, "Address the upload API listens on."),
    Setting("api_port", 8400, _port, "Port the upload API listens on."),
    Setting("portal_session_hours", 12.0, _positive_float, "Lifetime of a portal login session, hours."),
    Setting("portal_cookie_secure", False, _bool,
            "Mark portal session cookies Secure (set true when the portal is served over HTTPS)."),
    Setting("portal_lightcurve_max", 200000, _positive_int,
            "Most light-curve points the read API returns in one response (larger curves are paged with after_id)."),
    Setting("portal_cache_mb", 256, _non_negative_int,
            "Memory for encoded light-curve responses the read API keeps (per server process; 0: none)."),
    Setting("checkpoint_period_s", 60.0, _positive_float, "Checkpoint period for local runs, seconds."),
    Setting("progress", True, _bool, "Show progress bars on long CLI work."),
    Setting("broker_url", "", _optional_text,
            "Celery broker for the pipeline queues (redis://host:port/db). Empty: tasks run in-process."),
    Setting("queue_visibility_timeout_s", 90000.0, _positive_float,
            "Seconds before a task whose worker died unacknowledged is delivered again (Redis). Keep it above the "
            "longest queue time limit (mcmc: 1 day), or a task still running is delivered a second time."),
    Setting("queue_max_deliveries", 3, _positive_int,
            "Deliveries of one task (worker deaths included) before it is marked failed instead of run again."),
    Setting("reactive", "auto", _choice("auto", "on", "off"),
            "Run the pipeline when data is ingested: on, off, or auto (on when broker_url is set)."),
    Setting("ttv_reinference", "on_new_transit", _choice("on_new_transit", "off"),
            "When new transit times of a target with a stored TTV posterior arrive: re-run its inference "
            "(warm-started, on the mcmc queue) or leave it to the operator. See server/ttv/reinfer.py for why."),
    Setting("transients_rb_threshold", 0.8, _probability,
            "Real-bogus score above which a candidate with no catalog match becomes an alert (0-1)."),
    Setting("transients_snr_threshold", 5.0, _positive_float,
            "Detection threshold in the ZOGY score image, sigma (positive and negative candidates)."),
    Setting("transients_reference_max_frames", 20, _positive_int,
            "Best-seeing calibrated frames stacked into a reference image."),
    Setting("transients_reference_min_frames", 3, _positive_int,
            "Fewest frames a reference image is built from (fewer: no reference, no difference imaging)."),
    Setting("transients_reference_max_age_days", 365.0, _positive_float,
            "A reference older than this is stale (rebuild with `openastro transients reference build`)."),
    Setting("transients_reference_seeing_gain", 0.8, _probability,
            "A reference is stale when enough frames with FWHM below this fraction of its own seeing exist."),
    Setting("transients_reference_depth_gain", 2.0, _positive_float,
            "A reference is stale when this many times its frame count of eligible frames exist (deeper stack)."),
    Setting("transients_crossmatch_offline", True, _bool,
            "Skip the online cross-match providers (SkyBoT, NED, SDSS) and say so in each alert; cache hits still count."),
    Setting("transients_crossmatch_cache_dir", "", _optional_text,
            "Disk cache of online cross-match answers. Empty: VAR_DIR/crossmatch-cache."),
    Setting("transients_star_match_arcsec", 2.0, _positive_float,
            "A candidate within this distance of a catalog star is that star varying, not a new transient."),
    Setting("period_search_min_points", 20, _positive_int,
            "Fewest photometry points a band needs before the reactive pipeline runs a period search on it."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Attribute access by setting name; ``sources`` says where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"no setting named {name!r}")

    # Derived paths: one place decides the embedded layout.
    @property
    def resolved_database_url(self) -> str:
        if self.values["database_url"]:
            return self.values["database_url"]
        return f"sqlite:///{Path(self.values['var_dir']).absolute() / 'openastro.db'}"

    @property
    def resolved_storage_dir(self) -> Path:
        return Path(self.values["storage_dir"] or Path(self.values["var_dir"]) / "store").absolute()

    @property
    def resolved_storage_cache_dir(self) -> Path:
        return Path(self.values["storage_cache_dir"] or Path(self.values["var_dir"]) / "store-cache").absolute()

    @property
    def resolved_catalog_cache_dir(self) -> Path:
        return Path(self.values["catalog_cache_dir"] or Path(self.values["var_dir"]) / "catalog-cache").absolute()

    @property
    def resolved_crossmatch_cache_dir(self) -> Path:
        return Path(self.values["transients_crossmatch_cache_dir"] or Path(self.values["var_dir"]) / "crossmatch-cache").absolute()

    def with_overrides(self, **overrides: Any) -> "Settings":
        return load_settings(config_path=None, env={}, overrides={**self.values, **overrides})


def _parse_one(setting: Setting, raw: Any, source: str) -> Any:
    try:
        return setting.parse(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"invalid value {raw!r} for setting {setting.name} (from {source}): {exc}"
        ) from None


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings from defaults, an optional TOML file, the environment and explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        values[s.name] = s.default if s.default is not None else None
        sources[s.name] = "default"
    if values["ncores"] is None:
        values["ncores"] = _default_ncores()

    config_path = config_path or env.get(ENV_PREFIX + "CONFIG") or None
    if config_path:
        path = Path(config_path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        data = data.get("openastro", data)
        for key, raw in data.items():
            setting = _BY_NAME.get(key)
            if setting is None:
                raise SettingsError(
                    f"unknown setting {key!r} in {str(path)!r}; known settings: {', '.join(sorted(_BY_NAME))}"
                )
            values[key] = _parse_one(setting, raw, str(path))
            sources[key] = str(path)

    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        if name.startswith(ENV_PREFIX + "TEST_"):
            continue  # test-harness variables, not settings
        key = name[len(ENV_PREFIX):].lower()
        setting = _BY_NAME.get(key)
        if setting is None:
            raise SettingsError(f"unknown setting environment variable {name}; known: "
                                + ", ".join(s.env_var for s in SETTINGS))
        values[key] = _parse_one(setting, raw, name)
        sources[key] = "env " + name

    for key, raw in (overrides or {}).items():
        setting = _BY_NAME.get(key)
        if setting is None:
            raise SettingsError(f"unknown setting {key!r}")
        if raw is None and setting.default is None:
            continue
        values[key] = _parse_one(setting, raw, "override")
        if sources.get(key) == "default" and raw != setting.default:
            sources[key] = "override"
    return Settings(values=values, sources=sources)


def describe(settings: Settings) -> list[tuple[str, Any, str, str]]:
    """Rows (name, value, source, help) for ``openastro config show``."""
    return [(s.name, settings.values[s.name], settings.sources.get(s.name, "default"), s.help) for s in SETTINGS]
