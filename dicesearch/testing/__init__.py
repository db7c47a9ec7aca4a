"""Contract checks every block x conditioning must pass, for dicesearch and plugin authors.

In a plugin's own tests::

    from dicesearch.testing import check_block

    def test_my_block_honours_the_contract():
        check_block("my_block", block_params={"width": 2})

``check_block`` runs every check below on a single-stage model and on two-stage noise
and feature cascades, with every installed conditioning method (or the ones given).
Each check raises ``AssertionError`` with a message saying what broke (a block whose
output shape differs from its input's raises ``dicesearch.errors.PluginError`` as soon as
the model runs).

For tests of your block's own behaviour, ``build_block("my_block")`` returns the block
as a model builds it, with an input ``x`` (B, H, W, C) and a conditioning ``signal``::

    block, x, signal = build_block("my_block", "tdln")
    assert block(x, signal).shape == x.shape

This package and :mod:`dicesearch.plugin_api`, :mod:`dicesearch.conditioning` and
:mod:`dicesearch.layers` are the API plugins use; the guide is docs/writing-a-plugin.md.
"""

from dicesearch.testing.contract import (
    BuiltBlock,
    build_block,
    check_block,
    check_finite,
    check_float64,
    check_gradients_reach_every_parameter,
    check_output_shapes,
    check_seeded_determinism,
    check_spec_round_trip,
    tiny_spec,
)

__all__ = [
    "BuiltBlock",
    "build_block",
    "check_block",
    "check_finite",
    "check_float64",
    "check_gradients_reach_every_parameter",
    "check_output_shapes",
    "check_seeded_determinism",
    "check_spec_round_trip",
    "tiny_spec",
]
