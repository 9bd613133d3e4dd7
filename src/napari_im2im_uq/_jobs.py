"""Long jobs are generators that yield progress events and return their result."""

from __future__ import annotations


def run_to_end(job, *, callback=None):
    """Run a job generator to the end and return its result (``StopIteration.value``).

    ``callback`` is called with each yielded event. The generator is closed in every case, so
    an exception (or KeyboardInterrupt) in ``callback`` cancels the job.

    Examples
    --------
    >>> def job():
    ...     yield {"step": 1}
    ...     return "done"
    >>> run_to_end(job())
    'done'
    """
    try:
        while True:
            event = next(job)
            if callback is not None:
                callback(event)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()


def steps_callback(progress):
    """Adapt ``progress(done, total)`` to a callback of ``(done, total)`` events (None stays)."""
    if progress is not None and not callable(progress):
        raise ValueError(
            f"progress must be None or a callable taking (done, total); got {progress!r}"
        )
    return None if progress is None else (lambda step: progress(*step))
