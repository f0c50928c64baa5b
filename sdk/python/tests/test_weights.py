"""Tests of gantry.weights: the file format, load/bind without copies, the cache's lock, and that
mapped weights stay out of anonymous memory in a fork()ed child."""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

try:
    import numpy as np
except ImportError:   # the pyenv python3 on PATH has neither; Debian's /usr/bin/python3 has both
    raise unittest.SkipTest("gantry.weights needs numpy (run with /usr/bin/python3)")
try:
    import torch
except ImportError:
    torch = None

from gantry import weights

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_torch = unittest.skipIf(torch is None, "needs torch (run with /usr/bin/python3)")


class TempDirTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="gantry-weights-")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.path = os.path.join(self.dir, "w.gw")


def mapping_stats(path, pid="self"):
    """Sums of the /proc/PID/smaps fields (kB) over the mappings of `path`."""
    sums, in_file = {}, False
    with open("/proc/%s/smaps" % pid) as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if not fields[0].endswith(":"):   # a mapping's first line: range perms ... [path]
                in_file = len(fields) == 6 and fields[5].rstrip("\n") == path
            elif in_file and len(fields) >= 2 and fields[1].isdigit():
                sums[fields[0][:-1]] = sums.get(fields[0][:-1], 0) + int(fields[1])
    return sums


