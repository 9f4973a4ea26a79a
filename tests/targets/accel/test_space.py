"""Accelerator templates, boards and their hardware space as data; area and FPGA resources of a config."""

import dataclasses
import json

import numpy as np
import pytest

from hwnas.errors import InvalidConfigError
from hwnas.targets.accel.space import (
    BOARDS,
    DATAFLOWS,
    TEMPLATE_ALIASES,
    TEMPLATES,
    AccelConfig,
    AcceleratorTemplate,
    accelerator_space,
    architecture_description,
    template,
)
from hwnas.targets.accel.model import AREA, ENERGY, FPGA, area_mm2, fpga_resources, fpga_use


def config(name="row_stationary", **over):
    t = template(name)
    return dataclasses.replace(AccelConfig(template=t.name, glb_split="shared", **t.defaults()), **over)


def test_templates_are_valid_data_with_sources():
    assert {t.dataflow for t in TEMPLATES.values()} == set(DATAFLOWS)
    for name, t in TEMPLATES.items():
        assert t.name == name and t.source and t.doc
        space = accelerator_space(f"asic:{name}", (name,))
        default = space.default()
        # the template's own sizes are the space's defaults, and valid
        for key, value in t.defaults().items():
            assert default[key] == value, (name, key)
    for alias, target in TEMPLATE_ALIASES.items():
        assert template(alias) is TEMPLATES[target]
    assert template("eyeriss").pe_rows * template("eyeriss").pe_cols == 168  # Eyeriss' 12 x 14 PEs


def test_a_bad_template_is_refused_with_a_clear_message():
    with pytest.raises(InvalidConfigError, match="unknown accelerator template 'npu'; known: ws_systolic"):
        template("npu")
    with pytest.raises(InvalidConfigError, match="data_bits must be 8 or 16"):
        AcceleratorTemplate("x", "row_stationary", "d", "s", 4, 4, 64, 64, 12, 200, 4.0)
    with pytest.raises(InvalidConfigError, match="unknown dataflow"):
        AcceleratorTemplate("x", "diagonal", "d", "s", 4, 4, 64, 64, 8, 200, 4.0)


def test_boards_hold_their_datasheet_budgets():
    zcu, u96 = BOARDS["zcu102"], BOARDS["ultra96"]
    assert (zcu.part, zcu.dsp, zcu.bram36, zcu.lut) == ("XCZU9EG", 2520, 912, 274_080)
    assert (u96.part, u96.dsp, u96.bram36, u96.lut) == ("XCZU3EG", 360, 216, 70_560)
    assert all(b.source for b in BOARDS.values())


@pytest.mark.parametrize("fpga", [None, BOARDS["ultra96"]])
def test_space_round_trips_every_sampled_config(fpga):
    space = accelerator_space("accel", tuple(TEMPLATES), fpga=fpga)
    rng = np.random.default_rng(0)
    for _ in range(50):
        cfg = space.sample(rng)
        assert space.decode(space.encode(cfg)) == space.validate(cfg)
        acc = AccelConfig.from_hw(space.validate(cfg))
        assert acc.as_hw() == space.validate(cfg)
        if fpga is not None:
            assert acc.dram_gbps <= fpga.dram_gbps


def test_fpga_space_refuses_more_bandwidth_than_the_board_has():
    space = accelerator_space("fpga", ("ws_systolic",), fpga=BOARDS["ultra96"])
    with pytest.raises(InvalidConfigError, match="ultra96 board's 8.5 GB/s"):
        space.validate({"dram_gbps": 19.2})
    with pytest.raises(InvalidConfigError, match="invalid value 7 for 'pe_rows'"):
        space.validate({"pe_rows": 7})


def test_glb_split_divides_the_buffer():
    assert config(glb_split="shared").glb_capacity() == 108 * 1024
    split = config(glb_kb=128, glb_split="2:1:1").glb_capacity()
    assert split == {"W": 64 * 1024, "I": 32 * 1024, "O": 32 * 1024}


