"""Where a store lives (a local path or ``s3://bucket/prefix``) and how keys inside it are joined."""

from __future__ import annotations

__all__ = ["S3_SCHEME", "is_s3", "join_key", "split_s3"]

S3_SCHEME = "s3://"


def is_s3(location: str) -> bool:
    return location.startswith(S3_SCHEME)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ("bucket", "some/prefix").

    Raises ValueError without a bucket or a prefix: a store owns everything under its prefix, so
    it never takes a whole bucket.
    """
    bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
    prefix = prefix.strip("/")
    if not is_s3(url) or not bucket or not prefix:
        raise ValueError(
            f"expected s3://bucket/prefix, got {url!r} (a store owns everything under its prefix, "
            "never a whole bucket)"
        )
    return bucket, prefix


def join_key(*parts: str) -> str:
    """Store keys join with "/", and an empty part (the root image's key '') adds nothing."""
    return "/".join(p for p in parts if p)
