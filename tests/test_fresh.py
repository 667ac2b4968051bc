"""generated/ is exactly what examples/ produce, and `nnderive check` says so."""
import shutil

from conftest import ROOT, run_cli


def test_check_is_clean():
    r = run_cli("check")
    assert r.returncode == 0 and r.stdout.strip() == "generated/ is up to date with examples/", r.stdout + r.stderr


def test_check_names_stale_files(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "generated", tmp_path / "generated")
    module = tmp_path / "generated" / "mlp_4_2_3.py"
    module.write_text(module.read_text().replace("np.maximum(z1, 0)", "np.maximum(z1, 0.0)"))
    (tmp_path / "generated" / "relu2_softmax.py").unlink()
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 1
    assert "mlp_4_2_3.py (differs)" in r.stdout and "relu2_softmax.py (missing)" in r.stdout


def test_build_reproduces_generated_byte_for_byte(tmp_path):
    from codegen.build import project_outputs
    for name, text in project_outputs(ROOT / "examples").items():
        assert (ROOT / "generated" / name).read_text() == text, name


def test_check_outside_the_repository_says_there_is_no_examples_folder(tmp_path):
    (tmp_path / "generated").mkdir()
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == ["nnderive: error: there is no examples/ folder here; run `nnderive "
                                             "check` in the project's top folder, or give --examples DIR"]
