"""The plugin registry: discovery through entry points, collisions, broken plugins."""

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from dicesearch import registry as registry_module
from dicesearch.errors import PluginError, PluginLoadWarning, SpecError
from dicesearch.plugin_api import BlockParams, BlockType, hookimpl
from dicesearch.registry import Registry, closest


def test_builtins_register_through_the_entry_point_group(registry):
    assert set(registry.blocks) >= {"dice", "convnext", "attention"}
    assert set(registry.conditionings) >= {"adaln_zero", "tdln"}
    for entry in [*registry.blocks.values(), *registry.conditionings.values()]:
        if entry.name in {"dice", "convnext", "attention", "adaln_zero", "tdln"}:
            assert entry.distribution == "dicesearch"
            assert entry.source.startswith("dicesearch_plugins.")
    assert registry.load_errors == []


class _Params(BlockParams):
    width: int = 2


def _plugin(name: str, block_name: str = "dice") -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def dicesearch_block_types():
        return [BlockType(name=block_name, params=_Params, build=lambda p, c: None)]

    module.dicesearch_block_types = dicesearch_block_types
    return module


def test_a_name_registered_twice_names_both_distributions():
    registry = Registry()
    registry.add_plugin(_plugin("first"), name="first", distribution="dist-one")
    with pytest.raises(PluginError) as error:
        registry.add_plugin(_plugin("second"), name="second", distribution="dist-two")
    message = str(error.value)
    assert "'dice'" in message and "dist-one" in message and "dist-two" in message


def test_a_plugin_name_registered_twice_names_both_distributions():
    registry = Registry()
    registry.add_plugin(_plugin("first", "one"), name="same", distribution="dist-one")
    with pytest.raises(PluginError) as error:
        registry.add_plugin(_plugin("second", "two"), name="same", distribution="dist-two")
    assert str(error.value) == (
        "plugin name 'same' is registered twice: by distribution 'dist-one' and by distribution 'dist-two'; "
        "rename one entry point in the dicesearch.plugins group, or uninstall one of them"
    )
    module = _plugin("third", "three")
    registry.add_plugin(module, name="third", distribution="dist-three")
    with pytest.raises(PluginError) as error:
        registry.add_plugin(module, name="again", distribution="dist-four")
    assert str(error.value).startswith(
        "plugin 'again' from distribution 'dist-four' is the module already registered as plugin 'third' "
        "from distribution 'dist-three'"
    )


def test_a_class_as_plugin_is_skipped_with_the_reason_and_the_others_load():
    class NotAModule:
        pass

    registry = Registry()
    with pytest.warns(PluginLoadWarning, match="is a class; point the entry point at a module"):
        registry.add_plugin(NotAModule, name="cls", distribution="dist")
    registry.add_plugin(_plugin("after_class", block_name="fine"), name="after_class", distribution="f-dist")
    assert "fine" in registry.blocks and not any("cls" == r.plugin for r in registry.blocks.values())
    assert registry.load_errors == [
        "plugin 'cls' from distribution 'dist' was skipped: it is a class; point the entry point at a module "
        "or an instance (pluggy would call its hooks without self)"
    ]


def test_a_misspelled_hook_is_reported_and_the_plugin_skipped():
    module = types.ModuleType("typo")

    @hookimpl
    def dicesearch_block_type():  # missing the final s
        return []

    module.dicesearch_block_type = dicesearch_block_type
    registry = Registry()
    with pytest.warns(UserWarning, match="typo"):
        registry.add_plugin(module, name="typo", distribution="typo-dist")
    assert "plugin 'typo' from distribution 'typo-dist'" in registry.load_errors[0]
    assert "dicesearch_block_type" in registry.load_errors[0]


def test_a_hook_without_the_decorator_is_reported():
    module = types.ModuleType("undecorated")
    module.dicesearch_block_types = lambda: []
    registry = Registry()
    with pytest.warns(UserWarning):
        registry.add_plugin(module, name="undecorated", distribution="u-dist")
    assert "plugin 'undecorated' from distribution 'u-dist'" in registry.load_errors[0]
    assert "lacks the @hookimpl decorator" in registry.load_errors[0]


def test_a_hook_with_a_wrong_signature_is_reported():
    module = types.ModuleType("badsig")

    @hookimpl
    def dicesearch_block_types(config):  # the hookspec takes no arguments
        return []

    module.dicesearch_block_types = dicesearch_block_types
    registry = Registry()
    with pytest.warns(UserWarning):
        registry.add_plugin(module, name="badsig", distribution="b-dist")
    registry.add_plugin(_plugin("after_badsig", block_name="fine"), name="after_badsig", distribution="f-dist")
    (message,) = registry.load_errors
    assert "plugin 'badsig' from distribution 'b-dist' was skipped" in message
    assert "dicesearch_block_types(config)" in message and "take no arguments" in message
    assert "\n" not in message  # one line, as the CLI prints it
    assert "fine" in registry.blocks  # the next plugin still loads


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(monkeypatch):
    good = types.ModuleType("good_plugin_for_test")
    good.__dict__.update(_plugin("good_plugin_for_test", block_name="good_block").__dict__)
    monkeypatch.setitem(sys.modules, "good_plugin_for_test", good)
    fake = [
        EntryPoint(name="broken", value="no_such_module_for_dicesearch_test", group="dicesearch.plugins"),
        EntryPoint(name="good", value="good_plugin_for_test", group="dicesearch.plugins"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: fake)
    with pytest.warns(UserWarning, match="failed to import"):
        registry = Registry.from_entry_points()
    assert "good_block" in registry.blocks
    assert "'broken'" in registry.load_errors[0] and "ModuleNotFoundError" in registry.load_errors[0]


def test_unknown_names_list_the_known_ones_and_the_closest(registry):
    with pytest.raises(SpecError, match=r"unknown block 'convnxt'; known: .*did you mean 'convnext'"):
        registry.block("convnxt")
    assert closest("adaln", ["tdln", "adaln_zero"]) == "adaln_zero"
    assert closest("zzzzzz", ["tdln", "adaln_zero"]) is None
