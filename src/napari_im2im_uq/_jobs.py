"""Long jobs are generators that yield ``(done, total)`` and return their result."""

from __future__ import annotations


def run_to_end(gen, progress=None):
    """Run a job generator to the end and return its result (``StopIteration.value``).

    ``progress`` is called with each yielded ``(done, total)``; the generator is closed in
    every case (an exception or KeyboardInterrupt in ``progress`` cancels the job).
    """
    try:
        while True:
            step = next(gen)
            if progress is not None:
                progress(*step)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
