"""Hostile spec file names: a generated module, document or data file never depends on how a reader
decodes spec-controlled text. Every name is generated into a module (imported in a fresh interpreter:
nothing may run), a LaTeX document (compiled with pdflatex where installed) and a Markdown document
(the name stays inside its code span and the header comment)."""
import os
import re
import shutil
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from codegen.build import module_outputs, write_outputs
from codegen.document import document_outputs
from derive.errors import SpecError
from derive.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "examples" / "logistic_regression.toml").read_bytes()
MARKER = "PWNED"
PAYLOAD = "os.system('touch PWNED')"

# Each would, copied raw into a generated file, change how Python, TeX or Markdown read it.
NAMES = [
    r"coding:unicode_escape\nimport os\n" + PAYLOAD + r"\n#.toml",        # the reported exploit
    r"coding:raw_unicode_escape\u000aimport os\u000a" + PAYLOAD + r"\u000a#.toml",
    "coding:utf-7 +AAo-import os+AAo-" + PAYLOAD + "+AAo-#.toml",
    "coding:utf_16.toml",
    "-*- coding: latin-1 -*-.toml",
    "vim: set fileencoding=unicode_escape :.toml",
    r"# coding=unicode_escape \x0aimport os\x0a" + PAYLOAD + ".toml",
    "quote\"s and 'apostrophes'.toml",
    'triple""" docstring \'\'\'.toml',
    r"back\slash\\es\.toml",
    r"ends in a backslash\\",
    r"\end{document}\input{PWNED}.toml",
    r"\immediate\write18{touch PWNED}.toml",
    "^^M^^J\\catcode`\\%=12 newline via TeX.toml",
    "%&latex % comment & $math$ # _ ~ ^ {.toml",
    "<img src=x onerror=alert(1)> <script>alert(1)<\\script>.toml",
    "--> <!-- --!> <b>bold<\\b> *em* _u_ [link](http:x) ![i](x).toml",
    "`code` ``more`` |table|pipe| $x$ $$y$$.toml",
    "$(touch PWNED) `touch PWNED` ${HOME}.toml",
    "\u00e9 \u00fc \u2211 \u540d\u524d \U0001f600.toml",
    "two\nlines.toml",                     # control characters: refused in one line
    "carriage\rreturn.toml",
    "\u2028line separator\u2029.toml",
    "\u202eright-to-left override.toml",
    "\x85next line.toml",
    "tab\there.toml",
    "bad utf-8 \udcff\udcfe.toml",           # bytes that are not UTF-8 (surrogate-escaped)
    "x" * 240 + ".toml",
]


