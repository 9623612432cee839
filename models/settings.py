"""One settings object, read from GANFORGE_* environment variables.

Unset means the embedded default: a SQLite file, a Celery broker on the local
file system, and artifacts in a folder, all under the data dir.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANFORGE_", extra="ignore")

    data_dir: Path = Field(default=Path("ganforge-data"), description="where the embedded default keeps everything")
    database_url: str = Field(default="", description="SQLAlchemy URL; default: SQLite file in the data dir")
    broker_url: str = Field(default="", description="Celery broker URL; default: file-system broker in the data dir")
    artifacts_url: str = Field(
        default="", description="local folder or fsspec URL (s3://bucket/prefix); default: data dir"
    )
    api_keys: str = Field(
        default="",
        description="comma-separated token=owner pairs; empty means no auth (every caller is 'anonymous')",
    )
    environment: str = Field(default="development", description="'production' refuses to run without API keys")
    queue: str = Field(default="ganforge", description="Celery queue the training tasks go to")
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="how often a worker renews its job lease")
    lease_timeout_seconds: float = Field(default=60.0, gt=0, description="a running job silent this long is re-queued")
    redeliver_seconds: float = Field(default=60.0, gt=0, description="a queued job unclaimed this long is re-sent")
    reconcile_seconds: float = Field(default=10.0, gt=0, description="how often the API's reconciler looks")
    metrics_flush_seconds: float = Field(default=1.0, gt=0, description="the worker writes metrics at most this often")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, description="largest dataset upload accepted")
    max_archive_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="largest total uncompressed size of an uploaded .zip/.npz's members"
    )
    max_archive_files: int = Field(default=500_000, gt=0, description="most entries an uploaded archive may hold")
    max_dataset_bytes: int = Field(
        default=16 * 1024**3, gt=0, description="largest normalised data set (float32) an upload may become"
    )
    max_classes: int = Field(default=1000, gt=0, description="most distinct labels a data set may have")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ganforge.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.artifacts_url:
            self.artifacts_url = str(self.data_dir / "artifacts")
        if self.environment == "production" and not self.api_keys:
            raise ValueError("GANFORGE_API_KEYS must be set when GANFORGE_ENVIRONMENT=production")
        return self

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def owners_by_token(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.api_keys.split(",") if item.strip())
        return {token.strip(): owner.strip() for token, owner in pairs}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return Settings()
