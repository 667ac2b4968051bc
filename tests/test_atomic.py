"""Nothing lost, nothing half-written: generation killed or failing midway leaves every old file intact
(or fully new), leftover temporary files are cleaned by the next write, and files nnderive did not
write are never overwritten without --force."""
import errno
import os
import signal
import sys

import pytest

import codegen.build as build
from codegen import cli
from derive.errors import OutputError
from derive.spec import load_spec

SPEC = 'name = "{name}"\ninputs = {inputs}\nloss = "bce"\n\n[[layers]]\nunits = 1\nactivation = "sigmoid"\n'
NAMES = ["net_a", "net_b", "net_c"]
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _specs(folder, inputs):
    folder.mkdir(exist_ok=True)
    paths = []
    for name in NAMES:
        path = folder / f"{name}.toml"
        path.write_text(SPEC.format(name=name, inputs=inputs))
        paths.append(path)
    return paths


def _outputs(paths):
    out = {}
    for p in paths:
        out.update(build.module_outputs(load_spec(p)))
    return out


@pytest.fixture
def scene(tmp_path):
    """generated/ holds the old modules (3 inputs); the specs now say 4 inputs."""
    out = tmp_path / "generated"
    old = _outputs(_specs(tmp_path / "old", 3))
    build.write_outputs(old, out)
    new_specs = _specs(tmp_path / "new", 4)
    new = _outputs(new_specs)
    assert all(old[k] != new[k] for k in old)
    return out, old, new, new_specs


def _state(out, old, new):
    """Per output: 'old' or 'new' (byte-identical), anything else is a failure; plus the temp files."""
    states = {}
    for name in old:
        text = (out / name).read_bytes().decode()
        states[name] = "old" if text == old[name] else "new" if text == new[name] else "MIXED"
    temps = sorted(p.name for p in out.iterdir() if build.is_temporary(p))
    return states, temps


def _killed_generation(argv, patch):
    """Run `nnderive ARGV` in a child process that `patch` arranges to SIGKILL itself midway."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            patch()
            cli.main(argv)
        finally:
            os._exit(3)       # not killed: the test fails on the status
    _, status = os.waitpid(pid, 0)
    return status


@needs_fork
def test_killed_after_the_first_rename_leaves_each_file_old_or_new(scene):
    out, old, new, specs = scene

    def die_after_first_rename():
        real = os.replace

        def replace(src, dst):
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace

    status = _killed_generation(["generate", *map(str, specs), "-o", str(out)], die_after_first_rename)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    states, temps = _state(out, old, new)
    assert sorted(states.values()) == ["new", "old", "old"], states
    assert len(temps) == 2          # the two fully written files that were not renamed yet
    # the next generation finishes the job and removes the leftovers
    build.write_outputs(new, out)
    states, temps = _state(out, old, new)
    assert set(states.values()) == {"new"} and temps == []


@needs_fork
def test_killed_while_writing_a_file_leaves_every_old_file_intact(scene):
    out, old, new, specs = scene

    def die_halfway_through_the_second_file():
        real = os.fdopen
        count = [0]

        def fdopen(fd, *args, **kwargs):
            f = real(fd, *args, **kwargs)
            count[0] += 1
            if count[0] == 2:
                write = f.write

                def half(text):
                    write(text[: len(text) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

                f.write = half
            return f

        os.fdopen = fdopen

    status = _killed_generation(["generate", *map(str, specs), "-o", str(out)], die_halfway_through_the_second_file)
    assert os.WIFSIGNALED(status)
    states, temps = _state(out, old, new)
    assert set(states.values()) == {"old"}, states
    assert len(temps) == 2          # one complete, one half-written: neither is a module anyone imports
    build.write_outputs(new, out)
    states, temps = _state(out, old, new)
    assert set(states.values()) == {"new"} and temps == []


def test_a_failure_midway_leaves_every_old_file_and_no_temporary_file(scene, monkeypatch):
    out, old, new, _ = scene
    from derive import files
    real = files._write_temp
    calls = []

    def disk_full_on_the_second_file(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(files, "_write_temp", disk_full_on_the_second_file)
    with pytest.raises(OutputError, match="No space left on device"):
        build.write_outputs(new, out)
    states, temps = _state(out, old, new)
    assert set(states.values()) == {"old"} and temps == []


def test_an_exception_midway_leaves_every_old_file(scene, monkeypatch):
    out, old, new, _ = scene
    real = os.replace
    calls = []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.write_outputs(new, out)
    monkeypatch.undo()
    states, temps = _state(out, old, new)
    assert sorted(states.values()) == ["new", "old", "old"] and temps == []


def test_files_without_the_header_are_not_overwritten_without_force(scene):
    out, old, new, _ = scene
    mine = out / "net_b.py"
    mine.write_text("# my own hand-written module\n")
    with pytest.raises(OutputError, match="not generated by nnderive.*--force"):
        build.write_outputs(new, out)
    assert mine.read_text() == "# my own hand-written module\n"
    states, _ = _state(out, {k: v for k, v in old.items() if k != "net_b.py"}, new)
    assert set(states.values()) == {"old"}     # refused before anything was written
    build.write_outputs(new, out, force=True)
    assert mine.read_text() == new["net_b.py"]


def test_check_ignores_leftover_temporary_files(tmp_path):
    examples, generated = tmp_path / "examples", tmp_path / "generated"
    _specs(examples, 3)
    build.write_outputs(build.project_outputs(examples), generated)
    assert build.stale_files(examples, generated) == []
    leftover = generated / ".net_a.py.k3j_x9q2.tmp"
    leftover.write_text(SPEC)
    (generated / ".net_b.py.abcdefgh.tmp").write_text("# Code generated by nnderive, half")
    assert build.is_temporary(leftover)
    assert build.stale_files(examples, generated) == []


def test_temporary_files_of_other_names_are_left_alone(scene):
    out, old, new, _ = scene
    other = out / ".notes.txt.abcdefgh.tmp"
    other.write_text("not ours")
    build.write_outputs(new, out)
    assert other.exists()
