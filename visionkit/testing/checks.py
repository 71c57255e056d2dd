"""Contract checks that need no pytest: the conformance kit calls them, and so can any script.

Each function raises ``AssertionError`` with a message that says what is wrong and where.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["check_thread_safety", "results_close"]


def results_close(a: Any, b: Any) -> None:
    """Assert two results are equal up to float noise (masks: a sliver of boundary pixels may flip)."""
    assert type(a) is type(b), f"result types differ: {type(a).__name__} != {type(b).__name__}"
    da, db = a.model_dump(), b.model_dump()
    assert da.keys() == db.keys()
    for key in da:
        _assert_close(da[key], db[key], key)


def _assert_close(x: Any, y: Any, where: str) -> None:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"{where}: shape {x.shape} != {y.shape}"
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-3, err_msg=where)
        elif x.dtype == bool and x.ndim == 3 and x.size:
            # Masks: allow a sliver of boundary pixels to flip under float noise.
            assert np.mean(x != y) < 1e-3, f"{where}: masks differ on {np.mean(x != y):.2%} of pixels"
        else:
            np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, dict) and isinstance(y, dict):
        assert x.keys() == y.keys(), f"{where}: keys {sorted(x)} != {sorted(y)}"
        for k in x:
            _assert_close(x[k], y[k], f"{where}.{k}")
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


def check_thread_safety(
    call: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    threads: int = 4,
    calls: int = 3,
    assert_close: Callable[[Any, Any], None] = results_close,
    timeout: float = 120.0,
) -> None:
    """Assert that ``call`` gives the same results from ``threads`` threads at once as sequentially.

    Every thread makes ``calls`` calls; at any moment the threads work on different inputs (thread ``t``'s
    ``c``-th call takes ``inputs[(t + c) % len(inputs)]``), and a barrier starts them together so the
    calls overlap. Exceptions raised in a thread and results that differ from the sequential ones are
    both reported, with counts.
    """
    expected = [call(x) for x in inputs]
    barrier = threading.Barrier(threads)
    outcomes: list[tuple[int, Any, BaseException | None]] = []
    guard = threading.Lock()

    def worker(t: int) -> None:
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return
        for c in range(calls):
            i = (t + c) % len(inputs)
            try:
                got, err = call(inputs[i]), None
            except BaseException as exc:  # reported below, with the others
                got, err = None, exc
            with guard:
                outcomes.append((i, got, err))

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout)
    assert not any(th.is_alive() for th in pool), (
        f"calls from {threads} threads did not finish in {timeout} s"
    )
    errors = [f"{type(e).__name__}: {e}" for _, _, e in outcomes if e is not None]
    wrong = []
    for i, got, err in outcomes:
        if err is not None:
            continue
        try:
            assert_close(got, expected[i])
        except AssertionError as exc:
            wrong.append(f"input {i}: {str(exc).splitlines()[0] if str(exc) else 'differs'}")
    total = threads * calls
    assert len(outcomes) == total, f"only {len(outcomes)} of {total} concurrent calls ran"
    assert not errors and not wrong, (
        f"not thread-safe: of {total} calls from {threads} threads, {len(errors)} raised and {len(wrong)} "
        f"returned results that differ from sequential calls (set `thread_safe = False` on the class if "
        f"it cannot be made safe, so servers serialise it). First: {(errors + wrong)[:3]}"
    )
