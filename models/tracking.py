"""Where a job is mirrored in MLflow: the tracking server and experiment its spec and the service's settings give.

    target = tracking_target(spec_json.get("mlflow"), settings)  # TrackingTarget, or None: not mirrored

A job is mirrored when its spec has an `mlflow` block (models/spec.py Tracking) or the service sets
GANFORGE_MLFLOW_TRACKING_URI. The worker calls the tracking server, so a spec may name only the service's URI or
one of GANFORGE_MLFLOW_ALLOWED_URIS: anything else is refused at submission (models/admission.py, a 422 at
mlflow.tracking_uri). No MLflow import here: the API checks specs without the client library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from models.settings import Settings


@dataclass(frozen=True)
class TrackingTarget:
    """A tracking server URI (as configured, credentials included) and an experiment name."""

    uri: str
    experiment: str

    @property
    def shown_uri(self) -> str:
        """The URI without user:password@, for events, params and logs."""
        return without_credentials(self.uri)


def without_credentials(uri: str) -> str:
    """`uri` with any user:password@ taken out of its network location (an http URI's basic auth)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _normal(uri: str) -> str:
    return uri.strip().rstrip("/")


def allowed_uris(settings: Settings) -> list[str]:
    """The tracking URIs a spec may name: the service's own (when set) and GANFORGE_MLFLOW_ALLOWED_URIS."""
    own = [_normal(settings.mlflow_tracking_uri)] if settings.mlflow_tracking_uri.strip() else []
    return own + [_normal(uri) for uri in settings.mlflow_allowed_uris]


def tracking_problems(block: dict[str, Any] | None, settings: Settings) -> list[tuple[tuple[str, ...], str]]:
    """(field path, why) for a spec's `mlflow` block (a dict as dumped, or None) that the service cannot honour:
    a tracking_uri it does not allow, or no tracking server at all. Empty when it is fine (or absent)."""
    if block is None:
        return []
    uri = block.get("tracking_uri")
    if uri is None:
        if not settings.mlflow_tracking_uri.strip():
            return [
                (
                    ("mlflow", "tracking_uri"),
                    "this service has no MLflow tracking server (GANFORGE_MLFLOW_TRACKING_URI is unset): name one",
                )
            ]
        return []
    allowed = allowed_uris(settings)
    if _normal(uri) not in allowed:
        shown = ", ".join(without_credentials(a) for a in allowed) or "none"
        return [
            (
                ("mlflow", "tracking_uri"),
                f"{without_credentials(uri)!r} is not a tracking server this service may call; allowed: {shown} "
                "(GANFORGE_MLFLOW_TRACKING_URI, GANFORGE_MLFLOW_ALLOWED_URIS)",
            )
        ]
    return []


def tracking_target(block: dict[str, Any] | None, settings: Settings) -> TrackingTarget | None:
    """Where a job with the spec's `mlflow` block (a dict or None) is mirrored; None when it is not mirrored, or
    when its tracking_uri is no longer allowed (settings changed since submission)."""
    if block is None and not settings.mlflow_tracking_uri.strip():
        return None
    if tracking_problems(block, settings):
        return None
    block = block or {}
    uri = block.get("tracking_uri") or settings.mlflow_tracking_uri
    return TrackingTarget(uri=_normal(uri), experiment=block.get("experiment") or settings.mlflow_experiment)