def _write(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / name
    with open(os.fsencode(path), "wb") as f:
        f.write(SPEC)
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """name -> (folder, outputs) for every name that loads; name -> SpecError message otherwise."""
    base = tmp_path_factory.mktemp("names")
    results = {}
    for i, name in enumerate(NAMES):
        path = _write(base / f"n{i}", name)
        try:
            net = load_spec(path)
        except SpecError as e:
            results[name] = str(e)
            continue
        outputs = {**module_outputs(net), **document_outputs(net)}
        out = path.parent / "out"
        write_outputs(outputs, out)
        results[name] = (out, outputs)
    plain = _write(base / "plain", "plain.toml")
    net = load_spec(plain)
    results[None] = (plain.parent, {**module_outputs(net), **document_outputs(net)})
    return results


def test_most_names_generate_and_the_rest_are_one_line_errors(generated):
    refused = {name: msg for name, msg in generated.items() if isinstance(msg, str)}
    assert len(refused) <= 7, refused
    for name, msg in refused.items():
        assert "\n" not in msg and "\r" not in msg and "control characters" in msg, msg
        assert msg.isprintable() and msg.isascii(), msg


def _changed_lines(text: str, plain: str) -> list[tuple[int, str]]:
    a, b = text.split("\n"), plain.split("\n")
    assert len(a) == len(b), "a file name changed the number of lines"
    return [(i, x) for i, (x, y) in enumerate(zip(a, b)) if x != y]


def _loaded():
    return [n for n in NAMES if n is not None]


def test_module_lines_1_and_2_never_hold_the_name(generated):
    _, plain = generated[None]
    for name in _loaded():
        if isinstance(generated[name], str):
            continue
        out, outputs = generated[name]
        text = outputs["logistic_regression.py"]
        changed = _changed_lines(text, plain["logistic_regression.py"])
        assert [i for i, _ in changed] == [2], (name, changed)      # only line 3: "# Spec: '...'"
        line = changed[0][1]
        assert line.startswith("# Spec: ") and line.isascii() and line.isprintable()
        with open(out / "logistic_regression.py", "rb") as f:
            assert tokenize.detect_encoding(f.readline)[0] == "utf-8"


def test_every_module_imports_in_a_fresh_interpreter_and_runs_nothing(generated):
    folders = [generated[n][0] for n in _loaded() if not isinstance(generated[n], str)]
    script = (
        "import importlib.util, os, sys\n"
        "import numpy as np\n"
        "for folder in sys.argv[1:]:\n"
        "    os.chdir(folder)\n"
        "    spec = importlib.util.spec_from_file_location('m', os.path.join(folder, 'logistic_regression.py'))\n"
        "    m = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(m)\n"
        "    p = m.init_params()\n"
        "    assert m.predict(p, np.zeros((2, 3))).shape == (2, 1)\n"
        "    assert not os.path.exists('PWNED'), folder\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, *map(str, folders)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"ok {len(folders)}"
    for folder in folders:
        assert not list(folder.parent.rglob(MARKER)), folder


def _one_comment(line: str):
    assert line.startswith("<!-- ") and line.endswith(" -->"), line
    inner = line[4:-3]
    assert "--" not in inner and "<" not in inner and ">" not in inner, line


def _code_span(line: str, prefix: str, suffix: str):
    assert line.startswith(prefix) and line.endswith(suffix), line
    span = line[len(prefix): len(line) - len(suffix)]
    fence = re.match(r"`+", span).group()
    assert span.endswith(fence) and len(span) > 2 * len(fence)
    assert fence not in span[len(fence): -len(fence)].replace(fence + "`", ""), line   # no early close


def test_markdown_keeps_the_name_in_the_header_comment_and_a_code_span(generated):
    _, plain = generated[None]
    plain_md = plain["logistic_regression.md"].split("\n")
    for name in _loaded():
        if isinstance(generated[name], str):
            continue
        md = generated[name][1]["logistic_regression.md"]
        changed = _changed_lines(md, plain["logistic_regression.md"])
        where = next(i for i, line in enumerate(plain_md) if "`plain.toml`" in line)
        assert [i for i, _ in changed] == [0, where], (name, changed)
        _one_comment(changed[0][1])
        assert changed[0][1].isascii()
        prefix, suffix = plain_md[where].split("`plain.toml`")
        _code_span(changed[1][1], prefix, suffix)


def test_latex_keeps_the_name_in_the_header_comment_and_escaped_text(generated):
    _, plain = generated[None]
    for name in _loaded():
        if isinstance(generated[name], str):
            continue
        tex = generated[name][1]["logistic_regression.tex"]
        changed = _changed_lines(tex, plain["logistic_regression.tex"])
        assert len(changed) == 2 and changed[0][0] == 0 and changed[1][1].startswith("\\author{"), (name, changed)
        header = changed[0][1]
        assert header.startswith("% Code generated by nnderive from ") and header.isascii(), header
        author = changed[1][1]
        assert author.isascii() and "\\end{document}" not in author and "\\input" not in author
        assert "\\write" not in author and "^^" not in author and "%" not in author.replace("\\%", "")


def _pdflatex():
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: .ci/run must install texlive-latex-base")
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base)")
    return exe


def test_every_latex_document_compiles_and_runs_nothing(generated, tmp_path):
    exe = _pdflatex()
    texts = {i: generated[n][1]["logistic_regression.tex"] for i, n in enumerate(_loaded())
             if not isinstance(generated[n], str)}

    def compile_one(item):
        i, text = item
        folder = tmp_path / f"doc{i}"
        folder.mkdir()
        (folder / "doc.tex").write_text(text, encoding="utf-8")
        run = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "-draftmode",
                              "doc.tex"], cwd=folder, capture_output=True, text=True, errors="replace",
                             timeout=120)
        errors = [line for line in run.stdout.splitlines() if line.startswith("!")]
        return i, run.returncode, errors, folder

    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, code, errors, folder in pool.map(compile_one, texts.items()):
            assert code == 0, (_loaded()[i], errors)
            assert not list(folder.rglob(MARKER))


def test_the_commands_that_import_the_module_run_nothing(tmp_path):
    """build, verify and train import the module they generate: the reported exploit, through the CLI."""
    name = NAMES[0]
    runs = []
    for command in (["build", "{spec}", "-o", "out"], ["verify", "{spec}"]):
        work = tmp_path / command[0]
        spec = _write(work, name)
        argv = [a.format(spec=spec.name) for a in command]
        runs.append((work, subprocess.Popen([sys.executable, "-m", "codegen.cli", *argv], cwd=work,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for work, proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert not list(work.rglob(MARKER)), "the file name ran as code"
    if (tmp_path / "build" / "out" / "logistic_regression.py").exists():
        run = subprocess.run([sys.executable, "-c", "import logistic_regression"], cwd=tmp_path / "build" / "out",
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert not list((tmp_path / "build").rglob(MARKER))
