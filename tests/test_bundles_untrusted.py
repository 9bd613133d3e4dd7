"""Bundles are untrusted input: every tampered or absurd bundle is a BundleError that names
the field, the expected range and the value, found before anything large is read or built, and
the bundle's files are left as they were.

The cases are a data table: a new case is one line (a tampering and the message it must get).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json

import pytest

torch = pytest.importorskip("torch")

from napari_im2im_uq.models import (  # noqa: E402
    BundleError,
    UNet2d,
    build_network,
    list_models,
    load_model,
    read_spec,
    save_model,
)
from napari_im2im_uq.models._errors import LIMITS  # noqa: E402
from napari_im2im_uq.models._spec import UNET_DEFAULTS, unet_parameter_count  # noqa: E402

GB = 1 << 30


@pytest.fixture
def bundle(tmp_path):
    net = build_network("quantile", depth=1, base_channels=2)
    return save_model(net, tmp_path / "b", spec={"heuristic": "quantile"})


def _spec(folder) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_spec(folder, spec) -> None:
    (folder / "model.json").write_text(json.dumps(spec))


def field(**changes):
    """Tamper: set top-level fields of model.json."""

    def apply(folder):
        _write_spec(folder, {**_spec(folder), **changes})

    return apply


def kwarg(**changes):
    """Tamper: set architecture kwargs in model.json."""

    def apply(folder):
        spec = _spec(folder)
        spec["kwargs"] = {**spec["kwargs"], **changes}
        _write_spec(folder, spec)

    return apply


def weights_size(size):
    """Tamper: make the weights file ``size`` bytes (sparse when larger: nothing is written)."""

    def apply(folder):
        with open(folder / "weights.safetensors", "r+b") as fh:
            fh.truncate(size)

    return apply


def weights_header(length):
    """Tamper: the safetensors 8-byte header length."""

    def apply(folder):
        with open(folder / "weights.safetensors", "r+b") as fh:
            fh.write(int(length).to_bytes(8, "little"))

    return apply


def flip_weight_byte(folder):
    path = folder / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def json_text(text):
    def apply(folder):
        (folder / "model.json").write_bytes(text if isinstance(text, bytes) else text.encode())

    return apply


def nested_card(depth):
    def apply(folder):
        spec = _spec(folder)
        text = json.dumps(spec)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
        (folder / "model.json").write_text(text)

    return apply


def json_size(size):
    """model.json made ``size`` bytes (sparse when large)."""

    def apply(folder):
        with open(folder / "model.json", "r+b") as fh:
            fh.truncate(size)

    return apply


# (id, tampering, regex the BundleError message must match: field, range or expectation, value)
CASES = [
    ("depth-40", kwarg(depth=40), r"kwargs\['depth'\] must be an integer in \[1, 8\]; got 40"),
    ("depth-0", kwarg(depth=0), r"kwargs\['depth'\] must be an integer in \[1, 8\]; got 0"),
    ("depth-string", kwarg(depth="3"), r"kwargs\['depth'\] must be an integer .*; got '3'"),
    ("depth-bool", kwarg(depth=True), r"kwargs\['depth'\] must be an integer .*; got True"),
    ("width-1e6", kwarg(base_channels=1e6),
     r"kwargs\['base_channels'\] must be an integer in \[1, 512\]; got 1000000\.0"),
    ("width-10**6", kwarg(base_channels=10**6),
     r"kwargs\['base_channels'\] must be an integer in \[1, 512\]; got 1000000"),
    ("in-channels-0", kwarg(in_channels=0), r"kwargs\['in_channels'\] must be .*\[1, 64\]; got 0"),
    ("out-channels-negative", kwarg(out_channels=-3),
     r"kwargs\['out_channels'\] must be .*\[1, 1024\]; got -3"),
    ("kwargs-scale-1000", kwarg(scale_factor=1000),
     r"kwargs\['scale_factor'\] must be an integer in \[1, 16\]; got 1000"),
    ("norm-unknown", kwarg(norm="layer"),
     r"kwargs\['norm'\] must be one of \['batch', 'group', 'instance', 'none'\]; got 'layer'"),
    ("upsampling-unknown", kwarg(upsampling="nearest"),
     r"kwargs\['upsampling'\] must be one of .*; got 'nearest'"),
    ("unknown-kwarg", kwarg(activation="gelu"), r"unknown argument 'activation'; expected some"),
    ("too-many-parameters", kwarg(depth=8, base_channels=512),
     r"network of [\d,]+ parameters; a bundle may have at most 500,000,000"),
    ("kwargs-not-object", field(kwargs=[1, 2]), r"kwargs must be a JSON object; got \[1, 2\]"),
    ("halo-1e9", field(halo=10**9), r"halo must be an integer in \[0, 4096\]; got 1000000000"),
    ("halo-negative", field(halo=-1), r"halo must be an integer in \[0, 4096\]; got -1"),
    ("halo-float", field(halo=12.5), r"halo must be an integer in \[0, 4096\]; got 12\.5"),
    ("scale-0", field(scale_factor=0), r"scale_factor must be an integer in \[1, 16\]; got 0"),
    ("scale-huge", field(scale_factor=10**6), r"scale_factor must be .*\[1, 16\]; got 1000000"),
    ("quantiles-crossed", field(quantiles=[0.9, 0.1]),
     r"quantiles must be \[lo, hi\] with 0 < lo < hi < 1; got \[0\.9, 0\.1\]"),
    ("quantiles-out-of-range", field(quantiles=[0, 1.5]), r"quantiles must be .*; got \[0, 1\.5\]"),
    ("input-channels-100", field(input_channels=[f"c{i}" for i in range(100)]),
     r"input_channels must name at most 64 channels; got 100"),
    ("heuristic-unknown", field(heuristic="evil"), r"heuristic must be one of .*; got 'evil'"),
    ("bins-10**6", field(heuristic="softmax", bins=10**6, output_range=[0, 1]),
     r"bins must be an integer in \[2, 1024\]; got 1000000"),
    ("classes-5000", field(heuristic="segmentation", classes=[f"c{i}" for i in range(5000)]),
     r"classes must name at most 1024 classes; got 5000"),
    ("sha256-malformed", field(sha256="zz"),
     r"sha256 must be 64 lower-case hexadecimal digits; got 'zz'"),
    ("normalization-std-zero", field(normalization={"kind": "meanstd", "mean": 0, "std": 0}),
     r"normalization 'std' must be positive"),
    ("output-range-reversed", field(output_range=[1, 0]),
     r"output_range must be null or \[lo, hi\] with finite lo < hi; got \[1, 0\]"),
    ("architecture-unknown", field(architecture="resnet"), r"unknown architecture 'resnet'"),
    ("format-version", field(format_version=99), r"unsupported format_version: .*; got 99"),
    ("weights-tens-of-GB", weights_size(40 * GB),
     r"weights\.safetensors must be at most [\d,]+ bytes for the architecture in model\.json "
     r"\(unet2d with [\d,]+ parameters .*\); got 42,949,672,960 bytes: it was not read"),
    ("weights-double", weights_size(2 << 20),
     r"weights\.safetensors must be at most [\d,]+ bytes .*; got 2,097,152 bytes"),
    ("weights-truncated", weights_size(100),
     r"header length of weights\.safetensors .* must be between 2 and 92 bytes; got [\d,]+"),
    ("weights-empty", weights_size(0), r"not a safetensors file: it has 0 bytes"),
    ("header-length-huge", weights_header(1 << 62),
     r"header length of weights\.safetensors .* must be between 2 and [\d,]+ bytes; got "
     r"4,611,686,018,427,387,904"),
    ("header-length-zero", weights_header(0), r"header length .* got 0"),
    ("weights-modified", flip_weight_byte, r"sha256 of weights\.safetensors does not match"),
    ("model-json-10GB", json_size(10 * GB),
     r"model\.json must be at most 1,048,576 bytes; got 10,737,418,240 bytes"),
    ("model-json-nested", nested_card(100_000),
     r"model\.json must nest arrays and objects at most 32 deep; got depth 100001"),
    ("model-json-list", json_text("[1, 2]"), r"must hold a JSON object; got list"),
    ("model-json-not-utf8", json_text(b"\xff\xfe{}"), r"is not valid JSON"),
    ("model-json-garbage", json_text("{not json"), r"is not valid JSON"),
]


def _fingerprint(folder) -> dict:
    """Size, mtime and the hash of the first and last MiB of each file (sparse files too)."""
    out = {}
    for path in sorted(folder.iterdir()):
        stat = path.stat()
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
            fh.seek(max(0, stat.st_size - (1 << 20)))
            tail = fh.read(1 << 20)
        out[path.name] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(head + tail).hexdigest())
    return out


def test_the_table_has_enough_cases():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("tamper", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampered_bundle_is_refused_with_the_field_and_left_unchanged(bundle, tamper, message):
    tamper(bundle)
    before = _fingerprint(bundle)
    with pytest.raises(BundleError, match=message):
        load_model(bundle)
    assert _fingerprint(bundle) == before


@pytest.mark.parametrize(
    ("tamper", "message"),
    [(json_size(10 * GB), r"model\.json must be at most"),
     (nested_card(100_000), r"at most 32 deep"),
     (json_text("[1]"), "must hold a JSON object")],
    ids=["huge", "nested", "list"],
)
def test_read_spec_bounds_model_json_too(bundle, tamper, message):
    tamper(bundle)
    with pytest.raises(BundleError, match=message):
        read_spec(bundle)


def test_a_tens_of_gb_weights_file_is_not_read(bundle, monkeypatch):
    """The size is judged from stat alone: reading the file would fail this test."""
    weights_size(40 * GB)(bundle)
    from pathlib import Path

    def no_read(self, *args, **kwargs):
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    with pytest.raises(BundleError, match="it was not read"):
        load_model(bundle)


def test_absurd_kwargs_fail_before_any_network_is_built(bundle, monkeypatch):
    kwarg(depth=40, base_channels=512)(bundle)
    built = []
    monkeypatch.setattr(UNet2d, "__init__", lambda self, **kw: built.append(kw))
    with pytest.raises(BundleError, match=r"kwargs\['depth'\]"):
        load_model(bundle)
    assert built == []


def test_parameter_count_without_building_equals_the_state_dict():
    for norm, up, scale, depth in itertools.product(
            ("batch", "group", "instance", "none"), ("transpose", "bilinear"), (1, 3), (1, 3)):
        kwargs = dict(in_channels=2, out_channels=5, depth=depth, base_channels=4, norm=norm,
                      upsampling=up, scale_factor=scale)
        state = UNet2d(**kwargs).state_dict()
        floats = sum(v.numel() for v in state.values() if v.is_floating_point())
        ints = sum(v.numel() for v in state.values() if not v.is_floating_point())
        assert unet_parameter_count(kwargs) == (floats, ints), kwargs


def test_defaults_of_the_bounds_match_the_network_signature():
    signature = inspect.signature(UNet2d)
    assert {k: p.default for k, p in signature.parameters.items()} == UNET_DEFAULTS


@pytest.mark.parametrize("half", [False, True])
def test_honest_bundles_still_load(tmp_path, half):
    net = build_network("softmax", bins=16, depth=2, base_channels=4, scale_factor=2)
    folder = save_model(net, tmp_path / "ok", spec={"heuristic": "softmax", "output_range": [0, 1]},
                        half=half)
    assert load_model(folder).spec["bins"] == 16


def test_every_zoo_bundle_is_within_the_limits():
    for name in list_models():
        spec = read_spec(name)
        assert sum(unet_parameter_count(spec["kwargs"])) <= LIMITS["parameters"]
        load_model(name)
