"""Hostile files around a spec: outputs that are devices or FIFOs, clashing outputs, unwritable
folders, full disks, and data or parameter files built to hang, exhaust memory or confuse.
Each is one line naming the file, the place and the fix (exit status 2), writes nothing, and is
bounded by sizes and counts (measured here with tracemalloc and by function calls, never by a clock)."""
import cProfile
import errno
import gzip
import io
import math
import os
import stat
import struct
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from derive import data
from derive.data import DataError, load_csv, load_mnist, load_npz, read_idx, targets
from derive.errors import OutputError, SpecError
from derive.files import check_output, write_atomic
from derive.spec import MAX_KEY_PARTS, load_spec, parse_spec
from test_hostile import assert_user_error, needs_fork, run_forked

ROOT = Path(__file__).resolve().parent.parent
VALID = ROOT / "examples" / "logistic_regression.toml"
TRAIN_SPEC = 'name = "t"\ninputs = 2\nloss = "mse"\n[[layers]]\nunits = 1\nactivation = "identity"\n'


def one_line_error(exc_info, *fragments):
    message = str(exc_info.value)
    assert "\n" not in message and len(message) < 600, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


class Bounded:
    """Function calls (Python and C, counted as conftest.count_calls counts them: the same on any machine,
    however busy) and peak Python allocations of a block."""

    def __enter__(self):
        tracemalloc.start()
        self.profile = cProfile.Profile()
        self.profile.enable()
        return self

    def __exit__(self, *exc):
        self.profile.disable()
        self.calls = sum(entry.callcount for entry in self.profile.getstats())
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# --- outputs: devices, FIFOs, clashes -------------------------------------------------------------

@needs_fork
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_latex_to_a_fifo_or_a_device_is_refused_even_with_force(tmp_path):
    fifo = tmp_path / "doc.tex"
    os.mkfifo(fifo)
    for target in (fifo, Path(os.devnull)):
        rc, out, err = run_forked(["latex", str(VALID), "-o", str(target), "--force"], tmp_path, timeout=30)
        assert rc == 2 and "not a regular file" in err and len(err.splitlines()) == 1, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat(os.devnull).st_mode)


@needs_fork
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_generate_over_a_fifo_and_check_reading_one_do_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "logistic_regression.py")
    rc, _, err = run_forked(["generate", str(VALID), "-o", str(out), "--force"], tmp_path, timeout=30)
    assert rc == 2 and "not a regular file" in err, err
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "logistic_regression.toml").write_bytes(VALID.read_bytes())
    rc, stdout, err = run_forked(["check", "--examples", str(examples), "--generated", str(out)], tmp_path,
                                 timeout=30)
    assert rc == 1 and "logistic_regression.py (is not a regular file" in stdout, (stdout, err)


@needs_fork
def test_check_compares_sizes_before_reading(tmp_path):
    """A 4 GB (sparse) file where a module is expected is reported without being read."""
    examples, generated = tmp_path / "examples", tmp_path / "generated"
    examples.mkdir()
    (examples / "logistic_regression.toml").write_bytes(VALID.read_bytes())
    rc, _, err = run_forked(["build", str(examples / "logistic_regression.toml"), "-o", str(generated)], tmp_path)
    assert rc == 0, err
    from codegen.build import _differs
    sparse = tmp_path / "sparse.md"
    with open(sparse, "wb") as f:
        f.truncate(64 << 20)
    with Bounded() as bound:                 # the comparison itself: told by the size, nothing read
        assert _differs(sparse, (generated / "logistic_regression.md").read_bytes())
    assert bound.peak < 1 << 20 and bound.calls < 100, (bound.peak, bound.calls)
    with open(generated / "logistic_regression.md", "r+b") as f:
        f.truncate(4 << 30)
    rc, stdout, err = run_forked(["check", "--examples", str(examples), "--generated", str(generated)], tmp_path)
    assert rc == 1 and "logistic_regression.md (differs)" in stdout, (stdout, err)