def test_architecture_description_is_a_timeloop_like_tree_in_json():
    cfg = config(glb_split="1:1:2")
    arch = architecture_description(cfg, target="asic:eyeriss")
    assert json.loads(json.dumps(arch)) == arch
    system = arch["architecture"]["subtree"][0]
    assert system["local"][0]["class"] == "DRAM"
    acc = system["subtree"][0]
    assert [b["name"] for b in acc["local"]] == ["GlobalBuffer_W", "GlobalBuffer_I", "GlobalBuffer_O"]
    pe = acc["subtree"][0]
    assert pe["name"] == "PE[0..167]" and {x["name"] for x in pe["local"]} == {"RegisterFile", "MAC"}


def test_energy_and_area_tables_name_their_sources():
    for table in (ENERGY, AREA, FPGA):
        assert table["source"]
    assert ENERGY["ratio"] == {"rf": 1.0, "noc": 2.0, "glb": 6.0, "dram": 200.0}  # Eyeriss ISCA 2016


def test_area_grows_with_every_size():
    base = sum(area_mm2(config()).values())
    for over in ({"pe_rows": 16}, {"pe_cols": 16}, {"rf_bytes": 1024}, {"glb_kb": 256}):
        assert sum(area_mm2(config(**over)).values()) > base, over
    assert sum(area_mm2(config(data_bits=8)).values()) < base
    # Eyeriss' sizes at 45 nm: a few mm^2 (the 65 nm chip is 12.25 mm^2, about 5.9 mm^2 scaled to 45 nm)
    assert 2.0 < base < 6.0


def test_fpga_resources_follow_the_array_and_the_buffers():
    small = fpga_resources(config("ws_systolic", pe_rows=8, pe_cols=8, data_bits=8))
    assert small["dsp"] == 32  # two int8 MACs per DSP48E2
    assert fpga_resources(config("ws_systolic", pe_rows=8, pe_cols=8, data_bits=16))["dsp"] == 64
    big = fpga_resources(config("ws_systolic", pe_rows=64, pe_cols=64, data_bits=16, glb_kb=1024))
    assert big["dsp"] == 4096 and big["bram36"] >= 256 and big["lut"] > small["lut"]
    use = fpga_use(config("ws_systolic", pe_rows=64, pe_cols=64, data_bits=16), BOARDS["ultra96"])
    assert use["dsp"] > 1  # 4096 DSPs on a 360-DSP part
    assert max(fpga_use(config("ws_systolic"), BOARDS["zcu102"]).values()) < 1


def test_weight_bits_shrink_weight_traffic_buffers_and_energy():
    """Weights stored at 8 or 4 bits (decoded to the data width at the MAC) move and occupy proportionally
    fewer bytes on the same mapping; the default (``data``) is the data width."""
    from hwnas.targets.accel.model import Layer, evaluate_mapping, search_mapping

    layer = Layer(g=1, n=1, k=64, c=64, p=8, q=8, r=3, s=3, h=8, w=8)
    wide = config("row_stationary", data_bits=16)
    base = search_mapping(layer, wide)
    assert evaluate_mapping(layer, dataclasses.replace(wide, weight_bits=16), base.mapping) == base
    previous = base
    for bits in (8, 4):
        cost = evaluate_mapping(layer, dataclasses.replace(wide, weight_bits=bits), base.mapping)
        assert cost.buffer_bytes["glb_W"] == base.buffer_bytes["glb_W"] * bits / 16
        assert cost.buffer_bytes["glb_I"] == base.buffer_bytes["glb_I"]
        # every weight comes from DRAM at least once: at least 2 - bits/8 bytes saved per weight
        assert base.dram_bytes - cost.dram_bytes >= 64 * 64 * 9 * (2 - bits / 8)
        for level in ("dram", "glb", "noc", "rf"):
            assert cost.energy_pj[level] < previous.energy_pj[level]
        assert cost.energy_pj["mac"] == base.energy_pj["mac"]  # the multiply stays at the data width
        previous = cost
    space = accelerator_space("asic:eyeriss", ("row_stationary",))
    assert AccelConfig.from_hw(space.default()).weight_bits == 0
    cfg = AccelConfig.from_hw(space.validate({"weight_bits": 4}))
    assert cfg.weight_bits == 4 and cfg.weight_bytes == 0.5
    assert AccelConfig.from_hw(cfg.as_hw()) == cfg
    with pytest.raises(InvalidConfigError, match="weight_bits"):
        space.validate({"weight_bits": 2})
