"""Mutations of valid checkpoint files for the fuzz test: byte flips, truncation, wrong dtypes and shapes,
huge declared sizes. Each mutation is a function of a random generator and the valid file's bytes."""

from __future__ import annotations

import io
import json
import random
import struct
import zipfile

import numpy as np
import torch

HUGE = [2**31, 2**40, 2**62, 10**15, -1]


def byte_flips(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    b = bytearray(data)
    n = rng.choice([1, 1, 2, 5, 20])
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return f"flip {n} bits", bytes(b)


def head_flips(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Flips near the start, where the headers are."""
    b = bytearray(data)
    i = rng.randrange(min(len(b), 400))
    b[i] = rng.randrange(256)
    return f"set byte {i}", bytes(b)


def truncate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    cut = rng.randrange(len(data))
    return f"truncate at {cut}", data[:cut]


def splice(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    i = rng.randrange(len(data))
    if rng.random() < 0.5:
        n = rng.randrange(1, 64)
        return f"delete {n} bytes at {i}", data[:i] + data[i + n:]
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    return f"insert {len(junk)} bytes at {i}", data[:i] + junk + data[i:]


# ------------------------------------------------------------------------------------------------ safetensors
def _st_split(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _st_join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def st_header(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    header, body = _st_split(data)
    keys = [k for k in header if k != "__metadata__"]
    key = rng.choice(keys)
    kind = rng.choice(["dtype", "shape", "offsets", "huge_offsets", "huge_shape", "drop", "metadata", "length"])
    if kind == "dtype":
        header[key]["dtype"] = rng.choice(["I32", "I64", "BOOL", "U8", "F16", "BF16", "F64", "C64", "XYZ"])
    elif kind == "shape":
        shape = header[key]["shape"]
        header[key]["shape"] = [max(0, s + rng.choice([-1, 1, 7])) for s in shape] or [3]
    elif kind == "offsets":
        a, b = header[key]["data_offsets"]
        header[key]["data_offsets"] = [b, a] if rng.random() < 0.5 else [a, b + rng.randrange(1, 1000)]
    elif kind == "huge_offsets":
        header[key]["data_offsets"] = [0, rng.choice(HUGE)]
    elif kind == "huge_shape":
        header[key]["shape"] = [rng.choice(HUGE[:4]), 4]
    elif kind == "drop":
        del header[key]
    elif kind == "metadata":
        meta = header.get("__metadata__", {})
        field = rng.choice(list(meta) or ["vitkit.config"])
        meta[field] = rng.choice(["{", "[]", "null", json.dumps({"depth": 10**9}), json.dumps({"width": "x"}),
                                  _mutate_config(rng, meta.get(field, "{}"))])
        header["__metadata__"] = meta
    else:
        raw = _st_join(header, body)
        return "declared header length " + str(HUGE[2]), struct.pack("<Q", HUGE[2]) + raw[8:]
    return f"header {kind} of {key}", _st_join(header, body)


def _mutate_config(rng: random.Random, text: str) -> str:
    try:
        config = json.loads(text)
    except ValueError:
        return text
    if not isinstance(config, dict) or not config:
        return text
    field = rng.choice(sorted(config))
    config[field] = rng.choice([10**9, -3, 0, "abc", None, [1, 2, 3], 2.5, {"a": 1}, True])
    return json.dumps(config)


# -------------------------------------------------------------------------------------------------------- npz
def npz_member(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Rewrite one array's .npy header: another dtype, another or a huge shape, or Fortran order."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = rng.choice(sorted(members))
    raw = members[name]
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    payload = raw[stream.tell():]
    kind = rng.choice(["dtype", "shape", "huge", "fortran", "object"])
    if kind == "dtype":
        dtype = np.dtype(rng.choice(["<i4", "<f8", "<f2", "|b1", "<c8", "|u1", ">f4"]))
    elif kind == "shape":
        shape = tuple(s + rng.choice([-1, 1, 3]) for s in shape) or (5,)
    elif kind == "huge":
        shape = (rng.choice(HUGE[:4]),) + tuple(shape[1:])
    elif kind == "fortran":
        fortran = not fortran
    header = {"descr": "|O" if kind == "object" else np.lib.format.dtype_to_descr(dtype),
              "fortran_order": fortran, "shape": shape}
    out = io.BytesIO()
    write_header = np.lib.format.write_array_header_1_0 if version == (1, 0) else \
        np.lib.format.write_array_header_2_0
    write_header(out, header)
    members[name] = out.getvalue() + payload
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return f"npy header {kind} of {name}", buf.getvalue()


def zip_sizes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Declare a huge uncompressed size in a zip's central directory (npz and .pth are both zips)."""
    b = bytearray(data)
    offsets = [i for i in range(len(b) - 4) if b[i:i + 4] == b"PK\x01\x02"]
    if not offsets:
        return byte_flips(rng, data)
    i = rng.choice(offsets)
    field = rng.choice([20, 24])  # compressed, uncompressed size
    b[i + field:i + field + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 10**9]))
    return f"zip directory size field {field} at {i}", bytes(b)


# ------------------------------------------------------------------------------------------------------- pth
def pth_state(rng: random.Random, state: dict) -> tuple[str, bytes]:
    """A state dict with one entry of a wrong dtype, shape or type, saved with torch.save."""
    state = dict(state)
    key = rng.choice(sorted(state))
    kind = rng.choice(["int", "bool", "complex", "half", "shape", "scalar", "list", "string", "nested", "drop",
                       "extra", "huge_expand"])
    value = state[key]
    if kind == "int":
        state[key] = value.to(torch.int32)
    elif kind == "bool":
        state[key] = value > 0
    elif kind == "complex":
        state[key] = value.to(torch.complex64)
    elif kind == "half":
        state[key] = value.half()
    elif kind == "shape":
        state[key] = torch.zeros(*(s + 1 for s in value.shape)) if value.dim() else torch.zeros(2)
    elif kind == "scalar":
        state[key] = 3
    elif kind == "list":
        state[key] = [1.0, 2.0]
    elif kind == "string":
        state[key] = "weights"
    elif kind == "nested":
        state[key] = {"inner": value}
    elif kind == "drop":
        del state[key]
    elif kind == "extra":
        state["blocks.99.mlp.fc1.weight"] = torch.zeros(2, 2)
    else:
        state[key] = torch.zeros(1).expand(10**6)  # a view claiming a large size over a tiny storage
    buf = io.BytesIO()
    torch.save(state, buf)
    return f"state entry {key}: {kind}", buf.getvalue()
