"""Contract checks every block x conditioning must pass, for dicesearch and plugin authors.

In a plugin's own tests::

    from dicesearch.testing import check_block

    def test_my_block_honours_the_contract():
        check_block("my_block", block_params={"width": 2})

``check_block`` runs every check below on a single-stage model and on two-stage noise
and feature cascades, with every installed conditioning method (or the ones given).
Each check raises ``AssertionError`` with a message saying what broke.
"""

from dicesearch.testing.contract import (
    check_block,
    check_finite,
    check_gradients_reach_every_parameter,
    check_output_shapes,
    check_seeded_determinism,
    check_spec_round_trip,
    tiny_spec,
)

__all__ = [
    "check_block",
    "check_finite",
    "check_gradients_reach_every_parameter",
    "check_output_shapes",
    "check_seeded_determinism",
    "check_spec_round_trip",
    "tiny_spec",
]
