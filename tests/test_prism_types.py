"""PrismML Bonsai 2 formats (pybonsai.prism_types): PQ2_0 / PTQ1_0 packing and the Hadamard fold.

The layouts are those written down in vendor/patches/BONSAI2_FORMAT.md; the hand-built blocks
below were computed by hand from that document, not by the module under test.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pybonsai import prism_types as pt


def _f16_bytes(x: float) -> bytes:
    return np.array([x], dtype="<f2").tobytes()


# ---------------------------------------------------------------- sizes and constants

def test_block_geometry():
    assert (pt.GGML_TYPE_PQ2_0, pt.GGML_TYPE_PTQ1_0) == (142, 143)
    assert pt.QK_PQ2_0 == pt.QK_PTQ1_0 == 128
    assert pt.PQ2_0_BLOCK_BYTES == 2 + 128 // 4 == 34            # 2.125 bpw
    assert pt.PTQ1_0_BLOCK_BYTES == 24 + 2 + 2 == 28             # 1.75 bpw
    assert 24 * 5 + 2 * 4 == 128                                  # trits carried by qs and qh


# ---------------------------------------------------------------- PQ2_0

def test_pq2_0_hand_built_block():
    # d = 0.5 (fp16 0x3800), weights 0..3 = -1, 0, +1, +1 -> codes 0, 1, 2, 2 lowest pair first:
    # 0b10_10_01_00 = 0xA4; every other weight 0 (code 1): 0b01010101 = 0x55
    raw = bytes([0x00, 0x38, 0xA4]) + bytes([0x55]) * 31
    t = np.zeros(128, dtype=np.int8)
    t[:4] = [-1, 0, 1, 1]
    assert pt.quantize_pq2_0(t, [0.5]).tobytes() == raw
    w = pt.dequantize_pq2_0(raw, 128)
    assert w.dtype == np.float32 and w.shape == (128,)
    np.testing.assert_array_equal(w[:4], [-0.5, 0.0, 0.5, 0.5])
    assert not w[4:].any()


def test_pq2_0_every_byte_pattern_round_trips():
    # 8 blocks whose 256 code bytes are 0..255: every 4-code pattern, code 3 (+2) included
    qs = np.arange(256, dtype=np.uint8)
    codes = ((qs[:, None] >> (2 * np.arange(4))) & 3).reshape(-1).astype(np.int8) - 1
    scales = np.array([0.25, 1.0, -0.5, 2.0, 0.125, 3.0, 1e-3, 65504.0], dtype=np.float16)
    raw = pt.quantize_pq2_0(codes, scales)
    assert raw.size == 8 * 34
    np.testing.assert_array_equal(raw.reshape(8, 34)[:, 2:].reshape(-1), qs)
    got, d = pt.pq2_0_codes(raw, 1024)
    np.testing.assert_array_equal(got, codes)
    np.testing.assert_array_equal(d, scales)
    want = codes.reshape(8, 128).astype(np.float32) * scales.astype(np.float32)[:, None]
    np.testing.assert_array_equal(pt.dequantize_pq2_0(raw, 1024), want.reshape(-1))
    # and bytes -> codes -> bytes is the identity on the whole block
    assert pt.quantize_pq2_0(got, d).tobytes() == raw.tobytes()


# ---------------------------------------------------------------- PTQ1_0

def test_ptq1_0_every_base3_byte_decodes_to_its_digits():
    # all 3^5 five-digit patterns (qs bytes) and all 3^4 four-digit patterns (qh bytes, whose
    # fifth digit is 0): encode, then read each digit back the way the fork does
    seen = set()
    for digits in itertools.product(range(3), repeat=5):
        b = int(pt.ptq1_0_encode_digits(digits))
        v = sum(d * 3 ** (4 - i) for i, d in enumerate(digits))
        assert b == -(-v * 256 // 243)                            # ceil(v * 256 / 243)
        assert [int(pt.ptq1_0_decode_byte(b, n)) for n in range(5)] == list(digits)
        seen.add(b)
    assert len(seen) == 243
    for digits in itertools.product(range(3), repeat=4):
        b = int(pt.ptq1_0_encode_digits(digits + (0,)))
        assert [int(pt.ptq1_0_decode_byte(b, n)) for n in range(4)] == list(digits)
    # any byte at all (e.g. from a corrupt file) decodes to valid digits
    all_bytes = np.arange(256)
    for n in range(5):
        assert set(pt.ptq1_0_decode_byte(all_bytes, n).tolist()) <= {0, 1, 2}


def test_ptq1_0_hand_built_block():
    # d = 0.25 (fp16 0x3400), stored last. Weight 0 = +1 (digit 2), weight 120 = -1 (digit 0),
    # all others 0 (digit 1).
    #   qs[0] holds weights 0, 16, 32, 48, 64: digits 2,1,1,1,1 -> v = 202 -> ceil(202*256/243) = 213
    #   other qs bytes: digits 1,1,1,1,1 -> v = 121 -> 128
    #   qh[0] holds weights 120, 122, 124, 126 then a 0 digit: 0,1,1,1,0 -> v = 39 -> 42
    #   qh[1] holds weights 121, 123, 125, 127: 1,1,1,1,0 -> v = 120 -> 127
    raw = bytes([213]) + bytes([128]) * 23 + bytes([42, 127]) + bytes([0x00, 0x34])
    t = np.zeros(128, dtype=np.int8)
    t[0], t[120] = 1, -1
    assert pt.quantize_ptq1_0(t, [0.25]).tobytes() == raw
    w = pt.dequantize_ptq1_0(raw, 128)
    want = np.zeros(128, dtype=np.float32)
    want[0], want[120] = 0.25, -0.25
    np.testing.assert_array_equal(w, want)


def test_ptq1_0_element_order():
    # one weight at a time: weight e must land in the byte and digit the layout names
    for e in range(128):
        t = np.zeros(128, dtype=np.int8)
        t[e] = 1
        raw = pt.quantize_ptq1_0(t, [1.0])
        if e < 80:
            byte, digit = e % 16, e // 16
        elif e < 120:
            byte, digit = 16 + (e - 80) % 8, (e - 80) // 8
        else:
            byte, digit = 24 + (e - 120) % 2, (e - 120) // 2
        changed = [i for i in range(26) if raw[i] != (127 if i >= 24 else 128)]
        assert changed == [byte], e
        assert int(pt.ptq1_0_decode_byte(raw[byte], digit)) == 2


def test_ptq1_0_every_pattern_round_trips():
    # 41 blocks: qs byte i of the whole tensor carries pattern i mod 243, qh byte j pattern j mod 81
    nb = 41
    five = np.array(list(itertools.product(range(3), repeat=5)))
    four = np.array(list(itertools.product(range(3), repeat=4)))
    codes = np.empty((nb, 128), dtype=np.int8)
    for b in range(nb):
        for e in range(128):
            if e < 120:
                i = b * 24 + (e % 16 if e < 80 else 16 + (e - 80) % 8)
                codes[b, e] = five[i % 243, e // 16 if e < 80 else (e - 80) // 8] - 1
            else:
                j = b * 2 + (e - 120) % 2
                codes[b, e] = four[j % 81, (e - 120) // 2] - 1
    rng = np.random.default_rng(0)
    scales = rng.uniform(-2, 2, nb).astype(np.float16)
    raw = pt.quantize_ptq1_0(codes, scales)
    blocks = raw.reshape(nb, 28)
    assert len(set(blocks[:, :24].reshape(-1).tolist())) == 243
    assert len(set(blocks[:, 24:26].reshape(-1).tolist())) == 81
    got, d = pt.ptq1_0_codes(raw, nb * 128)
    np.testing.assert_array_equal(got, codes.reshape(-1))
    np.testing.assert_array_equal(d, scales)
    want = codes.astype(np.float32) * scales.astype(np.float32)[:, None]
    np.testing.assert_array_equal(pt.dequantize_ptq1_0(raw, nb * 128), want.reshape(-1))
    assert pt.quantize_ptq1_0(got, d).tobytes() == raw.tobytes()


def test_both_packings_give_the_same_weights():
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 2, 128 * 16).astype(np.int8)
    s = rng.uniform(0.01, 1, 16).astype(np.float16)
    np.testing.assert_array_equal(pt.dequantize_pq2_0(pt.quantize_pq2_0(t, s), t.size),
                                  pt.dequantize_ptq1_0(pt.quantize_ptq1_0(t, s), t.size))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        pt.dequantize_pq2_0(bytes(33), 128)
    with pytest.raises(ValueError):
        pt.dequantize_ptq1_0(bytes(28), 64)
    with pytest.raises(ValueError):
        pt.dequantize_ptq1_0(np.zeros(28, dtype=np.int8), 128)
    with pytest.raises(ValueError):
        pt.quantize_ptq1_0(np.full(128, 2), [1.0])                # +2 has no PTQ1_0 code
    with pytest.raises(ValueError):
        pt.quantize_pq2_0(np.zeros(128), [1.0, 2.0])
    with pytest.raises(ValueError):
        pt.quantize_pq2_0(np.zeros(100), [1.0])


# ---------------------------------------------------------------- the Hadamard fold

@pytest.mark.parametrize("block", [1, 2, 4, 8, 64, 128, 1024])
def test_hadamard_matrix_is_normalized_sylvester(block):
    h = pt.hadamard_matrix(block)
    np.testing.assert_allclose(h @ h.T, np.eye(block), atol=1e-12)
    np.testing.assert_array_equal(h, h.T)
    if block <= 128:
        r = np.arange(block)
        parity = np.array([[bin(i & j).count("1") & 1 for j in r] for i in r])
        np.testing.assert_array_equal(h, (1 - 2 * parity) / np.sqrt(block))
    # the fast transform is that matrix
    x = np.random.default_rng(block).standard_normal((3, block))
    np.testing.assert_allclose(pt.hadamard_blocks(x, block), x @ h.T, atol=1e-12)


def test_blockwise_transform_with_signs_is_orthogonal():
    width, block = 3 * 64, 64
    s = np.random.default_rng(2).choice([-1.0, 1.0], width)
    t = pt.hadamard_blocks(np.eye(width), block, s)              # row i = image of e_i
    np.testing.assert_allclose(t @ t.T, np.eye(width), atol=1e-12)
    # it is block diagonal: nothing crosses a block boundary
    mask = np.kron(np.eye(width // block), np.ones((block, block)))
    assert not np.any(t * (1 - mask))
    x = np.random.default_rng(3).standard_normal((5, width))
    np.testing.assert_allclose(pt.hadamard_blocks_inverse(pt.hadamard_blocks(x, block, s), block, s),
                               x, atol=1e-12)


def test_fold_leaves_the_product_unchanged():
    # w_stored = H(s*w) row by row; the runtime computes w_stored . H(s*x) == w . x
    rng = np.random.default_rng(4)
    n_out, width, block = 7, 4 * 128, 128
    w = rng.standard_normal((n_out, width))
    x = rng.standard_normal((3, width))
    s = rng.choice([-1, 1], width)
    w_stored = pt.hadamard_blocks(w, block, s)
    np.testing.assert_allclose(pt.hadamard_blocks(x, block, s) @ w_stored.T, x @ w.T, atol=1e-10)
    np.testing.assert_allclose(pt.hadamard_blocks_inverse(w_stored, block, s), w, atol=1e-12)


def test_folded_ternary_weights_through_both_packings():
    # a ternary weight stored in the rotated basis, packed, unpacked, multiplied by the rotated
    # activation, equals the product with the primal weight recovered as s * H(w_stored)
    rng = np.random.default_rng(5)
    n_out, width, block = 4, 2 * 256, 256
    t = rng.integers(-1, 2, (n_out, width)).astype(np.int8)
    scales = rng.uniform(0.01, 0.1, (n_out, width // 128)).astype(np.float16)
    s = rng.choice([-1, 1], width)
    x = rng.standard_normal((2, width))
    for quant, deq in ((pt.quantize_pq2_0, pt.dequantize_pq2_0),
                       (pt.quantize_ptq1_0, pt.dequantize_ptq1_0)):
        stored = deq(quant(t, scales), t.size).reshape(n_out, width).astype(np.float64)
        primal = pt.hadamard_blocks_inverse(stored, block, s)
        np.testing.assert_allclose(pt.hadamard_blocks(x, block, s) @ stored.T, x @ primal.T,
                                   atol=1e-9)


def test_hadamard_refusals():
    with pytest.raises(ValueError):
        pt.hadamard_blocks(np.zeros(96), 64)                      # block does not divide the row
    with pytest.raises(ValueError):
        pt.hadamard_blocks(np.zeros(96), 48)                      # not a power of two
    with pytest.raises(ValueError):
        pt.hadamard_blocks(np.zeros(64), 64, np.ones(32))         # sign vector of another width
    with pytest.raises(ValueError):
        pt.hadamard_blocks(np.zeros(4), 4, [1, 0, 1, 1])          # not +-1


def test_sign_vectors():
    got = pt.sign_vectors([4, 8], [1, -1, 1, 1] + [-1] * 8, block=4)
    assert sorted(got) == [4, 8]
    np.testing.assert_array_equal(got[4], [1, -1, 1, 1])
    for widths, values in (([], []), ([4], [1, 1, 1]), ([4], [1] * 5), ([4], [1, 1, 2, 1]),
                           ([6], [1] * 6)):
        with pytest.raises(ValueError):
            pt.sign_vectors(widths, values, block=4)


def test_gdn_tiled_to_grouped():
    K, r, hd = 3, 2, 4                                            # key heads, values per key, dim
    tiled_heads = [(j, k) for j in range(r) for k in range(K)]    # tiled head j*K + k
    x = np.array([[10 * j + k] * hd for j, k in tiled_heads], dtype=float).reshape(-1)
    g = pt.gdn_tiled_to_grouped(x, hd, K, r).reshape(K * r, hd)
    for k in range(K):
        for j in range(r):
            assert set(g[k * r + j]) == {10 * j + k}              # grouped head k*r + j
    with pytest.raises(ValueError):
        pt.gdn_tiled_to_grouped(np.zeros(10), hd, K, r)
