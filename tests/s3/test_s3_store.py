"""S3Store against a real S3 server: the generic store contract plus what is S3-specific."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import obstore
import pytest

import acqzarr as az
from acqzarr.stores import open_store
from test_stores import StoreContract

from .faults import FaultProxy
from .readback import all_objects, raw_store
from .seaweed import Seaweed

# A SeaweedFS server for the session and real uploads: left out of the quick loop.
pytestmark = pytest.mark.slow

MIB = 1 << 20


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_url: str, s3_settings: az.S3Settings) -> az.Store:
        return az.S3Store(s3_url, s3_settings)


def _small_parts(s3_settings: az.S3Settings) -> az.S3Settings:
    """Multipart from 5 MiB (S3's minimum part size), so tests stay small."""
    return s3_settings.model_copy(update={"multipart_threshold": 5 * MIB, "part_size": 5 * MIB})


@pytest.mark.parametrize("nbytes", [0, 1, 5 * MIB - 1, 12 * MIB + 3])
def test_put_padded_stores_exactly_the_prefix(
    s3_url: str, s3_settings: az.S3Settings, aws_env: Seaweed, nbytes: int
) -> None:
    store = az.S3Store(s3_url, _small_parts(s3_settings))
    buffer = np.random.default_rng(nbytes).integers(0, 256, nbytes + 4096, dtype=np.uint8)
    store.put_padded("c/0/0", buffer, nbytes)
    assert all_objects(aws_env, s3_url) == {"c/0/0": buffer[:nbytes].tobytes()}
    etag = obstore.head(raw_store(aws_env, s3_url), "c/0/0")["e_tag"] or ""
    # S3 gives multipart objects an ETag ending in -<parts>: large shards did go up in parts.
    assert etag.strip('"').endswith("-3") == (nbytes >= 5 * MIB)


def test_several_parts_above_the_threshold_go_up_as_multipart(
    s3_url: str, s3_settings: az.S3Settings, aws_env: Seaweed
) -> None:
    store = az.S3Store(s3_url, _small_parts(s3_settings))
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in (3 * MIB, 1, 0, 4 * MIB + 5, 100)]
    store.put("shard", parts)
    assert store.get("shard") == b"".join(p.tobytes() for p in parts)
    assert (obstore.head(raw_store(aws_env, s3_url), "shard")["e_tag"] or "").strip('"').endswith("-2")


def test_put_padded_many_stores_all_and_raises_the_first_failure(
    s3_url: str, s3_settings: az.S3Settings
) -> None:
    store = az.S3Store(s3_url, s3_settings)
    buffers = [np.full(1000 + i, i, np.uint8) for i in range(9)]
    items = [(f"a/{i}", b, 900 + i) for i, b in enumerate(buffers)]
    store.put_padded_many(items)
    assert {k: store.get(k) for k in store.list()} == {f"a/{i}": bytes([i]) * (900 + i) for i in range(9)}
    with pytest.raises(az.StoreError, match=r"^invalid store key 'a//x'$"):
        store.put_padded_many([("b/0", buffers[0], 10), ("a//x", buffers[1], 10), ("b/2", buffers[2], 10)])
    assert store.get("b/0") == bytes(10) and store.get("b/2") == bytes([2]) * 10


def test_list_filters_inside_a_path_segment(s3_url: str, s3_settings: az.S3Settings) -> None:
    store = az.S3Store(s3_url, s3_settings)
    for key in ("cam0/0/zarr.json", "cam0/1/zarr.json", "cam01/zarr.json", "zarr.json"):
        store.put(key, [b"{}"])
    assert sorted(store.list("cam0")) == ["cam0/0/zarr.json", "cam0/1/zarr.json", "cam01/zarr.json"]
    assert sorted(store.list("cam0/")) == ["cam0/0/zarr.json", "cam0/1/zarr.json"]
    assert sorted(store.list("cam0/1/zar")) == ["cam0/1/zarr.json"]


def test_prefixes_are_isolated(aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings) -> None:
    a = az.S3Store(s3_url + "/a", s3_settings)
    ab = az.S3Store(s3_url + "/ab", s3_settings)
    a.put("k", [b"a"])
    ab.put("k", [b"ab"])
    a.clear()
    assert a.is_empty() and ab.get("k") == b"ab"


