"""Winograd F(2x2, 3x3) and F(4x4, 3x3) for packed 3x3 stride-1 convolutions on the CPU (knob ``conv_algo``).

A 3x3 convolution computes each m x m block of outputs from an (m+2) x (m+2)
patch of input. Winograd's minimal filtering algorithm does it with (m+2)^2
multiplies per input/output channel pair instead of 9 m^2: the patch is
transformed (``V = B^T d B``, additions and constant multiplies), multiplied
element by element with the transformed filter (``U = G g G^T``, computed once
when the module is built), summed over input channels (a batched matrix
product, the bulk of the work), and transformed back (``Y = A^T M A``). F(2x2,
3x3) (16 positions) takes 2.25x fewer multiply-adds in the product than the
direct loops, F(4x4, 3x3) (36 positions) 4x; the transforms add some back and
round-off grows slightly (about 1e-6 relative on float32 for both in
ResNet-18 and ResNet-50). :func:`tile_size` picks F(4x4) on maps of at least
28x28 whose transformed weights (36 per channel pair, 4x the direct ones) stay
within 4 MB, F(2x2) elsewhere: ResNet-18 took 9.9 ms with F(4x4) on its first
two stages against 11.7 ms with F(2x2) everywhere (ResNet-50 31.2 against
32.5 ms; alternating rounds, 2026-12-05).

Stages, as blocks of one PrimFunc ``conv2d_NCHWc_winograd`` (data in
``NCHW{p}c``, weights transformed to ``(O/q, P, C, q)`` with ``P = (m+2)^2``
positions, output ``NCHW{q}c``):

* ``data_pad``: the zero border (inlined into the next stage);
* ``wino_V`` ``(T, P, C)``: the transformed input patch of each m x m output
  tile ``T`` (over batch and tile rows and columns) at each of the P
  positions, channels innermost. An output whose height (or width) m does not
  divide has ``ceil(H / m)`` tile rows: the last row of tiles reads zeros
  below the padded input (the same bounds check as the border), so it needs
  no copy;
* ``wino_M`` ``(O/q, T, P, q)``: the sum over input channels, per position;
* ``wino_Y``: the output, ``A^T M A`` per tile; fused epilogues (bias,
  residual, activation) are computed in the same loop. Only the valid
  outputs are computed: a partial last tile's extra row or column is never
  written (the loop's m x m split carries the bound as a predicate).

For an even output size the stages are those of the whole-tile case, term
for term (same kernels, same workload keys).

:func:`schedule_winograd` schedules such a function: ``wino_V`` parallel over
tiles and vectorized along channels; ``wino_M`` register-blocked (16 vector
accumulators: tiles x output-channel blocks), the reduction split, parallel
over tile blocks and output-channel blocks; ``wino_Y`` with the epilogue
inlined, parallel over rows and channel blocks, vectorized along the channel
lanes. Which of tiles (rows) and channels is split among the threads is
:func:`split_by_tiles`'s choice. Under ``cpu:tuned`` the register block and
the reduction step are chosen per workload (:func:`schedule_winograd_knobs`).

Float32 convolutions with a 3x3 kernel, stride 1, dilation 1 and padding 1
on every side qualify, at any output size (:func:`qualifies`); the others
keep the direct loops.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import s_tir, te, tirx

from hwnas.ir.schedule import divisor_tile, root_blocks, vectorize_inner
from hwnas.ir.workloads import block_domain, blocks

#: Name of the PrimFunc of a Winograd convolution, and of its stages' blocks.
CONV2D_NCHWC_WINOGRAD = "conv2d_NCHWc_winograd"
WEIGHT_TRANSFORM = "winograd_weight_transform"
BLOCK_V, BLOCK_M, BLOCK_Y = "wino_V", "wino_M", "wino_Y"

# F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016):
# output tile m -> (B^T, G, A^T), input patch m + 2
_MATRICES = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}
#: F(4x4, 3x3) for maps at least this large (height and width) ...
LARGE_TILE_MIN_SIZE = 28
#: ... whose transformed weights (36 x C x O floats) fit in this many bytes
LARGE_TILE_MAX_WEIGHT_BYTES = 4 << 20

#: vector accumulators one ``wino_M`` register block keeps live (tiles x output-channel blocks)
ACCUMULATORS = 16
#: the largest register block :func:`schedule_winograd_knobs` accepts (more spills)
MAX_ACCUMULATORS = 32


def qualifies(data_shape: Sequence[int], weight_shape: Sequence[int], strides, padding, dilation,
              dtype: str) -> bool:
    """Whether a packed conv (data ``(N, C/p, H, W, p)``, weight ``(O/q, C/p, KH, KW, p, q)``) takes Winograd."""
    if len(data_shape) != 5 or len(weight_shape) != 6 or dtype != "float32":
        return False
    kh, kw = int(weight_shape[2]), int(weight_shape[3])
    height, width = int(data_shape[2]), int(data_shape[3])
    return ((kh, kw) == (3, 3) and [int(s) for s in strides] == [1, 1] and [int(d) for d in dilation] == [1, 1]
            and [int(p) for p in padding] == [1, 1, 1, 1] and height >= 1 and width >= 1)


def _select(index, values: list) -> tirx.PrimExpr:
    """``values[index]`` for a loop variable ``index`` (folds to one value once the loop is unrolled)."""
    out = values[-1]
    for k in range(len(values) - 2, -1, -1):
        out = tirx.Select(index == k, values[k], out)
    return out


def _combine(terms: list[tuple[float, tirx.PrimExpr]], dtype: str) -> tirx.PrimExpr:
    """``sum(c * x)`` over the nonzero coefficients, with no multiply for +-1."""
    out = None
    for c, x in terms:
        if c == 0:
            continue
        term = x if c == 1 else (-x if c == -1 else x * tirx.const(c, dtype))
        out = term if out is None else out + term
    return out if out is not None else tirx.const(0, dtype)


def tile_size(height: int, width: int, in_channels: int, out_channels: int) -> int:
    """The output tile ``m`` of F(m x m, 3x3) for a conv: 4 on maps of at least :data:`LARGE_TILE_MIN_SIZE`
    whose transformed weights (36 per input and output channel) stay within
    :data:`LARGE_TILE_MAX_WEIGHT_BYTES` (2.25 multiplies per output instead of 4), else 2."""
    large = min(height, width) >= LARGE_TILE_MIN_SIZE
    return 4 if large and 36 * in_channels * out_channels * 4 <= LARGE_TILE_MAX_WEIGHT_BYTES else 2


def weight_transform_compute(weight: te.Tensor, m: int = 2) -> te.Tensor:
    """``U = G g G^T`` of packed weights ``(O/q, C/p, 3, 3, p, q)``: ``(O/q, (m+2)^2, C, q)``, channels
    flattened, for F(m x m, 3x3)."""
    o_blocks, c_blocks, _, _, c_pack, o_pack = (int(x) for x in weight.shape)
    dtype = weight.dtype
    g = _MATRICES[m][1]
    a = m + 2

    def value(ob, pos, c, oi):
        cb, ci = c // c_pack, c % c_pack
        per_pos = []
        for e in range(a):
            for n in range(a):
                per_pos.append(_combine([(g[e][r] * g[n][s], weight[ob, cb, r, s, ci, oi])
                                         for r in range(3) for s in range(3)], dtype))
        return _select(pos, per_pos)

    return te.compute((o_blocks, a * a, c_blocks * c_pack, o_pack), value, name=WEIGHT_TRANSFORM)


def _output_tile(positions: int) -> int:
    """``m`` of F(m x m, 3x3) from the number of positions of a patch, ``(m + 2)^2``."""
    return {16: 2, 36: 4}[int(positions)]


def conv_compute(data: te.Tensor, u: te.Tensor, out_dtype: str) -> te.Tensor:
    """The Winograd convolution of packed ``data`` with transformed weights ``u`` (see the module docstring);
    F(2x2, 3x3) or F(4x4, 3x3) as ``u`` was transformed for."""
    n, c_blocks, height, width, c_pack = (int(x) for x in data.shape)
    o_blocks, positions, channels, o_pack = (int(x) for x in u.shape)
    tm = _output_tile(positions)
    a = tm + 2
    bt, _, at = _MATRICES[tm]
    # a height or width that tm does not divide ends in a partial tile: its patch reads zeros past the border,
    # its outputs are cropped
    tiles_h, tiles_w = (height + tm - 1) // tm, (width + tm - 1) // tm
    per_image = tiles_h * tiles_w
    zero = tirx.const(0, data.dtype)
    padded = te.compute(
        (n, c_blocks, tm * tiles_h + 2, tm * tiles_w + 2, c_pack),
        lambda b, c, y, x, i: tirx.if_then_else(
            tirx.all(y >= 1, y <= height, x >= 1, x <= width), data[b, c, y - 1, x - 1, i], zero),
        name="data_pad",
    )

    def v_value(t, pos, c):
        b, th, tw = t // per_image, (t % per_image) // tiles_w, t % tiles_w
        cb, ci = c // c_pack, c % c_pack
        per_pos = []
        for e in range(a):
            for f in range(a):
                per_pos.append(_combine([(bt[e][r] * bt[f][s], padded[b, cb, tm * th + r, tm * tw + s, ci])
                                         for r in range(a) for s in range(a)], data.dtype))
        return _select(pos, per_pos)

    v = te.compute((n * per_image, a * a, channels), v_value, name=BLOCK_V)
    rc = te.reduce_axis((0, channels), name="rc")
    m = te.compute(
        (o_blocks, n * per_image, a * a, o_pack),
        lambda ob, t, pos, oi: te.sum(v[t, pos, rc].astype(out_dtype) * u[ob, pos, rc, oi].astype(out_dtype),
                                      axis=rc),
        name=BLOCK_M,
    )

    def y_value(b, ob, y, x, oi):
        t = b * per_image + (y // tm) * tiles_w + x // tm
        per_out = []
        for i in range(tm):
            for j in range(tm):
                per_out.append(_combine([(at[i][e] * at[j][f], m[ob, t, e * a + f, oi])
                                         for e in range(a) for f in range(a)], out_dtype))
        return _select((y % tm) * tm + x % tm, per_out)

    return te.compute((n, o_blocks, height, width, o_pack), y_value, name=BLOCK_Y)


def split_by_tiles(tiles: int, tile_blocks: int, out_channels: int, m: int = 2) -> bool:
    """Whether the batched product and the output transform are split among threads by tiles (rows), as
    the input transform is, rather than by output channels.

    Split by tiles, each thread multiplies and transforms back the tiles whose input it transformed, and
    writes the rows the next kernel's same thread reads: activations stay in that core's caches, but each
    thread reads every transformed weight. Split by channels, each thread reads half the weights but
    every tile, half of them transformed by the other core. So: by tiles when the input (m^2 values per
    tile and channel, F(m x m, 3x3)) is at least the transformed weights ((m+2)^2 per input and output
    channel), and there are at least two register blocks of tiles to share. On a VM whose two vCPUs sit on different CCXs
    (no shared L3; it changes from minute to minute) ResNet-18 measured 15.8 ms split by channels against
    14.6 ms this way, with the direct convs in row bands too (11.6 ms either way when they share an L3)."""
    return tile_blocks >= 2 and m * m * tiles >= (m + 2) ** 2 * out_channels


def is_winograd(func) -> bool:
    """Whether a PrimFunc is a (fused) Winograd convolution of :func:`conv_compute`."""
    return {BLOCK_M, BLOCK_Y, "data_pad"} <= {b.name_hint for b in blocks(func)}


def default_knobs(func) -> dict[str, int]:
    """The knobs under which :func:`schedule_winograd_knobs` gives :func:`schedule_winograd`'s fixed schedule of
    ``func`` (the tuner's second trial, after the network's own knobs)."""
    (m,) = [b for b in blocks(func) if b.name_hint == BLOCK_M]
    o_blocks, _, _, o_pack = block_domain(m)[0]  # (O/q, T, P, q)
    ob_tile = 2 if o_blocks % 2 == 0 else 1
    return {"tile_oc": ob_tile * o_pack, "tile_ow": ACCUMULATORS // ob_tile, "tile_rc": 32}


def schedule_winograd_knobs(sch: s_tir.Schedule, cfg) -> bool:
    """:func:`schedule_winograd` with the batched product's register block and reduction step taken from the
    CPU knobs (a :class:`~hwnas.targets.cpu.tile_conv2d.CpuScheduleConfig`): ``tile_oc`` output channels
    (whole channel blocks), ``tile_ow`` tiles, ``tile_rc`` input channels per step; ``cpu:tuned`` chooses them
    per workload. A block of more than :data:`MAX_ACCUMULATORS` vectors is refused (ValueError)."""
    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    if BLOCK_M not in names:
        return False
    o_pack = int(sch.get(sch.get_sblock(BLOCK_M)).writes[0].source.shape[-1])
    ob_tile, t_tile = max(1, cfg.tile_oc // o_pack), cfg.tile_ow
    if ob_tile * t_tile > MAX_ACCUMULATORS:
        raise ValueError(f"{ob_tile} x {t_tile} accumulators exceed {MAX_ACCUMULATORS}")
    return schedule_winograd(sch, cfg.vector_width, ob_tile=ob_tile, t_tile=t_tile, rc_tile=cfg.tile_rc)


def schedule_winograd(sch: s_tir.Schedule, vector_width: int, ob_tile: int | None = None, t_tile: int | None = None,
                      rc_tile: int = 32) -> bool:
    """Schedule a (fused) Winograd conv function in ``sch``; False if it is not one.

    The batched product's register block is ``ob_tile`` output-channel blocks x ``t_tile`` tiles (default: 2
    blocks when their count is even, and :data:`ACCUMULATORS` vectors in all), its reduction ``rc_tile``
    input channels per step; each is clamped to the largest divisor of its loop."""

    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    if BLOCK_M not in names or BLOCK_Y not in names or "data_pad" not in names:
        return False
    blocks = root_blocks(sch)
    c_pack = int(sch.get(blocks[names.index("data_pad")]).writes[0].source.shape[-1])  # the data's channel block
    sch.compute_inline(blocks[names.index("data_pad")])
    # input transform: parallel over tiles, the positions unrolled, channel lanes vectorized
    v = sch.get_sblock(BLOCK_V)
    t, pos, c = sch.get_loops(v)
    c_out, c_in = sch.split(c, [None, c_pack])
    sch.reorder(t, c_out, pos, c_in)
    sch.parallel(t)
    sch.unroll(pos)
    vectorize_inner(sch, c_in, vector_width)
    # the batched product: ob x tiles register block, reduction in steps
    m = sch.get_sblock(BLOCK_M)
    ob, t, pos, oi, rc = sch.get_loops(m)
    o_blocks, tiles, channels = (sch.get(x).extent.value for x in (ob, t, rc))
    tm = _output_tile(sch.get(pos).extent.value)
    ob_tile = divisor_tile(o_blocks, 2 if ob_tile is None else ob_tile)
    t_tile = divisor_tile(tiles, ACCUMULATORS // ob_tile if t_tile is None else t_tile)
    rc_tile = divisor_tile(channels, rc_tile)
    ob_o, ob_i = sch.split(ob, [None, ob_tile])
    t_o, t_i = sch.split(t, [None, t_tile])
    rc_o, rc_i = sch.split(rc, [None, rc_tile])
    by_rows = split_by_tiles(tiles, sch.get(t_o).extent.value, o_blocks * sch.get(oi).extent.value, tm)
    outer = (t_o, ob_o) if by_rows else (ob_o, t_o)
    sch.reorder(*outer, pos, rc_o, rc_i, ob_i, t_i, oi)
    sch.parallel(sch.fuse(*outer))
    sch.unroll(ob_i)
    sch.unroll(t_i)
    vectorize_inner(sch, oi, vector_width)
    sch.decompose_reduction(m, rc_o)
    # output transform with the epilogue: Y is inlined into the last elementwise block
    blocks = root_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    after = blocks[names.index(BLOCK_Y) + 1:]
    for blk in after[:-1]:
        sch.compute_inline(blk)
    out = sch.get_sblock(BLOCK_Y)
    if after:
        sch.compute_inline(out)
        out = after[-1]
    b, ob, y, x, oi = sch.get_loops(out)
    y_o, y_i = sch.split(y, [None, tm])
    x_o, x_i = sch.split(x, [None, tm])
    outer = (b, y_o, ob) if by_rows else (b, ob, y_o)
    sch.reorder(*outer, x_o, y_i, x_i, oi)
    sch.parallel(sch.fuse(*outer))
    sch.unroll(y_i)
    sch.unroll(x_i)
    vectorize_inner(sch, oi, vector_width)
    return True
