"""Invalid settings fail with the key path and the reason, before anything touches disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import acqzarr as az
from acqzarr.settings import load_mapping


def _data(**array_overrides: Any) -> dict[str, Any]:
    array: dict[str, Any] = {
        "key": "cam0",
        "dtype": "uint16",
        "dimensions": [
            {"name": "t", "kind": "time", "size": 0, "chunk": 32},
            {"name": "y", "kind": "space", "size": 64, "chunk": 32, "unit": "micrometer", "scale": 0.65},
            {"name": "x", "kind": "space", "size": 64, "chunk": 32},
        ],
        "compression": {"cname": "zstd", "clevel": 3, "shuffle": "bit"},
    }
    array.update(array_overrides)
    return {"store": "out.zarr", "version": 3, "arrays": [array]}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(az.ConfigError) as info:
        az.StreamSettings.from_mapping(data)
    return str(info.value)


def test_valid_settings_round_trip_through_yaml_and_json(tmp_path: Path) -> None:
    import yaml

    data = _data()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "s.json").write_text(json.dumps(data))
    a = az.StreamSettings.from_file(tmp_path / "s.yaml")
    b = az.StreamSettings.from_file(tmp_path / "s.json")
    assert a == b
    assert a.arrays[0].compression == az.Blosc(cname="zstd", clevel=3, shuffle="bit")
    assert a.arrays[0].dimensions[1].unit == "micrometer"


@pytest.mark.parametrize(
    ("mutate", "where", "reason"),
    [
        (lambda d: d["arrays"][0].update(dtype="float16"), "arrays.0.dtype", "expected one of uint8"),
        (lambda d: d["arrays"][0].update(colour="red"), "arrays.0.colour", "Extra inputs"),
        (
            lambda d: d["arrays"][0]["dimensions"][1].update(unit="um"),
            "arrays.0.dimensions.1",
            "did you mean 'micrometer'",
        ),
        (
            lambda d: d["arrays"][0]["dimensions"][0].update(unit="meter"),
            "arrays.0.dimensions.0",
            "not a UDUNITS-2 time unit",
        ),
        (lambda d: d["arrays"][0]["dimensions"][1].update(size=0), "arrays.0", "only allowed on the first"),
        (
            lambda d: d["arrays"][0]["dimensions"][1].update(chunk=0),
            "arrays.0.dimensions.1.chunk",
            "greater than or equal to 1",
        ),
        (lambda d: d["arrays"][0]["dimensions"][2].update(name="y"), "arrays.0", "unique"),
        (
            lambda d: d["arrays"][0]["dimensions"].append(
                {"name": "c", "kind": "channel", "size": 2, "chunk": 1}
            ),
            "arrays.0",
            "then channel/other, then space",
        ),
        (
            lambda d: d["arrays"][0]["dimensions"].insert(
                1, {"name": "u", "kind": "time", "size": 2, "chunk": 1}
            ),
            "arrays.0",
            "at most one time",
        ),
        (lambda d: d["arrays"][0]["dimensions"][2].update(kind="channel"), "arrays.0", "2 or 3 space"),
        (
            lambda d: d["arrays"][0]["dimensions"][1].update(scale=-1),
            "arrays.0.dimensions.1.scale",
            "greater than 0",
        ),
        (lambda d: d["arrays"][0]["dimensions"].pop(), "arrays.0", "2 or 3 space"),
        (
            lambda d: d["arrays"][0].update(dimensions=d["arrays"][0]["dimensions"][:1]),
            "arrays.0.dimensions",
            "at least 2",
        ),
        (
            lambda d: d["arrays"][0]["compression"].update(clevel=10),
            "arrays.0.compression.clevel",
            "less than or equal to 9",
        ),
        (
            lambda d: d["arrays"][0]["compression"].update(cname="snappy"),
            "arrays.0.compression.cname",
            "Input should be",
        ),
        (
            lambda d: d["arrays"][0]["compression"].update(shuffle="auto"),
            "arrays.0.compression.shuffle",
            "Input should be",
        ),
        (lambda d: d["arrays"][0].update(key="../escape"), "arrays.0.key", "'..'"),
        (lambda d: d["arrays"][0].update(key="/abs"), "arrays.0.key", "empty"),
        (lambda d: d["arrays"][0].update(key="cam0\n"), "arrays.0.key", "letters, digits"),  # no "$" newline
        (lambda d: d["arrays"].append(dict(d["arrays"][0])), "(root)", "unique"),
        (
            lambda d: d["arrays"][0].update(multiscale={"levels": 0}),
            "arrays.0.multiscale.levels",
            "levels must be 1 to 16 or 'auto'",
        ),
        (
            lambda d: d["arrays"][0].update(multiscale={"levels": "many"}),
            "arrays.0.multiscale.levels",
            "Input should be",
        ),
        (
            lambda d: d["arrays"][0].update(multiscale={"method": "median"}),
            "arrays.0.multiscale.method",
            "Input should be",
        ),
        (lambda d: d.update(version=4), "version", "Input should be 2 or 3"),
        (lambda d: d.update(max_inflight_bytes=0), "max_inflight_bytes", "greater than or equal to 1"),
        (lambda d: d.update(append_timeout=0), "append_timeout", "greater than 0"),
        (lambda d: d.pop("store"), "store", "Field required"),
        (lambda d: d.update(arrays=[]), "arrays", "at least 1"),
    ],
)
def test_each_invalid_field_names_its_key(mutate: Any, where: str, reason: str) -> None:
    data = _data()
    mutate(data)
    message = _error(data)
    line = next((ln for ln in message.splitlines() if ln.strip().startswith(where)), None)
    assert line is not None, message
    assert reason in line, message


def test_v2_rejects_shards_naming_the_dimension() -> None:
    data = _data()
    data["version"] = 2
    data["arrays"][0]["dimensions"][2]["shard"] = 4
    assert "arrays[0].dimensions[2].shard: Zarr v2 has no shards" in _error(data)


def test_nested_keys_and_root_key_conflicts() -> None:
    data = _data()
    data["arrays"].append({**data["arrays"][0], "key": "cam0/sub"})
    assert "would nest inside image group 'cam0'" in _error(data)
    data = _data(key="")
    data["arrays"].append({**data["arrays"][0], "key": "cam1"})
    assert "only allowed for a single array" in _error(data)


def test_chunk_larger_than_blosc_can_take() -> None:
    data = _data()
    data["arrays"][0]["dimensions"] = [
        {"name": "t", "kind": "time", "size": 0, "chunk": 1024},
        {"name": "y", "kind": "space", "size": 2048, "chunk": 2048},
        {"name": "x", "kind": "space", "size": 2048, "chunk": 2048},
    ]
    assert "exceeds Blosc's limit" in _error(data)


def test_models_reject_unknown_keys_and_are_frozen() -> None:
    with pytest.raises(az.ConfigError, match=r"^Dimension: invalid settings\n  colour: Extra inputs"):
        az.Dimension(name="x", kind="space", size=1, chunk=1, colour="red")  # type: ignore[call-arg]
    dim = az.Dimension(name="x", kind="space", size=1, chunk=1)
    with pytest.raises(az.ConfigError, match=r"^Dimension: invalid settings\n  size: Instance is frozen$"):
        dim.size = 5  # type: ignore[misc]
    with pytest.raises(az.ConfigError, match="size: Instance is frozen"):
        del dim.size
    assert dim.size == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: az.Dimension(name="x", kind="space", size=1, chunk=0),
            "Dimension: invalid settings\n  chunk: Input should be greater than or equal to 1",
        ),
        (
            lambda: az.Blosc(clevel=10),
            "Blosc: invalid settings\n  clevel: Input should be less than or equal to 9",
        ),
        (
            lambda: az.Multiscale(levels=0),
            "Multiscale: invalid settings\n  levels: levels must be 1 to 16 or 'auto', got 0",
        ),
        (
            lambda: az.S3Settings(endpoint="http://10.0.0.1:8333"),
            "S3Settings: invalid settings\n  (root): endpoint 'http://10.0.0.1:8333' is plain http: "
            "set allow_http: true to send data unencrypted",
        ),
        (
            lambda: az.ArraySettings(**{**_data()["arrays"][0], "key": ".."}),
            "ArraySettings: invalid settings\n  key: key must be",
        ),
        (
            lambda: az.StreamSettings(store="s3://bucket", arrays=_data()["arrays"]),
            "StreamSettings: invalid settings\n  store: expected s3://bucket/prefix",
        ),
        (
            lambda: az.StreamSettings.model_validate({**_data(), "version": 4}),
            "StreamSettings: invalid settings\n  version: Input should be 2 or 3",
        ),
        (
            lambda: az.ArraySettings.model_validate_json(json.dumps({**_data()["arrays"][0], "dtype": 7})),
            "ArraySettings: invalid settings\n  dtype: ",
        ),
        (
            lambda: az.Blosc.model_validate_strings({"clevel": "ten"}),
            "Blosc: invalid settings\n  clevel: Input should be a valid integer",
        ),
    ],
)
def test_constructing_or_validating_any_model_raises_config_error(make: Any, message: str) -> None:
    """Not pydantic's ValidationError: one exception type, the model's name and the key path."""
    with pytest.raises(az.ConfigError) as info:
        make()
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_nested_problem_is_one_line_with_its_full_key_path() -> None:
    """Nested dicts are validated in one pass: the problem appears once, not wrapped per level."""
    data = _data()
    data["arrays"][0]["dimensions"][1]["chunk"] = 0
    data["arrays"][0]["compression"]["clevel"] = 10
    with pytest.raises(az.ConfigError) as info:
        az.StreamSettings(**data)
    assert str(info.value) == (
        "StreamSettings: invalid settings\n"
        "  arrays.0.dimensions.1.chunk: Input should be greater than or equal to 1\n"
        "  arrays.0.compression.clevel: Input should be less than or equal to 9"
    )
    with pytest.raises(az.ConfigError) as info:
        az.ArraySettings(
            **{**data["arrays"][0], "dimensions": [az.Dimension(name="y", kind="space", size=1, chunk=1), {}]}
        )
    assert str(info.value).splitlines()[1:] == [
        "  dimensions.1.name: Field required",
        "  dimensions.1.kind: Field required",
        "  dimensions.1.size: Field required",
        "  dimensions.1.chunk: Field required",
        "  compression.clevel: Input should be less than or equal to 9",
    ]


def test_from_mapping_names_the_source_and_the_section() -> None:
    with pytest.raises(az.ConfigError) as info:
        az.S3Settings.from_mapping({"retries": 3, "part_size": 1}, source="--s3", prefix="s3")
    assert str(info.value) == (
        "--s3: invalid settings\n"
        "  s3.part_size: Input should be greater than or equal to 5242880\n"
        "  s3.retries: Extra inputs are not permitted"
    )
    assert az.S3Settings.from_mapping({"max_retries": 3}).max_retries == 3
    with pytest.raises(az.ConfigError, match=r"^settings: invalid settings\n  \(root\): Input should be"):
        az.StreamSettings.from_mapping(["not", "a", "mapping"])


NATIVE, NON_NATIVE = ("<", ">") if sys.byteorder == "little" else (">", "<")


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (np.uint16, "uint16"),
        (np.dtype(NATIVE + "u2"), "uint16"),
        (np.dtype("uint16"), "uint16"),
        ("uint16", "uint16"),
        ("u2", "uint16"),
        ("=u2", "uint16"),
        (NATIVE + "u2", "uint16"),
        ("|u1", "uint8"),
        (np.float32, "float32"),
        ("i8", "int64"),
        (np.dtype("float64"), "float64"),
    ],
    ids=repr,
)
def test_dtype_accepts_numpy_types_and_stores_the_name(given: Any, name: str) -> None:
    array = az.ArraySettings(**{**_data()["arrays"][0], "dtype": given})
    assert array.dtype == name and type(array.dtype) is str
    assert array.model_dump()["dtype"] == name
    assert json.loads(array.model_dump_json())["dtype"] == name
    assert az.ArraySettings.model_validate(array.model_dump()) == array
    assert az.StreamSettings.from_mapping(_data(dtype=given)).arrays[0].dtype == name


def test_dtype_schema_still_lists_the_names() -> None:
    schema = az.StreamSettings.model_json_schema()["$defs"]["ArraySettings"]["properties"]["dtype"]
    assert schema["enum"] == list(az.settings.DTYPES)


ALLOWED = "expected one of uint8, uint16, uint32, uint64, int8, int16, int32, int64, float32, float64"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (
            NON_NATIVE + "u2",
            f"'{NON_NATIVE}u2' is {'big' if NON_NATIVE == '>' else 'little'}-endian; "
            "frames must be in this machine's byte order",
        ),
        (np.dtype(NON_NATIVE + "f4"), "-endian; frames must be in this machine's byte order"),
        (np.dtype(NON_NATIVE + "f4"), "e.g. 'float32'"),
        (np.complex64, f"numpy.complex64 (complex64) is not a supported sample type; {ALLOWED}"),
        (
            np.dtype("complex128"),
            f"dtype('complex128') (complex128) is not a supported sample type; {ALLOWED}",
        ),
        (np.bool_, "(bool) is not a supported sample type"),
        (np.str_, "(str) is not a supported sample type"),
        (np.object_, "numpy.object_ (object) is not a supported sample type"),
        (np.dtype("u2,u2"), "(void32) is not a supported sample type"),
        ("f2", "'f2' (float16) is not a supported sample type"),
        (
            "float16",
            f"{ALLOWED}, or a numpy type, dtype or type string of one (np.uint16, '<u2'); got 'float16'",
        ),
        ("U4", f"{ALLOWED}, or a numpy type, dtype or type string of one (np.uint16, '<u2'); got 'U4'"),
        ("u3", "got 'u3'"),
        ("H", "got 'H'"),  # numpy's character codes are not accepted, only the names and type strings
        (int, f"{ALLOWED}, or a numpy type, dtype or type string of one (np.uint16, '<u2'); got int"),
        (object, "got object"),
        (np.integer, "got numpy.integer"),
        (None, "got None"),
        (16, "got 16"),
    ],
    ids=repr,
)
def test_dtype_rejects_with_what_was_given_and_the_names(given: Any, reason: str) -> None:
    with pytest.raises(az.ConfigError) as info:
        az.ArraySettings(**{**_data()["arrays"][0], "dtype": given})
    assert str(info.value).splitlines()[1].startswith("  dtype: "), str(info.value)
    assert reason in str(info.value)
    message = _error(_data(dtype=given))
    assert message.splitlines()[1].startswith("  arrays.0.dtype: ") and reason in message, message


def test_a_numpy_dtype_reaches_the_engine_as_the_name(tmp_path: Path) -> None:
    array = az.ArraySettings(**{**_data()["arrays"][0], "dtype": np.uint16})
    settings = az.StreamSettings(store=str(tmp_path / "out.zarr"), arrays=[array])
    with az.open_stream(settings) as stream:
        stream.append(np.ones((64, 64), np.uint16), key="cam0")
    meta = json.loads((tmp_path / "out.zarr" / "cam0" / "0" / "zarr.json").read_text())
    assert meta["data_type"] == "uint16"


def _tczyx(t: int = 0) -> list[dict[str, Any]]:
    return [
        {"name": "t", "kind": "time", "size": t, "chunk": 1},
        {"name": "c", "kind": "channel", "size": 2, "chunk": 1},
        {"name": "z", "kind": "space", "size": 3, "chunk": 1},
        {"name": "y", "kind": "space", "size": 64, "chunk": 32},
        {"name": "x", "kind": "space", "size": 64, "chunk": 32},
    ]


def test_acquisition_order_defaults_to_the_storage_order() -> None:
    array = az.StreamSettings.from_mapping(_data(dimensions=_tczyx())).arrays[0]
    assert array.acquisition_order is None
    assert array.frame_names == ("y", "x")
    assert array.index_names == array.acquisition_axes == ("t", "c", "z")
    plane = az.ArraySettings(**{**_data()["arrays"][0], "dimensions": _tczyx()[3:]})
    assert (plane.index_names, plane.frame_names, plane.acquisition_axes) == (("y",), ("x",), ("y",))


@pytest.mark.parametrize(
    ("dimensions", "order"),
    [
        (_tczyx(), ["t", "z", "c"]),
        (_tczyx(), ["t", "c", "z"]),
        (_tczyx(t=5), ["c", "t", "z"]),  # a bounded append axis may be iterated inside another
        (_tczyx(t=5), ["z", "c", "t"]),
        (_tczyx()[1:], ["z", "c"]),
        (_tczyx()[3:], ["y"]),  # a 2-axis array's frame is its last axis
    ],
    ids=str,
)
def test_acquisition_order_accepts_any_order_of_the_index_axes(
    dimensions: list[dict[str, Any]], order: list[str]
) -> None:
    data = _data(dimensions=dimensions, acquisition_order=order)
    array = az.StreamSettings.from_mapping(data).arrays[0]
    assert array.acquisition_order == tuple(order)  # kept as a tuple: validated settings cannot change
    assert array.acquisition_axes == tuple(order)
    assert array.index_names == tuple(d["name"] for d in dimensions[: max(1, len(dimensions) - 2)])
    assert [d.name for d in array.dimensions] == [d["name"] for d in dimensions]  # storage order kept


INDEX_AXES = "acquisition_order must list each index axis ['t', 'c', 'z'] once, in any order; got"


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (["t", "z"], f"{INDEX_AXES} ['t', 'z']: missing ['c']"),
        ([], f"{INDEX_AXES} []: missing ['t', 'c', 'z']"),
        (["t", "z", "c", "z"], f"{INDEX_AXES} ['t', 'z', 'c', 'z']: repeated ['z']"),
        (["t", "c", "q"], f"{INDEX_AXES} ['t', 'c', 'q']: missing ['z']; ['q'] is not an axis"),
        (
            ["t", "c", "z", "y"],
            f"{INDEX_AXES} ['t', 'c', 'z', 'y']: ['y'] is a frame axis (a frame is ['y', 'x'], "
            "delivered whole by each append)",
        ),
        (
            ["t", "c", "y", "x"],
            f"{INDEX_AXES} ['t', 'c', 'y', 'x']: missing ['z']; ['y', 'x'] are frame axes (a frame is "
            "['y', 'x'], delivered whole by each append)",
        ),
        (
            ["z", "t", "c"],
            "acquisition_order: the append axis 't' is unbounded (size 0), so it must come first "
            "(no axis can be iterated inside one that never ends); got ['z', 't', 'c']",
        ),
    ],
    ids=str,
)
def test_acquisition_order_rejections_name_the_array_and_the_problem(order: list[str], reason: str) -> None:
    message = _error(_data(dimensions=_tczyx(), acquisition_order=order))
    assert message.splitlines()[1:] == [f"  arrays.0: {reason}"], message
    with pytest.raises(az.ConfigError) as info:
        az.ArraySettings(**{**_data()["arrays"][0], "dimensions": _tczyx(), "acquisition_order": order})
    assert str(info.value) == f"ArraySettings: invalid settings\n  (root): {reason}"


def test_acquisition_order_must_be_a_list_of_names() -> None:
    message = _error(_data(dimensions=_tczyx(), acquisition_order="tzc"))
    assert "  arrays.0.acquisition_order: Input should be a valid list" in message.splitlines()
    message = _error(_data(dimensions=_tczyx(), acquisition_order=["t", 2, "c"]))
    assert "  arrays.0.acquisition_order.1: Input should be a valid string" in message.splitlines()


def test_acquisition_order_round_trips_through_model_dump_json_and_yaml(tmp_path: Path) -> None:
    settings = az.StreamSettings.from_mapping(_data(dimensions=_tczyx(), acquisition_order=["t", "z", "c"]))
    dumped = settings.model_dump()
    assert dumped["arrays"][0]["acquisition_order"] == ("t", "z", "c")
    assert settings.model_dump(mode="json")["arrays"][0]["acquisition_order"] == ["t", "z", "c"]
    assert az.StreamSettings.model_validate(dumped) == settings
    assert az.StreamSettings.model_validate_json(settings.model_dump_json()) == settings
    assert az.StreamSettings.from_mapping(_data()).model_dump()["arrays"][0]["acquisition_order"] is None
    (tmp_path / "s.yaml").write_text(
        """\