@needs_fork
@pytest.mark.parametrize("command", ["generate", "build"])
def test_two_specs_of_one_name_are_refused_before_writing(command, tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_bytes(VALID.read_bytes())
    b.write_bytes(VALID.read_bytes())
    rc, out, err = run_forked([command, str(a), str(b), "-o", "out"], tmp_path)
    assert_user_error(rc, out, err, tmp_path)
    assert "b.toml" in err and "a.toml" in err and "logistic_regression.py" in err
    assert not (tmp_path / "out").exists()
    rc, out, err = run_forked([command, str(a), str(a), "-o", "out"], tmp_path)   # one file named twice: fine
    assert rc == 0, err


@needs_fork
def test_train_outputs_are_checked_before_training(tmp_path):
    spec = tmp_path / "t.toml"
    spec.write_text(TRAIN_SPEC)
    csv = tmp_path / "d.csv"
    csv.write_text("".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    cases = {("--metrics", os.devnull): "character device", ("--save", str(fifo)): "FIFO",
             ("--metrics", "m.json", "--save", "m.json"): "--metrics writes too",
             ("--save", "/proc/params.npz"): "cannot write into /proc"}
    for flags, says in cases.items():
        rc, out, err = run_forked(["train", str(spec), "--data", str(csv), "--epochs", "1", *flags], tmp_path)
        assert rc == 2 and says in err and len(err.splitlines()) == 1 and out == "", (flags, err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "m.json").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError) as info:
            check_output(folder / "params.npz", "--save")
        one_line_error(info, "--save", "cannot write into")
    finally:
        folder.chmod(0o755)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    def full(f):
        f.write(b"some")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "metrics.json"
    target.write_text("old\n")
    with pytest.raises(OutputError) as info:
        write_atomic(target, full)
    one_line_error(info, "metrics.json", "No space left on device", "free some space")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_train_outputs_honour_the_umask(tmp_path):
    from derive.params import save_params
    old = os.umask(0o077)
    try:
        save_params({"W1": np.zeros((1, 2))}, tmp_path / "p.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "p.npz").st_mode) == 0o600


def test_temporary_files_of_a_killed_build_are_removed_by_the_next_generate(tmp_path):
    from codegen.build import module_outputs, write_outputs
    from derive.spec import load_spec as load
    leftovers = [".logistic_regression.tex.a1b2c3d4.tmp", ".logistic_regression.md.zzzzzzzz.tmp",
                 ".other_net.py.0000_000.tmp"]
    for name in leftovers:
        (tmp_path / name).write_text("half")
    (tmp_path / "notes.tmp").write_text("mine")
    write_outputs(module_outputs(load(VALID)), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logistic_regression.py", "notes.tmp"]


# --- TOML structure bombs ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["a" + ".a" * 20_000 + " = 1\n", "[" + ".".join(["b"] * 250_000) + "]\n",
                                  "[[" + ".".join(["c"] * 100_000) + "]]\n", '"q".' * 50_000 + "k = 1\n",
                                  "a = {" + "b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s = 1" + "}\n",
                                  "a = " + "[" * 100_000 + "]" * 100_000 + "\n"])
def test_toml_structure_bombs_are_refused_before_parsing(text):
    with Bounded() as bound, pytest.raises(SpecError) as info:
        parse_spec(text, "bomb.toml")
    one_line_error(info, "bomb.toml", "line 1")
    # the scan: about 300 calls; tomllib takes 20,000 for a key of 2,000 parts (and 16 s, 1.6 GB for this one)
    assert bound.calls < 5_000 and bound.peak < 20 << 20, (bound.calls, bound.peak)


def test_the_bound_on_calls_would_catch_tomllib_parsing_a_bomb():
    import tomllib
    with Bounded() as bound:
        tomllib.loads("a" + ".a" * 2_000 + " = 1\n")      # a tenth of the first bomb's parts
    assert bound.calls > 5_000, bound.calls


def test_toml_scan_ignores_dots_in_strings_comments_and_values():
    dots = "." * (4 * MAX_KEY_PARTS)
    text = (f'# {dots}\nname = "a{dots}"\ninputs = 3\nloss = "mse"\n[[layers]]\nunits = 2\nactivation = "c"\n'
            f'formula = """0.5*x"""\n')
    with pytest.raises(SpecError, match="not a Python identifier"):    # got past the scan to validation
        parse_spec(text, "ok.toml")


def test_a_50_mb_spec_names_the_file_once_and_gives_the_size_fix(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(50 << 20)
    with pytest.raises(SpecError) as info:
        load_spec(big)
    message = one_line_error(info, "larger than", "a spec is a few lines")
    assert message.count("big.toml") == 1 and "permission" not in message


def test_a_huge_unknown_key_keeps_the_fix():
    with pytest.raises(SpecError) as info:
        parse_spec('name = "n"\n' + "k" * 900_000 + " = 1\n", "wide.toml")
    one_line_error(info, "wide.toml", "line 2", "unknown key", "use one of")


# --- npz, IDX and CSV built to hang or exhaust memory -------------------------------------------------

def _npz_with_header(path: Path, arrays: dict):
    """An .npz whose members have the given .npy headers ({name: (shape, dtype)}) and 16 bytes of body."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (shape, dtype) in arrays.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                          "shape": shape})
            zf.writestr(f"{name}.npy", header.getvalue() + b"\0" * 16)


def test_load_refuses_a_parameter_file_by_its_headers_before_decompressing(tmp_path):
    from derive.params import load_params
    bomb = tmp_path / "bomb.npz"
    _npz_with_header(bomb, {"W1": ((2 ** 27,), "<f8"), "b1": ((1,), "<f8")})
    with Bounded() as bound, pytest.raises(DataError) as info:
        load_params(bomb, {"W1": (1, 3), "b1": (1,)})
    one_line_error(info, "bomb.npz", "W1 (134217728,)", "do not fit", "W1 (1, 3)")
    assert bound.peak < 5 << 20 and bound.calls < 5_000, (bound.peak, bound.calls)   # reading a valid file: ~760


def test_load_refuses_nan_parameters_naming_the_file(tmp_path):
    from derive.params import load_params
    path = tmp_path / "nan.npz"
    np.savez(path, W1=np.array([[np.nan, 0, 0]]), b1=np.zeros(1))
    with pytest.raises(DataError) as info:
        load_params(path, {"W1": (1, 3), "b1": (1,)})
    one_line_error(info, "nan.npz", "W1", "NaN")


@pytest.mark.parametrize("shape, says", [((2 ** 40, 2), "more than"), ((0, 2), "no examples"),
                                         ((5, 0), "no features")])
def test_npz_data_of_impossible_shape_is_one_line(tmp_path, shape, says):
    path = tmp_path / "d.npz"
    n = shape[0]
    _npz_with_header(path, {"x": (shape, "<f8"), "y": ((n,), "<i8")})
    if math.prod(shape) < 100:
        np.savez(path, x=np.zeros(shape), y=np.zeros(n, np.int64))
    with Bounded() as bound, pytest.raises(DataError) as info:
        load_npz(path)
    message = one_line_error(info, "d.npz", says)
    assert "inputs = 0" not in message and bound.peak < 5 << 20


def test_npz_with_too_many_members_is_refused_from_the_end_record(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(data.MAX_NPZ_MEMBERS + 1):
            zf.writestr(f"a{i}.npy", b"")
    with pytest.raises(DataError) as info:
        load_npz(path)
    one_line_error(info, "many.npz", "arrays, more than")


def _idx(dims, type_code=0x08, body=b""):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body


@pytest.mark.parametrize("raw, says", [
    (_idx([1] * 255), "255 dimensions"),
    (_idx([65536] * 4), "more than"),              # np.prod wraps this to 0
    (_idx([2 ** 32 - 1] * 3), "more than"),
    (gzip.compress(_idx([10, 28, 28]) + bytes(10 << 20)), "more bytes"),     # inflates past its header
    (gzip.compress(_idx([10, 28, 28]) + bytes(100)), "100 bytes"),
])
def test_idx_files_are_bounded_by_their_header(tmp_path, raw, says):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(raw)
    with Bounded() as bound, pytest.raises(DataError) as info:
        read_idx(path)
    one_line_error(info, path.name, says)
    assert bound.peak < (12 << 20) + 2 * len(raw), bound.peak


def test_mnist_train_and_test_of_different_image_sizes_is_one_line(tmp_path):
    for part, size in (("train", 28), ("t10k", 20)):
        (tmp_path / f"{part}-images-idx3-ubyte").write_bytes(_idx([2, size, size], body=bytes(2 * size * size)))
        (tmp_path / f"{part}-labels-idx1-ubyte").write_bytes(_idx([2], body=bytes(2)))
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)
    one_line_error(info, "t10k-images", "(20, 20)", "(28, 28)")


def test_a_csv_field_over_the_csv_limit_is_one_line(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("1,2\n\"" + "9" * 200_000 + "\",1\n")
    with pytest.raises(DataError) as info:
        load_csv(path)
    one_line_error(info, "wide.csv", "line 2", "not valid CSV")


@pytest.mark.parametrize("cell", ["nan", "1e308", "-inf"])
def test_non_finite_or_huge_csv_features_name_the_file_and_the_cell(tmp_path, cell):
    path = tmp_path / "f.csv"
    path.write_text(f"a,b,y\n1,2,0\n3,{cell},1\n")
    with pytest.raises(DataError) as info:
        load_csv(path)
    one_line_error(info, "f.csv", "line 3" if cell != "1e308" else "x[1, 1]")


def test_huge_npz_features_name_the_file(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x=np.array([[1.0, 1e308]]), y=np.array([0]))
    with pytest.raises(DataError) as info:
        load_npz(path)
    one_line_error(info, "f.npz", "x[0, 1]", "scale the features")


def test_a_huge_label_is_one_line_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as info:
            targets(np.array([0.0, 1e300]), n_outputs=3, loss="sparse_cce", source="l.csv")
    message = one_line_error(info, "l.csv", "1e+300 does not fit", "relabel to 0..2")
    assert "negative" not in message and "-9223372036854775808" not in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_data_files_that_are_fifos_do_not_block(tmp_path):
    fifo = tmp_path / "d.csv"
    os.mkfifo(fifo)
    for load in (load_csv, load_npz, read_idx):
        with pytest.raises(DataError) as info:
            load(fifo)
        one_line_error(info, "d.csv", "FIFO")
