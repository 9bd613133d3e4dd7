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


def relay(job, see):
    """Pass a job's events on, each as ``see(event)`` returns it; return the job's result.

    For a job that runs another one and keeps something of its events (``model = yield from
    relay(job, see)``). The inner job is closed in every case, so closing the outer one
    cancels it.

    Examples
    --------
    >>> def job():
    ...     yield {"step": 1}
    ...     return "done"
    >>> seen = []
    >>> outer = relay(job(), lambda e: seen.append(e["step"]) or {"phase": "train", **e})
    >>> list(outer), seen
    ([{'phase': 'train', 'step': 1}], [1])
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            yield see(event)
    finally:
        job.close()


def steps_callback(progress):
    """Adapt ``progress(done, total)`` to a callback of ``(done, total)`` events (None stays)."""
    if progress is not None and not callable(progress):
        raise ValueError(
            f"progress must be None or a callable taking (done, total); got {progress!r}"
        )
    return None if progress is None else (lambda step: progress(*step))
