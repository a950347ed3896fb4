"""The object-storage connection of an ``s3://`` store; credentials are never settings."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .model import SettingsModel

__all__ = ["S3Settings"]


class S3Settings(SettingsModel):
    """Object storage connection for ``store: s3://bucket/prefix`` (ignored for local paths).

    Credentials are deliberately not settings: they come from the standard AWS
    environment variables or shared credentials profile, so they never end up
    in config files, session records or the store.
    """

    endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL for S3-compatible servers (MinIO, Ceph, SeaweedFS), e.g. "
        "'http://127.0.0.1:8333'; null uses AWS (or AWS_ENDPOINT_URL if set).",
    )
    region: str | None = Field(
        default=None,
        description="Region to sign requests for; null takes AWS_REGION / AWS_DEFAULT_REGION, "
        "else 'us-east-1' (what most S3-compatible servers expect).",
    )
    path_style: bool = Field(
        default=True,
        description="Path-style addressing (endpoint/bucket/key), which every S3-compatible server "
        "accepts; false uses virtual-hosted style (bucket.endpoint/key).",
    )
    allow_http: bool = Field(
        default=False,
        description="Allow a plain-http endpoint (a server on localhost or a trusted lab network).",
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection.")
    request_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one request (one object or one multipart part) may take before it is "
        "abandoned and retried.",
    )
    max_retries: int = Field(
        default=10,
        ge=0,
        description="Retries of a request that failed transiently (connection error, timeout, 5xx "
        "including 503 SlowDown throttling), with exponential backoff and jitter.",
    )
    retry_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds after a request's first attempt past which it is not retried again; "
        "the failure then surfaces at the next append or close.",
    )
    initial_backoff: float = Field(
        default=0.1, gt=0, description="Seconds before the first retry; doubles per retry."
    )
    max_backoff: float = Field(default=15.0, gt=0, description="Longest wait between two retries, seconds.")
    multipart_threshold: int = Field(
        default=32 << 20,
        ge=5 << 20,
        description="Objects of at least this many bytes are uploaded as multipart uploads (parts "
        "in parallel, each part retried on its own); smaller ones as one PUT.",
    )
    part_size: int = Field(
        default=8 << 20,
        ge=5 << 20,
        le=5 << 30,
        description="Multipart part size in bytes (S3 allows 5 MiB to 5 GiB, at most 10,000 parts).",
    )
    max_concurrency: int = Field(
        default=8, ge=1, description="Parts of one multipart upload in flight at once."
    )
    concurrent_uploads: int = Field(
        default=4,
        ge=1,
        description="Objects (chunks or shards) of one band uploaded at once, to hide per-request "
        "latency. Memory does not grow with it: the objects are already in the in-flight budget.",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_plain_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {v!r}")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("endpoint must not contain credentials; use the AWS environment variables")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _http_is_explicit(self) -> S3Settings:
        if self.endpoint is not None and self.endpoint.startswith("http://") and not self.allow_http:
            raise ValueError(
                f"endpoint {self.endpoint!r} is plain http: set allow_http: true to send data unencrypted"
            )
        return self