def test_describe_and_repr_name_the_url_without_credentials(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    store = open_store(s3_url + "/", s3=s3_settings)
    assert isinstance(store, az.S3Store)
    assert store.describe() == s3_url
    assert store.describe("cam0/zarr.json") == f"{s3_url}/cam0/zarr.json"
    assert repr(store) == f"S3Store('{s3_url}')"
    text = repr(store) + repr(store.settings) + repr(store.__dict__)
    assert aws_env.secret_key not in text and aws_env.access_key not in text


def test_wrong_secret_fails_naming_the_object_but_not_the_secret(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-secret-" + aws_env.secret_key[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    store = az.S3Store(s3_url, s3_settings)
    with pytest.raises(az.StoreError, match=rf"^{s3_url}/cam0/zarr\.json: upload failed: .*403") as info:
        store.put("cam0/zarr.json", [b"{}"])
    assert wrong not in str(info.value) and aws_env.secret_key not in str(info.value)
    assert "\n" not in str(info.value)


def test_credentials_from_a_shared_credentials_profile(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n"
        f"[lab]\naws_access_key_id = {aws_env.access_key}\naws_secret_access_key = {aws_env.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    store = az.S3Store(s3_url, s3_settings)
    store.put("k", [b"via profile"])
    assert store.get("k") == b"via profile"
    assert aws_env.secret_key not in repr(store.__dict__)


def test_unreachable_endpoint_fails_fast_with_a_clear_error(aws_env: Seaweed, s3_url: str) -> None:
    settings = az.S3Settings(
        endpoint="http://127.0.0.1:9", allow_http=True, max_retries=1, initial_backoff=0.01
    )
    store = az.S3Store(s3_url, settings)
    with pytest.raises(az.StoreError, match=rf"^{s3_url}/k: upload failed: .*127\.0\.0\.1:9"):
        store.put("k", [b"x"])


def test_without_credentials_the_error_says_how_to_provide_them(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    settings = s3_settings.model_copy(update={"max_retries": 0, "connect_timeout": 0.5})
    with pytest.raises(az.StoreError, match=rf"^{s3_url}: list failed: .*set AWS_ACCESS_KEY_ID and"):
        az.S3Store(s3_url, settings).is_empty()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"store": "s3://bucket"}, "expected s3://bucket/prefix"),
        ({"store": "s3://bucket/"}, "expected s3://bucket/prefix"),
        ({"s3": {"endpoint": "ftp://host"}}, "endpoint must be an http:// or https:// URL"),
        ({"s3": {"endpoint": "http://key:secret@host"}}, "endpoint must not contain credentials"),
        ({"s3": {"endpoint": "http://host:8333"}}, "plain http: set allow_http: true"),
        ({"s3": {"part_size": 1 << 20}}, r"s3\.part_size: Input should be greater than or equal to 5242880"),
        ({"s3": {"secret_access_key": "x"}}, r"s3\.secret_access_key: Extra inputs are not permitted"),
    ],
)
def test_s3_settings_are_validated(changes: dict[str, object], match: str) -> None:
    data: dict[str, object] = {
        "store": "s3://bucket/run1",
        "arrays": [
            {
                "dtype": "uint8",
                "dimensions": [
                    {"name": "y", "kind": "space", "size": 4, "chunk": 4},
                    {"name": "x", "kind": "space", "size": 4, "chunk": 4},
                ],
            }
        ],
    }
    with pytest.raises(az.ConfigError, match=match):
        az.StreamSettings.from_mapping({**data, **changes})


@pytest.mark.parametrize("mode", ["503", "reset", "stall"])
@pytest.mark.parametrize("nbytes", [1000, 12 * MIB], ids=["single", "multipart"])
def test_transient_failures_are_retried(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, mode: str, nbytes: int
) -> None:
    """503 SlowDown (throttling), connections reset mid-upload and requests that time out: retried,
    and the object arrives whole."""
    blob = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    with FaultProxy(aws_env.ports["s3"], mode, faults=3) as proxy:
        settings = _small_parts(s3_settings).model_copy(
            update={
                "endpoint": proxy.endpoint,
                "initial_backoff": 0.01,
                "max_backoff": 0.05,
                "request_timeout": 0.5 if mode == "stall" else 60,
            }
        )
        az.S3Store(s3_url, settings).put_padded("k", blob, nbytes)
        assert proxy.injected == 3
    assert az.S3Store(s3_url, s3_settings).get("k") == blob.tobytes()


def test_persistent_throttling_fails_after_the_retries(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    with FaultProxy(aws_env.ports["s3"], "503", faults=100) as proxy:
        settings = s3_settings.model_copy(
            update={"endpoint": proxy.endpoint, "max_retries": 2, "initial_backoff": 0.01}
        )
        with pytest.raises(az.StoreError, match=rf"^{s3_url}/k: upload failed: .*after 2 retries.*503"):
            az.S3Store(s3_url, settings).put("k", [b"x"])
        assert proxy.injected == 3
