"""Progress lines for long work: one status line rewritten in place on a terminal, plain lines in a log."""

from __future__ import annotations

import sys
import time


class StatusLine:
    """A line of progress: redrawn in place on a terminal, written every 30 s (and first and last) otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def show(self, line: str, now: float, *, edge: bool) -> None:
        """Draw ``line``; ``edge``: the first or last update (always written)."""
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
            self.stream.flush()
        elif now - self.last > 30 or edge:
            self.stream.write(line + "\n")
            self.last = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


class Progress(StatusLine):
    """A search's status: done, feasible, failed, best so far, ETA."""

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self.first_new: tuple[int, float] | None = None

    def __call__(self, search) -> None:
        now = time.monotonic()
        done, budget = search.evaluated, search.config.budget
        points = search.points.values()
        feasible = sum(1 for p in points if p.status == "ok" and not any(
            (v := p.value(t)) is None or b.violation(v) > 0 for t, b in search.checks))
        failed = sum(1 for p in points if p.status == "failed")
        primary = search.objectives[0]
        values = [p.value(primary) for p in points if p.status == "ok" and p.value(primary) is not None]
        best = (max(values) if primary.maximize else min(values)) if values else None
        new = done - search.from_store
        if new > 0 and self.first_new is None:
            self.first_new = (new, now)
        eta = ""
        if self.first_new and new > self.first_new[0]:
            rate = (now - self.first_new[1]) / (new - self.first_new[0])
            eta = f"  ETA {int(rate * (budget - done) // 60)}m{int(rate * (budget - done) % 60):02d}s"
        width = 24
        bar = "#" * int(width * done / max(budget, 1))
        line = (f"[{bar:<{width}}] {done}/{budget}  feasible {feasible}  failed {failed}"
                f"  best {primary.label} {'-' if best is None else f'{best:.4g}'}{eta}")
        self.show(line, now, edge=done in (1, budget))


class Counter(StatusLine):
    """``label  [####    ] done/total  ETA``."""

    def __init__(self, label: str, stream=None) -> None:
        super().__init__(stream)
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        rate = (now - self.t0) / max(done, 1)
        left = rate * (total - done)
        bar = "#" * int(24 * done / max(total, 1))
        line = f"{self.label}  [{bar:<24}] {done}/{total}  ETA {int(left // 60)}m{int(left % 60):02d}s"
        self.show(line, now, edge=done in (1, total))


class TrainLine(StatusLine):
    """A supernet training's status: epoch and step bar, loss, throughput, held-out accuracy of the largest
    and smallest subnets (after each epoch), ETA."""

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self.accs = "largest - / smallest -"

    def __call__(self, info: dict) -> None:
        now = time.monotonic()
        if info.get("epoch_done"):
            self.accs = f"largest {info['largest_acc']:.1f} % / smallest {info['smallest_acc']:.1f} %"
            self.show(f"epoch {info['epoch']}/{info['epochs']} done: held-out {self.accs}", now, edge=True)
            if self.tty:
                self.stream.write("\n")
            return
        done = (info["epoch"] - 1) * info["steps"] + info["step"]
        total = info["epochs"] * info["steps"]
        bar = "#" * int(24 * done / max(total, 1))
        line = (f"epoch {info['epoch']}/{info['epochs']} [{bar:<24}] step {info['step']}/{info['steps']}  "
                f"loss {info['loss']:.3f} (distill {info['distill_loss']:.3f})  {info['images_per_s']:.0f} img/s  "
                f"{self.accs}")
        self.show(line, now, edge=done == 1)
