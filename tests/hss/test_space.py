import numpy as np
import pytest

from hwnas.errors import InvalidConfigError
from hwnas.hss import ChoiceParam, Constraint, HardwareSpace, IntParam, Pow2Param


def make_space():
    return HardwareSpace(
        name="toy",
        params={
            "tile": Pow2Param(1, 32, default_value=4),
            "vec": ChoiceParam((4, 1, 8, 16)),
            "threads": IntParam(1, 4),
            "layout": ChoiceParam(("NCHW", "NHWC")),
        },
        constraints=(Constraint("vec must not exceed tile", lambda c: c["vec"] <= c["tile"]),),
    )


def test_size_cardinalities_and_default():
    s = make_space()
    assert s.size == 4
    assert s.cardinalities == (6, 4, 4, 2)
    assert s.num_configs == 6 * 4 * 4 * 2
    assert s.default() == {"tile": 4, "vec": 4, "threads": 1, "layout": "NCHW"}


def test_every_valid_vector_round_trips():
    s = make_space()
    seen = 0
    for flat in range(s.num_configs):
        vec, rest = [], flat
        for c in s.cardinalities:
            vec.append(rest % c)
            rest //= c
        try:
            config = s.decode(vec)
        except InvalidConfigError as exc:
            assert "vec must not exceed tile" in str(exc)
            continue
        seen += 1
        assert s.encode(config) == vec
    # vec <= tile leaves exactly these combinations valid
    valid_pairs = sum(1 for t in (1, 2, 4, 8, 16, 32) for v in (4, 1, 8, 16) if v <= t)
    assert seen == valid_pairs * 4 * 2


def test_partial_config_takes_defaults():
    assert make_space().validate({"tile": 16})["vec"] == 4


@pytest.mark.parametrize(
    "config, message",
    [
        ({"tiles": 4}, "unknown hardware knob 'tiles'; knobs: tile, vec, threads, layout"),
        ({"tile": 3}, "invalid value 3 for 'tile'; allowed: 2\\^k in 1..32"),
        ({"layout": "NHCW"}, "invalid value 'NHCW' for 'layout'"),
        ({"tile": 2, "vec": 8}, "vec must not exceed tile"),
        ({"threads": True}, "invalid value True"),
    ],
)
def test_invalid_configs_are_named(config, message):
    with pytest.raises(InvalidConfigError, match=message):
        make_space().validate(config)


def test_sample_is_valid_and_reproducible():
    s = make_space()
    a = [s.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [s.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(0)
    samples = [s.sample(rng) for _ in range(200)]
    assert all(s.is_valid(c) for c in samples)
    assert len({tuple(sorted(c.items())) for c in samples}) > 20


def test_default_config_must_satisfy_the_constraints():
    with pytest.raises(InvalidConfigError, match="default config of 'x' is not valid: x: never"):
        HardwareSpace(name="x", params={"a": IntParam(1, 2)},
                      constraints=(Constraint("never", lambda c: False),))


def test_rejection_sampling_is_bounded():
    calls = []

    def only_default(c):
        calls.append(1)
        return c["a"] == 1

    s = HardwareSpace(name="x", params={"a": IntParam(1, 100_000)},
                      constraints=(Constraint("a must be 1", only_default),))
    calls.clear()
    with pytest.raises(InvalidConfigError, match="no valid config found in 1000 random draws"):
        s.sample(np.random.default_rng(3))
    assert len(calls) == 1000


def test_decode_rejects_wrong_length_and_range():
    s = make_space()
    with pytest.raises(InvalidConfigError, match="has 4 entries, got 3"):
        s.decode([0, 0, 0])
    with pytest.raises(InvalidConfigError, match="tile"):
        s.decode([6, 0, 0, 0])
