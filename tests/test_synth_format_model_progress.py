"""What the format-model build shows while it trains: a bar with loss and ETA on a terminal, or when
asked; elsewhere one line at the end, never a line per step."""

from __future__ import annotations

import io
import re

import pytest

from ipt_engine.synth.format_model import Recipe, _train, corpus_texts, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stderr", "progress", "shown"), [
    (Terminal, None, True), (io.StringIO, None, False),  # by default: only on a terminal
    (io.StringIO, True, True), (Terminal, False, False),  # asked for, either way
])
def test_the_bar_shows_on_a_terminal_or_when_asked(monkeypatch, stderr, progress, shown):
    err = stderr()
    monkeypatch.setattr("sys.stderr", err)
    bar = progress_bar(5, progress)
    for loss in (4.5, 3.25, 2.125):
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    out = err.getvalue()
    if shown:
        last = out.split("\r")[-1]
        assert last.startswith("format model:") and " 3/5 " in last and "loss=2.125" in last
        assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", last)  # elapsed<remaining: the ETA
    else:
        assert out == ""


@pytest.fixture(scope="module")
def base():
    pytest.importorskip("torch")
    from ipt_engine.assets import tiny_model_dir

    return tiny_model_dir("llama", num_hidden_layers=Recipe().num_hidden_layers)


TINY = Recipe(steps=2, batch_size=1, max_rounds=1, max_seq_len=384, max_long_words=60)


def test_a_build_in_a_log_writes_one_line(base, tmp_path, capsys):
    _train(base, corpus_texts()[:8], TINY, tmp_path / "model", progress=None)  # stderr captured: no tty
    err = capsys.readouterr().err
    assert re.fullmatch(r"format model: 2 steps in \d+s, final loss \d+\.\d{3}\n", err)
    assert (tmp_path / "model" / "config.json").is_file()


def test_a_build_asked_for_progress_shows_the_loss_of_each_step(base, tmp_path, capsys):
    _train(base, corpus_texts()[:8], TINY, tmp_path / "model", progress=True)
    frames = capsys.readouterr().err.split("\r")
    steps = {m.group(1) for f in frames if (m := re.search(r" (\d)/2 \[.*loss=\d+\.\d{3}", f))}
    assert steps == {"1", "2"}  # a redraw for each finished step, each with that step's loss
    assert "steps in" not in "".join(frames)  # the bar's last frame is the summary; no extra line
