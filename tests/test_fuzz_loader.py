"""Mutation fuzz of the adapter loader: a fixed-seed corpus of damaged adapter directories.

Each case takes a valid adapter directory (lora_edu's format in three dtypes, or PEFT's), damages it one way —
flipped bits, cut or padded files, a JSON field set to a hostile value (huge ints, NaN, deep nesting, wrong
types, duplicate keys), a rewritten safetensors header (dtype, shape, offsets, header length), a torn pair,
a directory or symlink where a file should be — and hands it to ``load_adapter(model, directory)``.
Allowed outcomes: success, or exactly ValueError / TypeError / FileNotFoundError with the model bit-identical.
Damaged weights get their SHA-256 re-stamped in the config most of the time, so the parser (not only the
checksum) is what meets them. `make test` runs 1,000 cases; `make fuzz` (LORA_EDU_FUZZ_CASES=10000) ten times more.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
import random
import struct

import pytest
import torch

import lora_edu as le
from lora_edu.adapters import CONFIG_NAME, WEIGHTS_NAME

try:  # tests/ is a package (tests/__init__.py); without it pytest puts tests/ itself on sys.path
    from .conftest import Snapshot
except ImportError:
    from conftest import Snapshot

N_CASES = int(os.environ.get("LORA_EDU_FUZZ_CASES", "1000"))
CHUNK = 250
ALLOWED = (ValueError, TypeError, FileNotFoundError)

HOSTILE = [None, True, False, 0, -1, 1, 2, 3, 4, 8, 2**31, 2**63, 10**400, -10**400, 1.5, 1e308, -0.0,
           float("nan"), float("inf"), -float("inf"), "", "x", "q_proj", "v_proj", "float32", "bfloat16", "int8",
           "LORA", "lora_edu.adapter", [], [1], ["q_proj"], ["q_proj", "q_proj"], ["a..b"], [["q_proj"]], {},
           {"a": 1}, "a" * 5000, "é\u0000\ud800"[:2]]
TEXT_VALUES = ["[" * 3000 + "]" * 3000, "{" + '"a":{' * 2000 + "}" * 2001, "9" * 5000, "1e999", "-1e999", "NaN",
               "Infinity", '"\\ud800"', "0x10", "01", "tru", "[1,]"]
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "XX", "", 7]


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return le.ToyTransformer(le.ToyConfig(d_model=16, n_layer=2, n_head=2, d_ff=32)).eval()


def _seed_dirs(tmp) -> list[dict]:
    """Valid adapter directories as {file name: bytes}: lora_edu's format (3 dtypes, 2 target sets) and PEFT's."""
    seeds = []
    for i, (dtype, targets, r, fmt) in enumerate([(torch.float32, ("q_proj", "v_proj"), 4, "lora_edu"),
                                                  (torch.bfloat16, ("k_proj",), 2, "lora_edu"),
                                                  (torch.float64, ("up_proj", "o_proj"), 1, "lora_edu"),
                                                  (torch.float32, ("q_proj", "v_proj"), 4, "peft")]):
        m = _small_model().to(dtype)
        le.add_lora(m, targets, r=r, alpha=2 * r)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for layer in le.lora_layers(m).values():
                layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.05)
        d = le.extract_adapter(m).save(tmp / f"seed{i}", format=fmt)
        seeds.append({n: (d / n).read_bytes() for n in (CONFIG_NAME, WEIGHTS_NAME)})
    return seeds


def _flip(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _restamp(files: dict) -> None:
    """Record the (damaged) weights' SHA-256 in a lora_edu config, as a save would have."""
    try:
        cfg = json.loads(files[CONFIG_NAME])
    except (ValueError, TypeError, RecursionError):
        return
    if isinstance(cfg, dict) and "weights_sha256" in cfg and isinstance(files.get(WEIGHTS_NAME), bytes):
        cfg["weights_sha256"] = hashlib.sha256(files[WEIGHTS_NAME]).hexdigest()
        files[CONFIG_NAME] = json.dumps(cfg).encode()


