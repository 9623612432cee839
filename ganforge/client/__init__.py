"""The ganforge Python SDK: submit, follow and fetch training jobs over the HTTP API.

    from ganforge.client import Client

    with Client("http://127.0.0.1:8000") as client:          # or GANFORGE_URL / GANFORGE_API_KEY
        job = client.submit("spec.yaml")                       # dict, models.spec.JobSpec or a .yaml/.json path
        for event in client.follow(job.id):                    # live SSE, resumed after a dropped connection
            print(event.type, event.data)
        curves = client.metrics(job.id, ["loss_d", "loss_g"])  # .to_pandas() with pandas installed
        client.download_checkpoint(job.id, path="g.safetensors")
        study = client.studies.wait(client.studies.submit("study.yaml").id)  # .comparison: one row per loss
        client.whoami().owner                                  # and client.keys.create/list/revoke (admin keys)
        client.quota().usage.queued_jobs                       # your quotas and what you use of them

`AsyncClient` has the same methods as coroutines (and async iterators). Pure HTTP: imports httpx, httpx-sse,
pydantic and the spec schema (models.spec), never torch or the server's libraries.
"""

from ganforge.client.aio import AsyncClient, AsyncDatasets, AsyncKeys, AsyncStudies
from ganforge.client.errors import (
    Conflict,
    ConnectionFailed,
    FieldError,
    GanforgeError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    ValidationFailed,
)
from ganforge.client.files import Progress as ProgressCallback
from ganforge.client.sync import Client, Datasets, Keys, Studies
from ganforge.client.types import (
    FINAL_STATUSES,
    ApiKey,
    ApiKeyCreated,
    ApiKeyRevoked,
    Checkpoint,
    Dataset,
    Event,
    Job,
    Metrics,
    Progress,
    Quota,
    Sample,
    Series,
    Study,
    StudyCurves,
    StudySummary,
    WhoAmI,
)

__all__ = [
    "FINAL_STATUSES",
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "AsyncClient",
    "AsyncDatasets",
    "AsyncKeys",
    "AsyncStudies",
    "Checkpoint",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "Datasets",
    "Event",
    "FieldError",
    "GanforgeError",
    "Job",
    "Keys",
    "Metrics",
    "NotFound",
    "Progress",
    "ProgressCallback",
    "Quota",
    "RateLimited",
    "Sample",
    "Series",
    "ServerError",
    "Studies",
    "Study",
    "StudyCurves",
    "StudySummary",
    "UnexpectedResponse",
    "Unauthorized",
    "ValidationFailed",
    "WhoAmI",
]
