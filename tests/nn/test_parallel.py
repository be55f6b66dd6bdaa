"""Batch parallelism (`digitlab.nn.parallel`): chunking, the worker map, BLAS threads, and results that
do not depend on the number of workers; BatchNorm+ReLU fusion in `Sequential`."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from digitlab.models import build, cnn_spec
from digitlab.nn import AvgPool2D, BatchNorm, Conv2D, MaxPool2D, ReLU, Sequential, SoftmaxCrossEntropy, parallel
from digitlab.nn import conv as conv_module


@pytest.fixture
def workers():
    """Set the worker count for one test; restored afterwards."""
    before = parallel.num_workers()
    yield parallel.set_num_workers
    parallel.set_num_workers(before)


@settings(max_examples=200, deadline=None, database=None)
@given(n=st.integers(0, 300), item=st.integers(1, 5000), chunk=st.integers(1, 100_000))
def test_spans_cover_the_range_in_order(n, item, chunk):
    spans = parallel.spans(n, item, chunk)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(e > s for s, e in spans) or n == 0
    if n * item <= chunk:
        assert spans == [(0, n)]
    else:
        assert all(e - s == 1 for s, e in spans) or all((e - s) * item <= chunk for s, e in spans)
        assert len(spans) >= min(n, parallel.MIN_SPANS)


def test_map_spans_keeps_order_and_gives_each_thread_its_worker(workers):
    workers(3)
    seen: dict[int, set] = {}
    lock = threading.Lock()
    meet = threading.Barrier(3, timeout=30)  # each thread's first chunk waits for the other two: all take part
    first = threading.local()

    def fn(s, e, w):
        with lock:
            seen.setdefault(w, set()).add(threading.get_ident())
        if not getattr(first, "done", False):
            first.done = True
            meet.wait()
        return (s, e, w)

    spans = [(i, i + 1) for i in range(10)]
    out = parallel.map_spans(fn, spans)
    assert [(s, e) for s, e, _ in out] == spans
    assert set(seen) == {0, 1, 2}
    assert all(len(threads) == 1 for threads in seen.values())  # a worker index is one thread at a time
    assert seen[0] == {threading.get_ident()}  # the caller is worker 0


def test_map_spans_raises_a_chunks_error_and_nested_maps_run_serially(workers):
    workers(2)

    def boom(s, e, w):
        if s == 3:
            raise KeyError("chunk 3")
        return s

    with pytest.raises(KeyError, match="chunk 3"):
        parallel.map_spans(boom, [(i, i + 1) for i in range(6)])

    def outer(s, e, w):
        return parallel.map_spans(lambda a, b, inner_w: inner_w, [(0, 1), (1, 2)])

    assert all(inner == [0, 0] for inner in parallel.map_spans(outer, [(0, 1), (1, 2)]))


def test_section_holds_blas_to_one_thread_and_restores_it():
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    with parallel.section():
        with parallel.section():
            assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
        assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def _run(layer, x, g, training=True):
    y = layer.forward(x, training).copy()
    dx = layer.backward(g).copy()
    return y, dx, {k: v.copy() for k, v in layer.grads.items()}, {k: v.copy() for k, v in layer.buffers.items()}


@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2D(3, 4, kernel_size=3, padding=1, seed=1), (7, 3, 9, 8)),
    (lambda: Conv2D(3, 4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), seed=2), (7, 3, 9, 8)),
    (lambda: BatchNorm(5), (7, 5, 6, 4)),
    (lambda: BatchNorm(5), (37, 5)),
    (lambda: MaxPool2D(2), (7, 3, 8, 8)),
    (lambda: MaxPool2D(3, 2, 1), (7, 3, 9, 8)),
    (lambda: AvgPool2D(3, 2, 1), (7, 3, 9, 8)),
])
def test_results_do_not_depend_on_the_number_of_workers(workers, monkeypatch, make, shape):
    """Tiny chunks (one item each) shared among 1, 2 or 3 workers: bit for bit the same results."""
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        workers(n)
        layer = make()
        y = layer.forward(x, True)
        g = rng.standard_normal(y.shape).astype(np.float32) if not results else results[0][4]
        results.append((*_run(layer, x, g), g))
    for other in results[1:]:
        for a, b in zip(results[0][:2], other[:2], strict=True):
            np.testing.assert_array_equal(a, b)
        for d0, d1 in zip(results[0][2:4], other[2:4], strict=True):
            for k in d0:
                np.testing.assert_array_equal(d0[k], d1[k])


def test_batchnorm_relu_fusion_gives_the_unfused_result():
    """A BatchNorm followed by a ReLU inside `Sequential` computes both in one pass; the numbers are
    those of the two layers run one after the other, and the flag does not outlive the call."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])

    def net():
        return Sequential([Conv2D(3, 3, 3, seed=4), BatchNorm(3), ReLU(), build_flat(), build_dense()],
                          input_shape=(3, 5, 5), classes=["a", "b", "c"])

    def build_flat():
        from digitlab.nn import Flatten
        return Flatten()

    def build_dense():
        from digitlab.nn import Dense
        return Dense(27, 3, seed=5)

    fused = net()
    assert fused._fused() == {2}
    loss = SoftmaxCrossEntropy()
    loss.forward(fused.forward(x, training=True), labels)
    dx_fused = fused.backward(loss.backward())
    assert fused.layers[1].relu is False

    plain = net()
    h = x
    for layer in plain.layers:
        h = layer.forward(h, True)
    loss.forward(h, labels)
    d = loss.backward()
    for layer in reversed(plain.layers):
        d = layer.backward(d)
    np.testing.assert_allclose(dx_fused, d, rtol=1e-6, atol=1e-7)
    for (name, a), b in zip(fused.named_grads().items(), plain.named_grads().values(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_cnn_training_step_is_the_same_with_one_or_two_workers(workers):
    rng = np.random.default_rng(2)
    x = rng.random((24, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 24)
    grads = []
    for n in (1, 2):
        workers(n)
        model = build(cnn_spec(dropout=0.0), seed=0)
        loss = SoftmaxCrossEntropy()
        loss.forward(model.forward(x, training=True), labels)
        model.backward(loss.backward(), input_grad=False)
        grads.append(model.named_grads())
    for name in grads[0]:
        np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)


def test_default_worker_count_follows_blas_even_when_first_asked_inside_a_section(monkeypatch):
    monkeypatch.setattr(parallel, "_workers", None)
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    with parallel.section():
        n = parallel.num_workers()
    assert n == max(1, min(min(blas, default=1), __import__("os").cpu_count() or 1))


@pytest.mark.parametrize("make, shape", [
    (lambda: MaxPool2D(2), (4, 3, 8, 8)),
    (lambda: MaxPool2D(3, 2, 1), (4, 3, 9, 8)),  # overlapping windows, padding
    (lambda: MaxPool2D(16), (3, 2, 16, 16)),  # 256 offsets: the int32 arg
])
def test_maxpool_relu_fusion_gives_the_unfused_result(make, shape):
    """MaxPool2D followed by ReLU in `Sequential` runs as one layer; with many ties and many
    non-positive window maxima, output and input gradient are exactly those of the two layers."""
    from digitlab.nn import Flatten

    rng = np.random.default_rng(3)
    # ties everywhere; every other channel shifted down, so that some maxima are <= 0 even in large windows
    x = (rng.integers(-3, 2, shape) - np.arange(shape[1]).reshape(1, -1, 1, 1) % 2).astype(np.float32)
    fused = Sequential([make(), ReLU(), Flatten()], input_shape=shape[1:])
    assert fused._fused() == {1}
    y = fused.forward(x, training=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = fused.backward(g)
    assert fused.layers[0].relu is False
    pool, relu = make(), ReLU()
    h = relu.forward(pool.forward(x, True), True)
    np.testing.assert_array_equal(y, h.reshape(len(x), -1))
    np.testing.assert_array_equal(dx, pool.backward(relu.backward(g.reshape(h.shape))))
    assert (y == 0).any() and (dx != 0).any()


def test_reused_result_buffers_never_reach_the_caller():
    """In training, `Sequential` lets layers keep their results in buffers reused on the next call;
    what it hands out (the net's output, also through a Flatten view, and dL/dx) stays the caller's,
    and two steps give the numbers of layers run one by one with fresh arrays."""
    from digitlab.nn import Flatten

    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((5, 2, 8, 8)).astype(np.float32) for _ in range(2)]

    def layers():
        return [Conv2D(2, 3, 3, seed=6), BatchNorm(3), ReLU(), MaxPool2D(2), ReLU(), Conv2D(3, 2, 3, seed=7),
                Flatten()]

    net = Sequential(layers(), input_shape=(2, 8, 8))
    outs, dxs = [], []
    for x in xs:
        y = net.forward(x, training=True)
        outs.append((y, y.copy()))
        dx = net.backward(np.ones_like(y))
        dxs.append((dx, dx.copy()))
    for kept, copy in outs + dxs:
        np.testing.assert_array_equal(kept, copy)
    assert all(not layer.reuse_outputs for layer in net.layers)
    plain = layers()
    for x, (y, _), (dx, _) in zip(xs, outs, dxs, strict=True):
        h = x
        for layer in plain:
            h = layer.forward(h, True)
        d = np.ones_like(h)
        for layer in reversed(plain):
            d = layer.backward(d)
        np.testing.assert_allclose(y, h, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dx, d, rtol=1e-5, atol=1e-6)