store: out.zarr
arrays:
  - key: cam0
    dtype: <u2
    dimensions:
      - {name: t, kind: time, size: 0, chunk: 1}
      - {name: c, kind: channel, size: 2, chunk: 1}
      - {name: z, kind: space, size: 3, chunk: 1}
      - {name: y, kind: space, size: 64, chunk: 32}
      - {name: x, kind: space, size: 64, chunk: 32}
    acquisition_order: [t, z, c]
"""
    )
    array = az.StreamSettings.from_file(tmp_path / "s.yaml").arrays[0]
    assert array.dtype == "uint16"
    assert array.acquisition_axes == ("t", "z", "c") and array.index_names == ("t", "c", "z")


def test_every_field_has_a_description() -> None:
    for model in (az.Dimension, az.Blosc, az.ArraySettings, az.StreamSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(az.ConfigError, match="cannot read config file"):
        az.StreamSettings.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: [unclosed\n")
    with pytest.raises(az.ConfigError, match="not valid YAML"):
        az.StreamSettings.from_file(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**_data(), "version": "three"}))
    with pytest.raises(az.ConfigError, match=r"wrong\.json: invalid settings\n  version: Input should be"):
        az.StreamSettings.from_file(wrong)


def test_docs_settings_reference_is_up_to_date() -> None:
    from acqzarr.settings.doc import render

    path = Path(__file__).parent.parent / "docs" / "settings.md"
    assert path.read_text() == render(), "regenerate with: python -m acqzarr.settings.doc > docs/settings.md"


@pytest.mark.parametrize(
    "config",
    [
        p
        for p in sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
        if "source" not in p.read_text() and not p.name.startswith("serve-")  # serve: test_ingest*.py
    ],
    ids=lambda p: p.name,
)
def test_shipped_stream_settings_are_valid_and_record(tmp_path: Path, config: Path) -> None:
    """Plain StreamSettings files (for the Python API); session configs are run in test_configs."""
    import numpy as np

    data = load_mapping(config)
    data["store"] = str(tmp_path / "out.zarr")
    settings = az.StreamSettings.from_mapping(data)
    with az.open_stream(settings) as stream:
        for arr in settings.arrays:
            frame_shape = [d.size for d in arr.dimensions][-2:]
            stream.append(np.ones(frame_shape, arr.dtype), key=arr.key)
    for arr in settings.arrays:
        assert stream.stats(arr.key).frames_flushed == 1


def test_sharded_versions_match_each_versions_writer() -> None:
    # The settings say which versions take shards without importing metadata/; the writers agree.
    from acqzarr.metadata.zarr_versions import spec_for
    from acqzarr.settings import SHARDED_VERSIONS

    for version in (2, 3):
        assert spec_for(version).sharded == (version in SHARDED_VERSIONS)
    data = _data()
    data["arrays"][0]["dimensions"][1]["shard"] = 2
    az.StreamSettings.model_validate(data)
    with pytest.raises(az.ConfigError, match=r"arrays\[0\]\.dimensions\[1\]\.shard: Zarr v2 has no shards"):
        az.StreamSettings.model_validate({**data, "version": 2})


def test_the_settings_package_imports_only_errors_and_version_from_acqzarr() -> None:
    # Settings are the bottom of the house: every stage imports them, they import no stage.
    import ast

    package = Path(az.settings.__file__).parent
    allowed = {"acqzarr.errors", "acqzarr._version"}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    target = node.module or ""
                elif node.level == 1:
                    continue  # a sibling inside the package
                else:
                    target = ".".join(["acqzarr", *([node.module] if node.module else [])])
                    assert node.level == 2, f"{path.name}: import from above acqzarr"
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("acqzarr")]
                assert not targets, f"{path.name} imports {targets}"
                continue
            else:
                continue
            if target.split(".")[0] == "acqzarr":
                assert target in allowed, f"{path.name} imports {target}"


# -- immutable after validation (issue 22 #7) -----------------------------------------------------
def _everything(tmp_path: Path) -> az.StreamSettings:
    """Settings with every sequence and mapping field given, as lists and dicts."""
    data = _data(
        dimensions=_tczyx(),
        acquisition_order=["t", "z", "c"],
        channels=[{"label": "DAPI", "window": [0, 100]}, {"label": "GFP"}],
        frame_columns={"laser_mw": "float64"},
    )
    data["store"] = str(tmp_path / "s.zarr")
    data["positions"] = [{"name": "p0", "x": 1.0}, {"name": "p1"}]
    return az.StreamSettings.from_mapping(data)


def test_sequences_and_mappings_of_validated_settings_cannot_be_edited_in_place(tmp_path: Path) -> None:
    # Before: `settings.arrays[0].dimensions.append(...)` after validation was written by open_stream
    # as it stood (a 6-D array, a (t, y, y) array, an IndexError in a writer thread).
    settings = _everything(tmp_path)
    array = settings.arrays[0]
    extra = az.Dimension(name="w", kind="space", size=2, chunk=1)
    edits = [
        lambda: array.dimensions.append(extra),  # type: ignore[attr-defined]
        lambda: array.dimensions.__setitem__(2, array.dimensions[3]),  # type: ignore[attr-defined]
        lambda: array.acquisition_order.reverse(),  # type: ignore[union-attr]
        lambda: array.channels.pop(),  # type: ignore[union-attr]
        lambda: array.frame_columns.__setitem__("json", "int64"),  # type: ignore[attr-defined]
        lambda: array.frame_columns.clear(),  # type: ignore[attr-defined]
        lambda: settings.arrays.append(array),  # type: ignore[attr-defined]
        lambda: settings.positions.__delitem__(0),  # type: ignore[union-attr]
    ]
    for edit in edits:
        with pytest.raises((TypeError, AttributeError)):
            edit()
    plate = az.Plate(rows=["A"], columns=["1", "2"], wells=["A/1"], acquisitions=[{"id": 0}])
    for field in (plate.rows, plate.columns, plate.wells, plate.acquisitions):
        assert isinstance(field, tuple)
    with pytest.raises(az.ConfigError, match="frozen"):
        array.dimensions = [*array.dimensions, extra]  # type: ignore[misc]
    assert settings == _everything(tmp_path)
    assert [d.name for d in settings.arrays[0].dimensions] == ["t", "c", "z", "y", "x"]


def test_an_updated_copy_is_validated_so_edited_settings_cannot_reach_open_stream(tmp_path: Path) -> None:
    settings = _everything(tmp_path)
    array = settings.arrays[0]
    extra = az.Dimension(name="w", kind="space", size=2, chunk=1)
    with pytest.raises(
        az.ConfigError, match=r"ArraySettings: invalid settings\n  dimensions: List should have"
    ):
        array.model_copy(update={"dimensions": [*array.dimensions, extra]})  # 6-D
    y = array.dimensions[3]
    with pytest.raises(az.ConfigError, match="dimension names must be unique"):
        array.model_copy(update={"dimensions": [*array.dimensions[:4], y]})  # (t, c, z, y, y)
    with pytest.raises(az.ConfigError, match="frame column name"):
        array.model_copy(update={"frame_columns": {"json": "int64"}})
    # A valid update is a new, equally immutable, model; the original is as it was.
    two = settings.model_copy(update={"arrays": [array, array.model_copy(update={"key": "cam1"})]})
    assert isinstance(two.arrays, tuple) and [a.key for a in two.arrays] == ["cam0", "cam1"]
    assert [i.key for i in two.images] == ["p0/cam0", "p0/cam1", "p1/cam0", "p1/cam1"]
    assert two.images[0].position == az.Position(name="p0", x=1.0)
    assert len(settings.arrays) == 1


def test_lists_in_dumps_and_config_words_in_errors(tmp_path: Path) -> None:
    settings = _everything(tmp_path)
    dumped = json.loads(settings.model_dump_json())
    assert dumped["arrays"][0]["acquisition_order"] == ["t", "z", "c"]
    assert dumped["arrays"][0]["frame_columns"] == {"laser_mw": "float64"}
    assert dumped["arrays"][0]["channels"][0]["window"] == [0.0, 100.0]
    assert dumped["positions"] == [
        {"name": "p0", "x": 1.0, "y": None, "z": None},
        {"name": "p1", "x": None, "y": None, "z": None},
    ]
    assert az.StreamSettings.model_validate_json(settings.model_dump_json()) == settings
    assert az.StreamSettings.model_validate(settings.model_dump()) == settings
    import copy
    import pickle

    assert copy.deepcopy(settings) == settings == pickle.loads(pickle.dumps(settings))
    # The models keep tuples, but a config file writes lists: errors say list, and a bad item of a
    # one-item list is reported once (pydantic's tuple would add "at least 1 item ... not 0").
    assert _error({**_data(), "arrays": []}).splitlines()[1:] == [
        "  arrays: List should have at least 1 item after validation, not 0"
    ]
    assert _error({**_data(), "arrays": "cam0"}).splitlines()[1:] == [
        "  arrays: Input should be a valid list"
    ]
    assert _error({**_data(), "arrays": [{"dtype": "uint16"}]}).splitlines()[1:] == [
        "  arrays.0.dimensions: Field required"
    ]
