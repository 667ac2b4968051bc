"""Progress of long steps: a tqdm bar on stderr only when stderr is a terminal (here a fake one),
nothing at all otherwise; derive's long steps report every step to the callback."""
import io
import sys

import pytest

from codegen import cli
from codegen.cli import Progress
from derive.spec import Dense, Network

SPEC = 'name = "tiny"\ninputs = 2\nloss = "mse"\n\n[[layers]]\nunits = 2\nactivation = "tanh"\n\n' \
       '[[layers]]\nunits = 1\nactivation = "identity"\n'


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def draws(stream) -> list[str]:
    """What was drawn, one redraw each (tqdm starts every redraw with a carriage return)."""
    return [part for part in stream.getvalue().split("\r") if part.strip()]


def test_nothing_is_written_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress("verify", stream, delay=0, redraw=0) as progress:
        progress("deriving tiny")
        progress("tiny: a case", 3, 10)
        with progress.paused():
            pass
    assert stream.getvalue() == "" and progress.bar is None


def test_a_terminal_gets_a_bar_with_the_step_and_the_line_is_cleared_at_the_end():
    stream = Terminal()
    with Progress("verify", stream, delay=0, redraw=0) as progress:
        progress("deriving tiny")
        progress("tiny: normal point, batch 2", 3, 10)
    shown = draws(stream)
    assert any(line.startswith("nnderive verify [") and line.rstrip().endswith("deriving tiny") for line in shown)
    assert any("| 3/10 [" in line and line.rstrip().endswith("tiny: normal point, batch 2") for line in shown)
    assert stream.getvalue().endswith("\r") and not stream.getvalue().split("\r")[-2].strip()   # cleared


def test_nothing_is_shown_before_the_delay():
    stream = Terminal()
    with Progress("verify", stream, delay=1e9, redraw=0) as progress:
        for i in range(5):
            progress("a step", i, 5)
    assert stream.getvalue() == ""


def test_the_redraw_thread_redraws_a_long_step_and_stops_at_close():
    stream = Terminal()
    progress = Progress("generate", stream, delay=0, redraw=0)
    progress("deriving tiny")
    before = len(draws(stream))

    class Once:                     # the thread's wait: one redraw, then stop
        calls = iter([False, True])

        def wait(self, every):
            return next(self.calls)

        def set(self):
            pass

    progress.stop = Once()
    progress._tick(0)
    assert len(draws(stream)) == before + 1 and draws(stream)[-1].rstrip().endswith("deriving tiny")
    progress.close()
    threaded = Progress("generate", Terminal(), delay=0, redraw=0.01)
    threaded.close()
    assert not threaded.ticker.is_alive()


def test_paused_takes_the_bar_off_for_standard_output(capsys):
    stream = Terminal()
    with Progress("build", stream, delay=0, redraw=0) as progress:
        progress("deriving tiny", 0, 2)
        shown = len(draws(stream))
        with progress.paused():
            print("the summary")
        assert stream.getvalue().split("\r")[-2].strip() == ""       # cleared before the print ...
        assert len(draws(stream)) == shown + 1                       # ... and drawn again after
    assert capsys.readouterr().out == "the summary\n"


def _verify(monkeypatch, tmp_path, stderr, *extra):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    monkeypatch.setattr(sys, "stderr", stderr)
    return cli.main(["verify", str(spec), *extra])


def test_verify_shows_its_steps_on_a_terminal_and_prints_the_same(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0)
    monkeypatch.setattr(cli, "PROGRESS_REDRAW", 0)
    assert _verify(monkeypatch, tmp_path, io.StringIO()) == 0
    plain = capsys.readouterr().out
    terminal = Terminal()
    assert _verify(monkeypatch, tmp_path, terminal) == 0
    assert capsys.readouterr().out == plain          # standard output does not change
    shown = draws(terminal)
    assert any(line.rstrip().endswith("deriving tiny") for line in shown)
    cases = [line for line in shown if "module check, normal point, batch 1" in line]     # cut at 80 columns
    assert cases and cases[0].startswith("nnderive verify |") and "| 0/" in cases[0]
    assert all(len(line) <= 80 for line in shown)                    # a terminal without a size: 80 wide


def test_check_module_reports_every_case(build_module):
    from derive.verify import check_module
    net = Network("tiny_progress", 2, [Dense(2, "tanh"), Dense(1, "identity")], loss="mse")
    calls = []
    report = check_module(net, build_module(net), progress=lambda text, done, total: calls.append((text, done, total)))
    assert [done for _, done, _ in calls] == list(range(report.cases))
    assert {total for _, _, total in calls} == {report.cases}


@pytest.mark.parametrize("which", ["prove", "prove_curvature"])
def test_the_proofs_report_every_step(which):
    from derive import proof
    net = Network("tiny_proof", 2, [Dense(1, "tanh")], loss="mse")
    calls = []
    getattr(proof, which)(net, progress=lambda text, done, total: calls.append((text, done, total)))
    (total,) = {t for _, _, t in calls}
    assert [done for _, done, _ in calls] == list(range(total)) and calls[0][0] == "the loss expanded into scalars"
