"""Every hook a dicesearch plugin can implement, in one place.

A plugin is a module (or an object) with functions decorated by :data:`hookimpl`. It is
found through the ``dicesearch.plugins`` entry-point group; the built-in blocks and
conditioning methods in ``plugins/`` register through that same group.

Example::

    from dicesearch.plugin_api import BlockType, hookimpl

    @hookimpl
    def dicesearch_block_types():
        return [BlockType(name="gated_mlp", params=GatedMlpParams, build=build_gated_mlp)]
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "dicesearch"
ENTRY_POINT_GROUP = "dicesearch.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def dicesearch_block_types():
    """Return the block types this plugin provides, as a list of ``BlockType``.

    A block maps channels-last features ``(B, H, W, C) -> (B, H, W, C)`` given the
    conditioning signal; see :class:`dicesearch.plugin_api.BlockType`.
    """


@hookspec
def dicesearch_conditioning_types():
    """Return the conditioning methods this plugin provides, as a list of ``ConditioningType``.

    A conditioning method turns ``(t, y)`` into a signal and gives every block a
    modulator for its normalisations and residual gates; see
    :class:`dicesearch.conditioning.ConditioningMethod`.
    """
