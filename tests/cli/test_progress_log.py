import io

from napari_loopseg import progress_log
from napari_loopseg.progress_log import LineLog, duration


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_line_at_once_then_every_interval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_log.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    log = LineLog(stream)
    for seconds, fraction in [(1, 0.1), (3, 0.2), (6.5, 0.5), (9, 0.6), (12, 0.8)]:
        now[0] = 100.0 + seconds
        log(f"at {seconds}", fraction)
    assert stream.getvalue().splitlines() == [
        "loopseg: at 1, 1 s elapsed, ~9 s left",
        "loopseg: at 6.5, 6 s elapsed, ~6 s left",
        "loopseg: at 12, 12 s elapsed, ~3 s left",
    ]


def test_silent_on_a_terminal_where_the_bar_shows():
    stream = _Terminal()
    LineLog(stream)("step 1/3", 0.3)
    assert stream.getvalue() == ""


def test_duration():
    assert [duration(s) for s in (0.4, 35, 59.4, 59.6, 185, 3599, 3900)] == [
        "0 s",
        "35 s",
        "59 s",
        "1 min",
        "3 min",
        "1 h 00 min",
        "1 h 05 min",
    ]
