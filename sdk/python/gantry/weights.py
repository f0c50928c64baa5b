"""Model weights in one file, mapped from the page cache instead of copied into each process.

A worker template imports torch, loads the model and is then fork()ed into workers. Weights in
anonymous memory (what `torch.load` gives) are re-faulted page by page by every child on its
first forward pass, which is slow where page faults are (about 0.7 s for 488 MiB on the
development VMs). Weights saved once with `save()` and opened with `load()` are a private
(copy-on-write) mapping of the file instead: the template and all its children read the same
page-cache pages, nothing is copied, and a child faults them in cheaply from the page cache.

    tensors = weights.cached("mlp-v1", make_weights)   # save()s make_weights() on first use
    model = weights.bind(build_model(device="meta"), tensors)

File format (".gw"), all integers little-endian:

    offset 0    8 bytes   magic b"GANTRYW1"
    offset 8    8 bytes   N, the length of the header in bytes (unsigned)
    offset 16   N bytes   header: UTF-8 JSON
                          {"tensors": {NAME: {"dtype": "float32", "shape": [2, 3],
                                              "offset": 4096, "nbytes": 24}, ...},
                           "metadata": {...}}
    then                  the tensors' raw bytes, C order, little-endian, each starting at an
                          offset that is a multiple of 4096 from the start of the file, zero
                          padding between them; the file's length is padded to a multiple of
                          4096 too. `offset` and `nbytes` are in bytes from the start of the
                          file; `nbytes` is the product of `shape` times the dtype's size.

dtypes: float32, float16, bfloat16 (raw 2-byte bfloat16 bits), float64, int64, int32, int16,
int8, uint8, bool (1 byte, 0 or 1). `metadata` is any JSON object the writer chose.

Contracts:
- Files are written once and replaced atomically (temp file in the same directory, fsync,
  rename), never modified in place: a mapping of a file that is truncated under it would fault
  (SIGBUS), so nothing here ever does that.
- Tensors from `load()` are writable, but a write copies that page into the writing process's
  own anonymous memory (MAP_PRIVATE); it never reaches the file or other processes.
- Each loaded file keeps one mapping and one file descriptor open until all its tensors are
  garbage.
- Errors: a missing file raises OSError (FileNotFoundError); a file that is not a valid weights
  file, or is truncated, raises ValueError naming the file; unsupported dtypes or bad names
  raise ValueError.
- Thread-safety: the functions keep no state; `cached()` is safe across threads and processes.

torch is imported only where tensors are made or read, so `import gantry.weights` and
`load_numpy()` work without it.
"""

import fcntl
import json
import math
import mmap
import os
import sys
import tempfile

import numpy as np

__all__ = ["ALIGNMENT", "MAGIC", "bind", "cache_dir", "cached", "load", "load_numpy", "metadata",
           "save"]

MAGIC = b"GANTRYW1"
ALIGNMENT = 4096
SUFFIX = ".gw"
_PREFIX_LEN = 16                  # magic and header length
_MAX_HEADER_LEN = 64 * 1024 * 1024

# File dtype name -> (numpy dtype as stored, item size). bfloat16 is stored as its raw 16 bits.
_DTYPES = {
    "float32": (np.dtype("<f4"), 4),
    "float16": (np.dtype("<f2"), 2),
    "bfloat16": (np.dtype("<u2"), 2),
    "float64": (np.dtype("<f8"), 8),
    "int64": (np.dtype("<i8"), 8),
    "int32": (np.dtype("<i4"), 4),
    "int16": (np.dtype("<i2"), 2),
    "int8": (np.dtype("i1"), 1),
    "uint8": (np.dtype("u1"), 1),
    "bool": (np.dtype("?"), 1),
}
_NUMPY_NAMES = {np.dtype(n): n for n in
                ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8",
                 "bool")}


def _align(n):
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


# --- writing ------------------------------------------------------------------------------------

def _torch_dtype_names(torch):
    return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
            torch.float64: "float64", torch.int64: "int64", torch.int32: "int32",
            torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}


