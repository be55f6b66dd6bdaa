"""Naive reference twins of the fast layers: plain loops in float64, for tests and for readers.

They follow the definitions literally, one output element at a time, so that the fast code in
`digitlab.nn.conv` has something independent to be checked against.

Convolution, forward: ``y[n,f,i,j] = b[f] + sum_{c,u,v} W[f,c,u,v] * xp[n,c,i*s+u,j*s+v]`` where
``xp`` is the zero-padded input.

Backward, from the chain rule on that sum (every term is a product of one weight and one input):

- ``dL/dW[f,c,u,v] = sum_{n,i,j} G[n,f,i,j] * xp[n,c,i*s+u,j*s+v]``
- ``dL/db[f] = sum_{n,i,j} G[n,f,i,j]``
- ``dL/dxp[n,c,i*s+u,j*s+v] += G[n,f,i,j] * W[f,c,u,v]`` for every (f, i, j, u, v), then the padding
  is cut away.

Max-pooling: ``y[n,c,i,j] = max_{u,v} xp[n,c,i*s+u,j*s+v]``; the whole gradient of y goes to the
first position (row-major) holding the maximum: ``dL/dxp[that position] += G[n,c,i,j]``.
"""

from __future__ import annotations

import numpy as np


def conv2d_forward(x, W, b, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    x, W = np.asarray(x, np.float64), np.asarray(W, np.float64)
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, f, oh, ow))
    for ni in range(n):
        for fi in range(f):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    y[ni, fi, i, j] = np.sum(patch * W[fi]) + (0.0 if b is None else b[fi])
    return y


def conv2d_backward(x, W, G, stride=(1, 1), padding=(0, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (dx, dW, db)."""
    x, W, G = (np.asarray(a, np.float64) for a in (x, W, G))
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    _, _, oh, ow = G.shape
    for ni in range(n):
        for fi in range(f):
            for i in range(oh):
                for j in range(ow):
                    g = G[ni, fi, i, j]
                    dW[fi] += g * xp[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    dxp[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += g * W[fi]
    db = G.sum(axis=(0, 2, 3))
    return dxp[:, :, ph:ph + h, pw:pw + w], dW, db


def maxpool2d_forward(x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Returns (y, argmax) with argmax the flat index into the padded input plane."""
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    arg = np.zeros((n, c, oh, ow), np.int64)
    for ni in range(n):
        for ci in range(c):
            for i in range(oh):
                for j in range(ow):
                    best, where = -np.inf, None
                    for u in range(kh):
                        for v in range(kw):
                            val = xp[ni, ci, i * sh + u, j * sw + v]
                            if where is None or val > best:
                                best, where = val, (i * sh + u) * xp.shape[3] + (j * sw + v)
                    y[ni, ci, i, j], arg[ni, ci, i, j] = best, where
    return y, arg


def maxpool2d_backward(x_shape, arg, G, padding=(0, 0)) -> np.ndarray:
    n, c, h, w = x_shape
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    dxp = np.zeros((n, c, hp * wp))
    G = np.asarray(G, np.float64)
    for ni in range(n):
        for ci in range(c):
            for i in range(G.shape[2]):
                for j in range(G.shape[3]):
                    dxp[ni, ci, arg[ni, ci, i, j]] += G[ni, ci, i, j]
    return dxp.reshape(n, c, hp, wp)[:, :, ph:ph + h, pw:pw + w]
