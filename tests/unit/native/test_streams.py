"""Reproducibility and independence of BetaSampler streams: seeds, threads, fork."""

from __future__ import annotations

import os
import threading

import numpy as np
import numpy.typing as npt
import pytest

from mlkube.native import BetaSampler, beta_sample

ALPHA = np.linspace(1.0, 1000.0, 64)
BETA = np.linspace(10000.0, 1.0, 64)


def _sample(sampler: BetaSampler) -> npt.NDArray[np.float64]:
    return sampler.sample(ALPHA, BETA)


def test_same_seed_same_stream(backend: str) -> None:
    first, second = BetaSampler(1234), BetaSampler(1234)
    for _ in range(3):
        np.testing.assert_array_equal(_sample(first), _sample(second))


def test_successive_calls_continue_the_stream(backend: str) -> None:
    sampler = BetaSampler(99)
    assert not np.array_equal(_sample(sampler), _sample(sampler))


def test_different_seeds_differ(backend: str) -> None:
    a, b = _sample(BetaSampler(1)), _sample(BetaSampler(2))
    assert not np.any(a == b)


def test_unseeded_samplers_differ() -> None:
    a, b = BetaSampler(), BetaSampler()
    assert a.seed != b.seed
    assert not np.any(_sample(a) == _sample(b))


def test_seed_is_taken_modulo_2_to_the_64() -> None:
    np.testing.assert_array_equal(_sample(BetaSampler(-1)), _sample(BetaSampler(2**64 - 1)))


def test_each_thread_draws_its_own_stream() -> None:
    sampler = BetaSampler(42)
    main_draw = _sample(sampler)  # the calling thread takes the first split
    results: dict[int, npt.NDArray[np.float64]] = {}
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()  # all four threads hold their state at the same time
        results[k] = np.concatenate([_sample(sampler) for _ in range(50)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    draws = [main_draw, *results.values()]
    assert len(draws) == 5
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            n = min(draws[i].size, draws[j].size)
            assert not np.any(draws[i][:n] == draws[j][:n])
    # the first thread to sample reproduces a fresh sampler's stream
    np.testing.assert_array_equal(main_draw, _sample(BetaSampler(42)))


def _draw_in_child(sampler: BetaSampler) -> npt.NDArray[np.float64]:
    """Fork; the child samples and sends its draw back through a pipe, then exits."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            data = _sample(sampler).tobytes()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return np.frombuffer(data, dtype=np.float64)


@pytest.mark.parametrize("warm", [True, False], ids=["used-before-fork", "fresh"])
def test_forked_child_does_not_repeat_its_parent(warm: bool) -> None:
    sampler = BetaSampler(77)
    if warm:
        _sample(sampler)
    first_child = _draw_in_child(sampler)
    second_child = _draw_in_child(sampler)
    parent = _sample(sampler)
    assert first_child.size == parent.size == ALPHA.size
    assert not np.any(first_child == parent)
    assert not np.any(second_child == parent)
    assert not np.any(first_child == second_child)


def test_beta_sample_compatibility_call() -> None:
    assert beta_sample(3.0, 4.0, 123) == beta_sample(3.0, 4.0, 123)
    assert beta_sample(3.0, 4.0, 123) != beta_sample(3.0, 4.0, 124)
    assert 0.0 < beta_sample(500.0, 5000.0, -9) < 1.0
    assert beta_sample(2.0, 2.0, 2**64 - 1) == beta_sample(2.0, 2.0, -1)