def _header_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    keys = [k for k in header if k != "__metadata__"]
    k = rng.choice(keys)
    what = rng.choice(["dtype", "shape", "offsets", "drop", "add", "rename", "metadata", "len"])
    if what == "dtype":
        header[k]["dtype"] = rng.choice(DTYPES)
    elif what == "shape":
        shape = list(header[k]["shape"])
        choice = rng.randrange(5)
        shape = ([] if choice == 0 else shape[::-1] if choice == 1 else shape + [1] if choice == 2
                 else [rng.choice([0, -1, 2**40, 10**30])] + shape[1:] if choice == 3
                 else [shape[0] * 2, shape[1] // 2])
        header[k]["shape"] = shape
    elif what == "offsets":
        b, e = header[k]["data_offsets"]
        header[k]["data_offsets"] = rng.choice([[e, b], [b, e + 4], [b - 4, e], [0, 0], [b, 2**63], [-1, e], [b]])
    elif what == "drop":
        del header[k]
    elif what == "add":
        header[k + "x"] = dict(header[k])
    elif what == "rename":
        header[rng.choice(["", ".A", k.replace(".A", ".B"), k.upper(), "__metadata__x"])] = header.pop(k)
    elif what == "metadata":
        header["__metadata__"] = rng.choice([{}, {"format": "pt"}, {"format": 1}, [], "x",
                                             {"format": "lora_edu.adapter", "x": "y"}])
    raw = json.dumps(header).encode()
    length = len(raw) if what != "len" else rng.choice([0, 1, len(raw) - 1, len(raw) + 1, 2**63, 2**64 - 1])
    return struct.pack("<Q", length) + raw + body, f"header {what} of {k}"


def _mutate(seeds: list[dict], rng: random.Random) -> tuple[dict, str]:
    i = rng.randrange(len(seeds))
    files = dict(seeds[i])
    op = rng.choice(["flip_w", "flip_w", "flip_c", "cut", "pad", "field", "field", "text", "header", "header",
                     "header_len", "torn", "special"])
    name = rng.choice([CONFIG_NAME, WEIGHTS_NAME])
    if op == "flip_w":
        files[WEIGHTS_NAME] = _flip(files[WEIGHTS_NAME], rng, rng.choice([1, 2, 8, 64]))
    elif op == "flip_c":
        files[CONFIG_NAME] = _flip(files[CONFIG_NAME], rng, rng.choice([1, 2, 8]))
    elif op == "cut":
        files[name] = files[name][:rng.randrange(len(files[name]) + 1)]
    elif op == "pad":
        files[name] = files[name] + rng.randbytes(rng.choice([1, 7, 100]))
    elif op == "field":
        cfg = json.loads(files[CONFIG_NAME])
        key = rng.choice(sorted(cfg) + ["extra", "peft_type", "use_dora", "format"])
        value = rng.choice(HOSTILE)
        cfg[key] = value
        files[CONFIG_NAME] = json.dumps(cfg).encode()
        op = f"field {key}={str(value)[:20]!r}"
    elif op == "text":
        text = files[CONFIG_NAME].decode()
        key = rng.choice(sorted(json.loads(text)))
        value = rng.choice(TEXT_VALUES + ["dup"])
        if value == "dup":  # the key twice, the second time with another value
            text = text.rstrip().rstrip("}") + f', "{key}": {json.dumps(rng.choice(HOSTILE[:20]))}}}'
        else:
            cfg = json.loads(text)
            cfg[key] = "@@"
            text = json.dumps(cfg).replace('"@@"', value)
        files[CONFIG_NAME] = text.encode()
        op = f"text {key}: {value[:12]}"
    elif op == "header":
        files[WEIGHTS_NAME], op = _header_mutation(files[WEIGHTS_NAME], rng)
    elif op == "header_len":
        files[WEIGHTS_NAME] = struct.pack("<Q", rng.choice([0, 1, 7, 2**32, 2**63])) + files[WEIGHTS_NAME][8:]
    elif op == "torn":
        files[WEIGHTS_NAME] = seeds[(i + 1 + rng.randrange(len(seeds) - 1)) % len(seeds)][WEIGHTS_NAME]
    else:
        files[name] = rng.choice(["missing", "directory", "empty", "symlink"])
        op = f"{name} is {files[name]}"
    if rng.random() < 0.7:
        _restamp(files)
    return files, f"seed {i}: {op}"


def _write(directory, files: dict) -> None:
    directory.mkdir()
    for name, data in files.items():
        path = directory / name
        if data == "directory":
            path.mkdir()
        elif data == "empty":
            path.write_bytes(b"")
        elif data == "symlink":
            path.symlink_to(directory.parent / "seed0" / name)
        elif data != "missing":
            path.write_bytes(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    return tmp, _seed_dirs(tmp), _small_model()


@pytest.mark.parametrize("chunk", range((N_CASES + CHUNK - 1) // CHUNK))
def test_damaged_adapter_directories(corpus, chunk):
    tmp, seeds, pristine = corpus
    model = copy.deepcopy(pristine)
    seen = collections.Counter()  # outcome -> count in this chunk
    for case in range(chunk * CHUNK, min(N_CASES, (chunk + 1) * CHUNK)):
        rng = random.Random(case)
        files, what = _mutate(seeds, rng)
        directory = tmp / f"case{case}"
        _write(directory, files)
        snap = Snapshot.of(model)
        try:
            le.load_adapter(model, directory)
        except ALLOWED as e:
            assert type(e) in ALLOWED, f"case {case} ({what}): {type(e).__name__} (a subclass) escaped: {e}"
            seen[type(e).__name__] += 1
            snap.assert_unchanged(model)
        except BaseException as e:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"case {case} ({what}): {type(e).__name__} escaped the loader: {e!s:.300}")
        else:
            seen["loaded"] += 1
            layers = le.lora_layers(model)
            assert layers and all(torch.isfinite(m.A).all() and torch.isfinite(m.B).all() for m in layers.values())
            adapter = le.extract_adapter(model)
            model = copy.deepcopy(pristine)
            snap = Snapshot.of(model)
            try:  # what loaded must also merge into the plain model, or be refused cleanly
                le.merge_adapter(model, adapter)
                model = copy.deepcopy(pristine)
            except (ValueError, TypeError):
                snap.assert_unchanged(model)
    print(f"\nfuzz chunk {chunk}: outcomes {dict(seen.most_common())}")
    assert seen["loaded"] > 0 and seen["ValueError"] > sum(seen.values()) // 2  # the corpus reaches both sides
