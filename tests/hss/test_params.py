import pytest

from hwnas.errors import InvalidConfigError
from hwnas.hss import ChoiceParam, IntParam, Pow2Param


def test_values_of_each_kind():
    assert IntParam(2, 10, step=4).values == (2, 6, 10)
    assert Pow2Param(4, 32).values == (4, 8, 16, 32)
    assert ChoiceParam(("a", "b")).values == ("a", "b")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: IntParam(8, 4), "`low <= high` must hold, got low=8, high=4"),
        (lambda: IntParam(0, 5, step=2), "multiple of step"),
        (lambda: IntParam(0, 4, step=0), "step >= 1"),
        (lambda: Pow2Param(3, 16), "power of two"),
        (lambda: Pow2Param(16, 4), "`low <= high`"),
        (lambda: ChoiceParam(()), "non-empty"),
        (lambda: ChoiceParam(("a", "a")), "distinct"),
        (lambda: ChoiceParam((1, 2), default_value=3), "default 3"),
        (lambda: IntParam(1, 4, default_value=9), "default 9"),
    ],
)
def test_declaration_errors_name_the_value(make, message):
    with pytest.raises(InvalidConfigError, match=message.replace("`", ".").replace("(", r"\(")):
        make()


@pytest.mark.parametrize("param", [IntParam(-3, 9, step=3), Pow2Param(1, 64), ChoiceParam(("x", 4, 0.5))])
def test_encode_decode_round_trip(param):
    for i, v in enumerate(param.values):
        assert param.encode(v) == i
        assert param.decode(i) == v
    with pytest.raises(InvalidConfigError):
        param.decode(param.cardinality)
    with pytest.raises(InvalidConfigError):
        param.decode(-1)


def test_json_numbers_match_numeric_options_but_not_bools_or_strings():
    p = ChoiceParam((8, 0.5))
    assert p.encode(8.0) == 0 and p.encode(0.5) == 1
    assert not p.contains(True)
    assert not p.contains("8")
    assert not Pow2Param(1, 8).contains(3)


def test_defaults():
    assert Pow2Param(1, 64, default_value=8).default == 8
    assert IntParam(1, 4).default == 1
    assert ChoiceParam(("a", "b"), default_value="b").default == "b"


def test_params_are_frozen():
    p = IntParam(1, 4)
    with pytest.raises(AttributeError):
        p.low = 2