def _as_array(name, value):
    """(file dtype name, contiguous little-endian numpy array sharing or copying `value`)."""
    if isinstance(value, np.generic):   # a numpy scalar: a 0-d array
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        dtype_name = _NUMPY_NAMES.get(value.dtype.newbyteorder("="))
        if dtype_name is None:
            raise ValueError("tensor %r: unsupported numpy dtype %s (supported: %s)"
                             % (name, value.dtype, ", ".join(_NUMPY_NAMES.values())))
        stored = _DTYPES[dtype_name][0]
        return dtype_name, np.asarray(value, dtype=stored, order="C")   # keeps 0-d arrays 0-d
    torch = _torch_if_tensor(value)
    if torch is None:
        raise ValueError("tensor %r: expected a torch.Tensor or numpy.ndarray, got %s"
                         % (name, type(value).__name__))
    dtype_name = _torch_dtype_names(torch).get(value.dtype)
    if dtype_name is None:
        raise ValueError("tensor %r: unsupported torch dtype %s (supported: %s)"
                         % (name, value.dtype, ", ".join(_DTYPES)))
    if value.layout != torch.strided:
        raise ValueError("tensor %r: only dense (strided) tensors can be saved, not %s"
                         % (name, value.layout))
    t = value.detach()
    if t.device.type == "meta":
        raise ValueError("tensor %r is on the meta device and has no data" % name)
    t = t.cpu().contiguous()
    if dtype_name == "bfloat16":
        t = t.view(torch.int16)   # same bits; numpy has no bfloat16
        return dtype_name, t.numpy().view(_DTYPES["bfloat16"][0])
    return dtype_name, np.asarray(t.numpy(), dtype=_DTYPES[dtype_name][0], order="C")


def _torch_if_tensor(value):
    """The torch module if `value` is a torch.Tensor, without importing torch otherwise."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return torch
    return None


def save(path, tensors, metadata=None):
    """Writes `tensors` (a dict: name -> torch.Tensor or numpy.ndarray) to `path`, atomically.

    Tensors are copied to contiguous CPU memory as needed; the inputs are not changed. Writes a
    temp file beside `path`, fsyncs it, renames it over `path` and fsyncs the directory, so a
    reader sees the old file or the whole new one. `metadata` is an optional JSON-serialisable
    dict stored in the header (`metadata(path)` reads it back). Raises ValueError for an
    unsupported dtype or value, a non-string name or metadata that is not JSON; OSError from the
    filesystem."""
    if not isinstance(tensors, dict):
        raise ValueError("tensors must be a dict of name -> tensor, got %s"
                         % type(tensors).__name__)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a dict, got %s" % type(metadata).__name__)
    arrays = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError("tensor names must be non-empty strings, got %r" % (name,))
        arrays.append((name,) + _as_array(name, value))

    # The header's length fixes where data starts, and the offsets are in the header: lay the
    # data out after a header sized for the largest offsets, then pad the header to that size.
    def layout(data_start):
        entries, pos = {}, data_start
        for name, dtype_name, arr in arrays:
            entries[name] = {"dtype": dtype_name, "shape": list(arr.shape), "offset": pos,
                             "nbytes": int(arr.nbytes)}
            pos = _align(pos + arr.nbytes)
        return entries, pos

    try:
        meta_json = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError("metadata is not JSON-serialisable: %s" % e) from None
    data_start = ALIGNMENT
    while True:
        entries, end = layout(data_start)
        header = ('{"tensors": %s, "metadata": %s}'
                  % (json.dumps(entries, ensure_ascii=False), meta_json)).encode("utf-8")
        if _PREFIX_LEN + len(header) <= data_start:
            break
        data_start = _align(_PREFIX_LEN + len(header))
    header += b" " * (data_start - _PREFIX_LEN - len(header))   # JSON allows trailing spaces

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for name, _, arr in arrays:
                assert f.tell() == entries[name]["offset"]
                if arr.nbytes:
                    f.write(arr.reshape(-1).view(np.uint8).data)
                f.write(b"\0" * (_align(f.tell()) - f.tell()))
            assert f.tell() == end
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- reading ------------------------------------------------------------------------------------

def _bad(path, why):
    return ValueError("%s: not a valid Gantry weights file: %s" % (path, why))


def _read_header(path, f, size):
    """The parsed, validated header of the open file `f` of `size` bytes."""
    prefix = f.read(_PREFIX_LEN)
    if len(prefix) < len(MAGIC) or prefix[:len(MAGIC)] != MAGIC:
        raise _bad(path, "bad magic (expected %r)" % MAGIC)
    if len(prefix) < _PREFIX_LEN:
        raise _bad(path, "truncated before the header length")
    header_len = int.from_bytes(prefix[8:16], "little")
    if header_len > min(size - _PREFIX_LEN, _MAX_HEADER_LEN):
        raise _bad(path, "header length %d does not fit in the file (%d bytes)"
                   % (header_len, size))
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise _bad(path, "truncated in the header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, "header is not UTF-8 JSON: %s" % e) from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), dict):
        raise _bad(path, 'header has no "tensors" object')
    meta = header.get("metadata", {})
    if not isinstance(meta, dict):
        raise _bad(path, '"metadata" is not an object')
    data_start = _PREFIX_LEN + header_len
    spans = []
    for name, e in header["tensors"].items():
        if not isinstance(e, dict):
            raise _bad(path, "tensor %r: entry is not an object" % name)
        dtype, shape, offset, nbytes = (e.get("dtype"), e.get("shape"), e.get("offset"),
                                        e.get("nbytes"))
        if dtype not in _DTYPES:
            raise _bad(path, "tensor %r: unknown dtype %r" % (name, dtype))
        if (not isinstance(shape, list)
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise _bad(path, "tensor %r: bad shape %r" % (name, shape))
        for key, v in (("offset", offset), ("nbytes", nbytes)):
            if type(v) is not int or v < 0:
                raise _bad(path, "tensor %r: bad %s %r" % (name, key, v))
        if math.prod(shape) * _DTYPES[dtype][1] != nbytes:
            raise _bad(path, "tensor %r: nbytes %d does not match shape %r of %s"
                       % (name, nbytes, shape, dtype))
        if offset % ALIGNMENT or offset < data_start:
            raise _bad(path, "tensor %r: offset %d is not aligned after the header"
                       % (name, offset))
        if offset + nbytes > size:
            raise _bad(path, "tensor %r: bytes %d..%d are past the end of the file (%d bytes; "
                       "truncated?)" % (name, offset, offset + nbytes, size))
        if nbytes:
            spans.append((offset, offset + nbytes, name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise _bad(path, "tensors %r and %r overlap" % (a, b))
    return header


def metadata(path):
    """The `metadata` dict stored in the weights file at `path`. Errors as for `load()`."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _read_header(path, f, os.fstat(f.fileno()).st_size).get("metadata", {})