def start_child(fn):
    """fork()s a child that runs fn() and sends back what it returned, as JSON over a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def finish_child(child):
    """What the child from start_child() returned; fails the test if it failed."""
    pid, r = child
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not out:
        raise AssertionError("the child failed (wait status %d)" % status)
    return json.loads(out)


def in_child(fn):
    return finish_child(start_child(fn))


class FormatTest(TempDirTest):
    def test_numpy_round_trip_of_every_dtype_and_odd_shapes(self):
        rng = np.random.default_rng(1)
        tensors = {
            "f32": rng.standard_normal((3, 5)).astype(np.float32),
            "f16": rng.standard_normal(7).astype(np.float16),
            "f64": np.float64(2.5),                                 # a numpy scalar: 0-d
            "i64": np.arange(-4, 8, dtype=np.int64).reshape(2, 3, 2),
            "i32": np.array(-7, dtype=np.int32),                    # 0-d
            "i16": np.arange(9, dtype=">i2"),                       # big-endian in memory
            "i8": np.array([-128, 127], dtype=np.int8),
            "u8": np.zeros((0,), dtype=np.uint8),                   # empty
            "bool": np.array([[True, False, True]]),
            "empty2d": np.zeros((3, 0, 2), dtype=np.float32),
            "strided": np.arange(20, dtype=np.float32).reshape(4, 5).T,   # not contiguous
        }
        weights.save(self.path, tensors, metadata={"model": "x", "n": [1, 2]})
        back = weights.load_numpy(self.path)
        self.assertEqual(list(back), list(tensors))
        for name, want in tensors.items():
            want = np.asarray(want)
            with self.subTest(name=name):
                self.assertEqual(back[name].shape, want.shape)
                self.assertEqual(back[name].dtype.newbyteorder("="), want.dtype.newbyteorder("="))
                np.testing.assert_array_equal(back[name], want)
        self.assertEqual(weights.metadata(self.path), {"model": "x", "n": [1, 2]})

    def test_layout_matches_the_documented_format(self):
        weights.save(self.path, {"a": np.ones(3, np.float32), "b": np.zeros((), np.int8),
                                 "c": np.zeros(5000, np.uint8)})
        with open(self.path, "rb") as f:
            raw = f.read()
        self.assertEqual(raw[:8], b"GANTRYW1")
        n = int.from_bytes(raw[8:16], "little")
        header = json.loads(raw[16:16 + n].decode("utf-8"))
        self.assertEqual(header["metadata"], {})
        self.assertEqual(list(header["tensors"]), ["a", "b", "c"])
        self.assertEqual(header["tensors"]["a"], {"dtype": "float32", "shape": [3],
                                                  "offset": 4096, "nbytes": 12})
        self.assertEqual(header["tensors"]["b"]["shape"], [])
        for e in header["tensors"].values():
            self.assertEqual(e["offset"] % 4096, 0)
            self.assertGreaterEqual(e["offset"], 16 + n)
        c = header["tensors"]["c"]
        self.assertEqual(len(raw), c["offset"] + 8192)   # padded to a multiple of 4096
        self.assertEqual(np.frombuffer(raw, np.float32, 3, 4096).tolist(), [1.0, 1.0, 1.0])

    def test_a_large_header_moves_the_data_to_the_next_aligned_offset(self):
        tensors = {"layer%04d.weight" % i: np.full(2, i, np.int16) for i in range(300)}
        weights.save(self.path, tensors)
        back = weights.load_numpy(self.path)
        for name, arr in back.items():
            self.assertEqual(arr.__array_interface__["data"][0] % 4096, 0)
            np.testing.assert_array_equal(arr, tensors[name])

    def test_unsupported_values_are_clear_errors_and_write_nothing(self):
        for value in (np.zeros(2, np.complex64), np.zeros(2, np.uint16), np.array(["a"]),
                      [1.0, 2.0], "text"):
            with self.subTest(value=value), self.assertRaises(ValueError) as cm:
                weights.save(self.path, {"bad": value})
            self.assertIn("'bad'", str(cm.exception))
        with self.assertRaisesRegex(ValueError, "JSON"):
            weights.save(self.path, {}, metadata={"x": object()})
        with self.assertRaisesRegex(ValueError, "names"):
            weights.save(self.path, {"": np.zeros(1)})
        self.assertEqual(os.listdir(self.dir), [])   # no file, no temp file left

    def test_save_replaces_atomically_and_leaves_no_temp_files(self):
        weights.save(self.path, {"a": np.zeros(4, np.float32)})
        old = weights.load_numpy(self.path)["a"]   # a mapping of the old file
        weights.save(self.path, {"a": np.ones(4, np.float32)})
        self.assertEqual(os.listdir(self.dir), ["w.gw"])
        self.assertEqual(old.tolist(), [0.0] * 4)   # the old mapping still reads the old inode
        self.assertEqual(weights.load_numpy(self.path)["a"].tolist(), [1.0] * 4)

    def test_import_and_load_numpy_work_without_torch(self):
        weights.save(self.path, {"a": np.arange(3, dtype=np.int32)})
        code = ("import sys; sys.modules['torch'] = None\n"
                "from gantry import weights\n"
                "print(weights.load_numpy(sys.argv[1])['a'].tolist())\n"
                "try:\n    weights.load(sys.argv[1])\nexcept ImportError:\n    print('no torch')")
        out = subprocess.run([sys.executable, "-c", code, self.path], cwd=SDK_ROOT,
                             env=dict(os.environ, PYTHONPATH=SDK_ROOT), capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.stdout.split("\n")[:2], ["[0, 1, 2]", "no torch"], out.stderr)


class CorruptFileTest(TempDirTest):
    def write_valid(self):
        weights.save(self.path, {"a": np.arange(1000, dtype=np.float32),
                                 "b": np.arange(10, dtype=np.int64)})
        with open(self.path, "rb") as f:
            return f.read()

    def header_of(self, raw):
        n = int.from_bytes(raw[8:16], "little")
        return json.loads(raw[16:16 + n])

    def with_header(self, raw, header):
        n = int.from_bytes(raw[8:16], "little")
        text = json.dumps(header).encode()
        self.assertLessEqual(len(text), n)
        return raw[:16] + text.ljust(n) + raw[16 + n:]

    def assert_rejected(self, contents, why):
        with open(self.path, "wb") as f:
            f.write(contents)
        for load in (weights.load_numpy, weights.metadata):
            with self.assertRaises(ValueError) as cm:
                load(self.path)
            self.assertIn(self.path, str(cm.exception))
            self.assertRegex(str(cm.exception), why)

    def test_bad_files_are_rejected_with_the_file_named(self):
        raw = self.write_valid()
        h = self.header_of(raw)

        def edited(name, **changes):
            e = json.loads(json.dumps(h))
            e["tensors"][name].update(changes)
            return self.with_header(raw, e)

        cases = [
            (b"", "magic"),
            (b"GANTRY", "magic"),
            (b"PK\x03\x04" + raw[4:], "magic"),
            (raw[:12], "truncated"),
            (raw[:8] + (10**9).to_bytes(8, "little") + raw[16:], "header length"),
            (raw[:100], "header length"),
            (raw[:16] + b"\xff" + raw[17:], "JSON"),
            (raw[:16] + b"[" + raw[17:], "JSON"),
            (self.with_header(raw, {"tensors": []}), "tensors"),
            (raw[:-4096], "past the end"),   # truncated data
            (edited("a", dtype="complex64"), "dtype"),
            (edited("a", shape=[999]), "nbytes"),
            (edited("a", shape=[-1000]), "shape"),
            (edited("a", offset=h["tensors"]["a"]["offset"] + 4), "aligned"),
            (edited("a", offset=0), "aligned"),
            (edited("b", offset=h["tensors"]["a"]["offset"]), "overlap"),
            (edited("a", nbytes="4000"), "nbytes"),
        ]
        for contents, why in cases:
            with self.subTest(why=why, size=len(contents)):
                self.assert_rejected(contents, why)

    def test_a_missing_file_is_an_os_error(self):
        with self.assertRaises(FileNotFoundError):
            weights.load_numpy(os.path.join(self.dir, "nope.gw"))


@needs_torch
class TorchTest(TempDirTest):
    def test_round_trip_of_every_torch_dtype(self):
        g = torch.Generator().manual_seed(3)
        tensors = {
            "float32": torch.randn(4, 3, generator=g),
            "float16": torch.randn(5, generator=g).half(),
            "bfloat16": torch.randn(2, 3, generator=g).bfloat16(),
            "bf16_scalar": torch.tensor(1.5, dtype=torch.bfloat16),
            "float64": torch.tensor(3.25, dtype=torch.float64),
            "int64": torch.arange(-3, 3),
            "int32": torch.arange(6, dtype=torch.int32).reshape(1, 2, 3),
            "int16": torch.tensor([-32768, 32767], dtype=torch.int16),
            "int8": torch.tensor([-1], dtype=torch.int8),
            "uint8": torch.empty(0, 7, dtype=torch.uint8),
            "bool": torch.tensor([True, False]),
            "transposed": torch.arange(12.0).reshape(3, 4).t(),
            "grad": torch.ones(2, requires_grad=True),
        }
        weights.save(self.path, tensors)
        back = weights.load(self.path)
        self.assertEqual(list(back), list(tensors))
        for name, want in tensors.items():
            with self.subTest(name=name):
                got = back[name]
                self.assertEqual(got.dtype, want.dtype)
                self.assertEqual(got.shape, want.shape)
                self.assertTrue(torch.equal(got, want.detach()))
                self.assertFalse(got.requires_grad)
                if got.numel():
                    self.assertEqual(got.data_ptr() % 4096, 0)
        self.assertEqual(weights.load_numpy(self.path)["bfloat16"].dtype, np.uint16)

    def test_unsupported_torch_dtypes_are_clear_errors(self):
        for t in (torch.zeros(2, dtype=torch.complex64), torch.zeros(2, device="meta"),
                  torch.zeros(2, 2).to_sparse()):
            with self.subTest(t=t.dtype), self.assertRaisesRegex(ValueError, "'x'"):
                weights.save(self.path, {"x": t})

    def test_loaded_tensors_are_copy_on_write(self):
        weights.save(self.path, {"a": torch.zeros(1024)})
        a = weights.load(self.path)["a"]
        a.add_(1)
        self.assertEqual(float(weights.load(self.path)["a"].sum()), 0.0)   # file unchanged
        self.assertEqual(float(a.sum()), 1024.0)


def mlp(device=None):
    return torch.nn.Sequential(torch.nn.Linear(8, 16, device=device), torch.nn.ReLU(),
                               torch.nn.Linear(16, 3, device=device),
                               torch.nn.BatchNorm1d(3, device=device))


@needs_torch
class BindTest(TempDirTest):
    def setUp(self):
        super().setUp()
        torch.manual_seed(0)
        self.ref = mlp()
        with torch.no_grad():   # non-default buffers, so binding them is visible
            self.ref[3].running_mean.uniform_()
            self.ref[3].running_var.uniform_(0.5, 2)
            self.ref[3].num_batches_tracked.fill_(5)
        self.ref.eval()
        weights.save(self.path, self.ref.state_dict())
        self.tensors = weights.load(self.path)

    def test_bound_module_matches_load_state_dict_without_copying(self):
        other = mlp()
        other.load_state_dict(self.ref.state_dict())
        bound = weights.bind(mlp(device="meta"), self.tensors).eval()
        x = torch.randn(5, 8)
        with torch.no_grad():
            self.assertTrue(torch.equal(bound(x), other.eval()(x)))
        for name, t in bound.state_dict().items():
            self.assertEqual(t.data_ptr(), self.tensors[name].data_ptr(), name)   # no copy
            self.assertEqual(t.device.type, "cpu")
        self.assertTrue(all(not p.requires_grad for p in bound.parameters()))
        self.assertEqual(len(list(bound.parameters())), 6)
        self.assertEqual(int(bound[3].num_batches_tracked), 5)

    def test_strict_names(self):
        missing = dict(self.tensors)
        del missing["2.bias"]
        with self.assertRaisesRegex(ValueError, r"missing: 2\.bias"):
            weights.bind(mlp(device="meta"), missing)
        extra = dict(self.tensors, **{"9.weight": torch.zeros(1)})
        with self.assertRaisesRegex(ValueError, r"unexpected: 9\.weight"):
            weights.bind(mlp(device="meta"), extra)
        m = weights.bind(mlp(), missing, strict=False)   # the rest is bound
        self.assertEqual(m[0].weight.data_ptr(), self.tensors["0.weight"].data_ptr())

    def test_shape_and_dtype_mismatches_raise_and_change_nothing(self):
        m = mlp()
        before = {k: v.data_ptr() for k, v in m.state_dict().items()}
        bad_shape = dict(self.tensors, **{"2.weight": torch.zeros(3, 17)})
        with self.assertRaisesRegex(ValueError, r"'2\.weight' has shape \(3, 17\)"):
            weights.bind(m, bad_shape)
        bad_dtype = dict(self.tensors, **{"0.bias": self.tensors["0.bias"].double()})
        with self.assertRaisesRegex(ValueError, r"'0\.bias' has dtype torch\.float64"):
            weights.bind(m, bad_dtype)
        self.assertEqual({k: v.data_ptr() for k, v in m.state_dict().items()}, before)


class CacheDirTest(unittest.TestCase):
    def test_environment(self):
        home = os.path.expanduser("~")
        cases = [({"GANTRY_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}, "/c/weights"),
                 ({"XDG_CACHE_HOME": "/x"}, "/x/gantry/weights"),
                 ({"XDG_CACHE_HOME": "relative"}, home + "/.cache/gantry/weights"),
                 ({}, home + "/.cache/gantry/weights")]
        for env, want in cases:
            clean = {k: v for k, v in os.environ.items()
                     if k not in ("GANTRY_CACHE_DIR", "XDG_CACHE_HOME")}
            with self.subTest(env=env), mock.patch.dict(os.environ, dict(clean, **env),
                                                        clear=True):
                self.assertEqual(weights.cache_dir(), want)


@needs_torch
class CachedTest(TempDirTest):
    def setUp(self):
        super().setUp()
        patch = mock.patch.dict(os.environ, {"GANTRY_CACHE_DIR": self.dir})
        patch.start()
        self.addCleanup(patch.stop)

    def test_builds_once_then_maps_the_file(self):
        calls = []

        def build():
            calls.append(1)
            return {"w": torch.arange(4.0)}

        first = weights.cached("m-v1", build)
        second = weights.cached("m-v1", build)
        self.assertEqual(len(calls), 1)
        self.assertTrue(torch.equal(first["w"], second["w"]))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "weights", "m-v1.gw")))
        other = weights.cached("m", build, directory=os.path.join(self.dir, "elsewhere"))
        self.assertEqual(len(calls), 2)
        self.assertTrue(torch.equal(other["w"], first["w"]))

    def test_bad_names(self):
        for name in ("", "a/b", "..", ".", "a\0b", None):
            with self.subTest(name=name), self.assertRaisesRegex(ValueError, "bad weights name"):
                weights.cached(name, lambda: {})

    def test_a_failed_build_saves_nothing(self):
        def build():
            raise RuntimeError("no")
        with self.assertRaisesRegex(RuntimeError, "no"):
            weights.cached("m", build)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "weights", "m.gw")))
        with self.assertRaisesRegex(ValueError, "not a dict"):
            weights.cached("m", lambda: [1])
        self.assertEqual(float(weights.cached("m", lambda: {"a": torch.ones(2)})["a"].sum()), 2)

    def test_concurrent_processes_build_once(self):
        log = os.path.join(self.dir, "builds")
        go_r, go_w = os.pipe()

        def contender():
            os.read(go_r, 1)   # both start together

            def build():
                with open(log, "a") as f:
                    f.write("%d\n" % os.getpid())
                time.sleep(0.3)   # a wide window for the other to race in
                return {"w": torch.arange(1000.0)}

            return float(weights.cached("shared", build)["w"].sum())

        children = [start_child(contender) for _ in range(2)]
        os.write(go_w, b"xx")
        results = [finish_child(c) for c in children]
        os.close(go_r)
        os.close(go_w)
        self.assertEqual(results, [499500.0, 499500.0])
        with open(log) as f:
            self.assertEqual(len(f.read().split()), 1, "built more than once")
        self.assertEqual(sorted(os.listdir(os.path.join(self.dir, "weights"))),
                         ["shared.gw", "shared.gw.lock"])


@needs_torch
class SharingTest(TempDirTest):
    """The point of the module: a fork()ed child reads the parent's weights from the page cache,
    not from anonymous (copy-on-write) memory it would have to fault in page by page."""

    def test_forked_child_reads_weights_from_the_page_cache(self):
        size_kb = 4 * 1024   # 4 MiB in two tensors
        weights.save(self.path, {"a": torch.randn(512, 1024), "b": torch.randn(1024, 512)})
        tensors = weights.load(self.path)
        total = sum(float(t.sum()) for t in tensors.values())   # the parent touches every page
        parent = mapping_stats(self.path)
        self.assertGreaterEqual(parent.get("Rss", 0), size_kb)
        self.assertEqual(parent.get("Anonymous"), 0, parent)

        def read_all():
            got = sum(float(t.sum()) for t in tensors.values())
            after_read = mapping_stats(self.path)
            tensors["a"][0, 0] = 1.0   # one write copies one page into anonymous memory
            return got, after_read, mapping_stats(self.path)

        got, child, after_write = in_child(read_all)
        self.assertEqual(got, total)
        self.assertGreaterEqual(child.get("Rss", 0), size_kb, child)
        self.assertEqual(child.get("Anonymous"), 0, child)
        # The pages are the parent's too: counted as shared, not private, in the child.
        shared = child.get("Shared_Clean", 0) + child.get("Shared_Dirty", 0)
        self.assertGreaterEqual(shared, size_kb, child)
        self.assertLess(child["Pss"], child["Rss"], child)
        # The measurement can see anonymous pages: the write made exactly one.
        self.assertEqual(after_write.get("Anonymous"), 4, after_write)


if __name__ == "__main__":
    unittest.main()
