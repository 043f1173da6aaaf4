"""Progress: plain lines when not a TTY, tqdm bar on a TTY."""
import io

from trustjax.experiment import Progress
from trustjax.experiment.progress import format_seconds


def test_plain_lines_when_not_a_tty(capsys):
  p = Progress(10, initial_step=2, desc="dp-train", log_every=4,
               log_seconds=1e9)
  for step in range(3, 11):
    p.update(step, loss=0.41234, eps=1.02)
  p.close()
  lines = capsys.readouterr().out.splitlines()
  # Steps 6 and 10 (every 4 from the initial step 2); 10 is also the last.
  assert [l.split()[2] for l in lines] == ["6/10", "10/10"]
  assert lines[0].startswith("dp-train step 6/10 (60.0%) ")
  assert "steps/s ETA " in lines[0]
  assert lines[0].endswith("loss=0.4123 eps=1.02")
  assert "ETA 0s" in lines[1]


def test_tty_uses_a_bar():
  class Tty(io.StringIO):
    def isatty(self):
      return True
  out = Tty()
  with Progress(5, stream=out, desc="train") as p:
    for step in range(1, 6):
      p.update(step, loss=0.5)
  text = out.getvalue()
  assert "train" in text and "5/5" in text and "loss=0.5" in text
  assert "\r" in text  # redrawn in place, not one line per step


def test_format_seconds():
  assert [format_seconds(s) for s in (5, 187, 7500, float("nan"))] == [
      "5s", "3m07s", "2h05m", "?"]