def _map(path):
    """{name: (file dtype name, numpy array over a private mapping of the file)}."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(path, f, size)
        # ACCESS_COPY is MAP_PRIVATE, PROT_READ|PROT_WRITE: pages are the page cache's until
        # written. The mmap object keeps its own descriptor, so `f` can be closed.
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    out = {}
    for name, e in header["tensors"].items():
        np_dtype = _DTYPES[e["dtype"]][0]
        shape = tuple(e["shape"])
        if e["nbytes"]:
            arr = np.frombuffer(mm, dtype=np_dtype, count=math.prod(shape), offset=e["offset"])
            arr = arr.reshape(shape)
        else:
            arr = np.empty(shape, dtype=np_dtype)   # nothing to map
        out[name] = (e["dtype"], arr)
    return out


def load_numpy(path):
    """{name: numpy.ndarray} of the weights file at `path`, without copying and without torch.

    The arrays are views of one private mapping of the file (see the module's contracts).
    bfloat16 tensors come back as uint16 arrays of their raw bits. Raises OSError if the file
    cannot be opened, ValueError naming the file if it is not a valid, whole weights file."""
    return {name: arr for name, (_, arr) in _map(path).items()}


def load(path):
    """{name: torch.Tensor} of the weights file at `path`, in file order, without copying.

    The tensors are CPU tensors over one private (copy-on-write) mapping of the file, so
    processes that load the same file, or fork after loading it, share its page-cache pages.
    Errors as for `load_numpy()`."""
    import torch

    out = {}
    for name, (dtype_name, arr) in _map(path).items():
        if dtype_name == "bfloat16":
            t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(arr)
        out[name] = t
    return out


# --- putting tensors into a module --------------------------------------------------------------

def _state_slots(module):
    """{state_dict name: (owning module, attribute name, current value, is a parameter)}."""
    slots = {}
    for prefix, mod in module.named_modules(remove_duplicate=False):
        prefix = prefix + "." if prefix else ""
        for n, p in mod._parameters.items():
            if p is not None:
                slots[prefix + n] = (mod, n, p, True)
        for n, b in mod._buffers.items():
            if b is not None and n not in mod._non_persistent_buffers_set:
                slots[prefix + n] = (mod, n, b, False)
    return slots


def bind(module, tensors, strict=True):
    """Makes `tensors` (name -> torch.Tensor, as `load()` returns) `module`'s parameters and
    buffers, by their `state_dict()` names, without copying; returns `module`.

    Each parameter is replaced by a new `torch.nn.Parameter` over the given tensor, with
    requires_grad=False (inference); each persistent buffer is replaced by the tensor itself.
    Shapes and dtypes must match the module's exactly (ValueError otherwise, and then nothing is
    changed). With strict=True, a name the module has but `tensors` lacks, or the other way
    round, raises ValueError; with strict=False those are left alone. Tied parameters (one
    Parameter under two names) end up as two tensors with the same values.

    The module's own weights are only needed for their shapes and dtypes, so build it without
    allocating or initialising them: on torch 1.13 pass device="meta" to its layers (there is no
    `with torch.device("meta")` before torch 2.0):

        def build(device=None):
            return torch.nn.Sequential(torch.nn.Linear(16, 64, device=device), torch.nn.ReLU(),
                                       torch.nn.Linear(64, 4, device=device))

        model = weights.bind(build(device="meta"), weights.load(path)).eval()

    For a module whose constructor takes no device, `torch.nn.utils.skip_init(cls, *args,
    device="meta")` does the same for one layer; building it normally also works, it just
    allocates and initialises weights that are thrown away at once."""
    slots = _state_slots(module)
    missing = [n for n in slots if n not in tensors]
    unexpected = [n for n in tensors if n not in slots]
    if strict and (missing or unexpected):
        def listed(names):
            return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        parts = (["missing: " + listed(missing)] if missing else []) + (
            ["unexpected: " + listed(unexpected)] if unexpected else [])
        raise ValueError("bind(): names do not match the module's state_dict (%s)"
                         % "; ".join(parts))
    import torch

    todo = []
    for name, (mod, attr, current, is_param) in slots.items():
        if name not in tensors:
            continue
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ValueError("bind(): %r is a %s, not a torch.Tensor" % (name, type(t).__name__))
        if tuple(t.shape) != tuple(current.shape):
            raise ValueError("bind(): %r has shape %s, the module expects %s"
                             % (name, tuple(t.shape), tuple(current.shape)))
        if t.dtype != current.dtype:
            raise ValueError("bind(): %r has dtype %s, the module expects %s"
                             % (name, t.dtype, current.dtype))
        todo.append((mod, attr, t, is_param))
    for mod, attr, t, is_param in todo:
        # setattr (not _parameters[...] =) so modules that track their parameters, such as
        # nn.RNN's _flat_weights, see the change.
        setattr(mod, attr, torch.nn.Parameter(t, requires_grad=False) if is_param else t)
    return module


# --- the node's cache ---------------------------------------------------------------------------

def cache_dir():
    """The node's weight cache: $GANTRY_CACHE_DIR/weights if GANTRY_CACHE_DIR is set, else
    $XDG_CACHE_HOME/gantry/weights (if set and absolute), else ~/.cache/gantry/weights.
    Not created here."""
    root = os.environ.get("GANTRY_CACHE_DIR")
    if root:
        return os.path.join(root, "weights")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if not xdg or not os.path.isabs(xdg):
        xdg = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "gantry", "weights")


def cached(name, build, directory=None):
    """`load()` of `<directory>/<name>.gw` (directory: `cache_dir()` by default), first calling
    `build()` and `save()`-ing what it returns (a dict of tensors) if the file is missing.

    Safe when several processes or threads start at once: the build runs under an exclusive
    lock on `<name>.gw.lock` beside the file, so exactly one caller builds and the others wait
    for it and then map its file. If `build()` raises, nothing is saved and the exception
    propagates (the next caller tries again). Put a version in `name` when what `build()` makes
    changes: an existing file is used as it is. Raises ValueError for a bad name (empty, or
    with "/" or NUL, or "." or ".."), and as `save()` and `load()` do."""
    if (not isinstance(name, str) or not name or "/" in name or "\0" in name
            or name in (".", "..")):
        raise ValueError("cached(): bad weights name %r (non-empty, no '/')" % (name,))
    directory = os.fspath(directory) if directory is not None else cache_dir()
    path = os.path.join(directory, name + SUFFIX)
    if os.path.exists(path):   # files appear whole (rename), so no lock is needed to read one
        return load(path)
    os.makedirs(directory, exist_ok=True)
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if not os.path.exists(path):
            tensors = build()
            if not isinstance(tensors, dict):
                raise ValueError("cached(%r): build() returned %s, not a dict of tensors"
                                 % (name, type(tensors).__name__))
            save(path, tensors, metadata={"name": name})
    finally:
        os.close(lock_fd)   # releases the lock
    return load(path)
