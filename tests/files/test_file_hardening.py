"""What every file goes through before its contents are used: the YAML reader's limits,
the number rules of the models read from files, names that stay inside their folder,
ordinary file modes, and control characters kept off the terminal."""

import codecs
import os
import stat

import pytest
import yaml
from click.testing import CliRunner

from dicesearch.cli import main
from dicesearch.errors import SpecError, printable
from dicesearch.files import inside, safe_component
from dicesearch.yaml_files import MAX_DEPTH, decode_text, parse_yaml

# -- text and structure ---------------------------------------------------------------------------


def test_utf8_with_or_without_a_byte_order_mark_is_read_and_other_encodings_are_refused():
    assert decode_text(codecs.BOM_UTF8 + "name: café\n".encode(), "f.yaml") == "name: café\n"
    with pytest.raises(SpecError, match=r"^f.yaml: the file is UTF-32 text"):
        decode_text("a: 1\n".encode("utf-32"), "f.yaml")
    with pytest.raises(SpecError, match=r"^f.yaml: the file is UTF-16 text"):
        decode_text("a: 1\n".encode("utf-16"), "f.yaml")
    with pytest.raises(SpecError, match=r"^f.yaml:2:4: a NUL byte"):
        decode_text(b"a: 1\nb: \x00\n", "f.yaml")
    with pytest.raises(SpecError, match=r"^f.yaml:2:9: byte 0xfc is not UTF-8"):
        decode_text(b"a: 1\nname: gr\xfcn\n", "f.yaml")


def test_nesting_is_read_up_to_the_limit_and_refused_past_it_without_recursing():
    def nested(levels: int) -> str:
        return "[" * levels + "]" * levels + "\n"

    assert parse_yaml(nested(MAX_DEPTH), "f.yaml") is not None
    with pytest.raises(SpecError, match=rf"^f.yaml:1:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"):
        parse_yaml(nested(MAX_DEPTH + 1), "f.yaml")
    with pytest.raises(SpecError, match="nested more than"):
        parse_yaml("[" * 100_000, "f.yaml")  # would be a RecursionError in yaml.safe_load


def test_a_key_twice_is_refused_where_it_repeats_but_merge_keys_still_override():
    with pytest.raises(SpecError, match=r"^f.yaml:3:3: the key 'depth' is given twice in one mapping \(first on line 2\); keep one$"):
        parse_yaml("stage:\n  depth: 1\n  depth: 2\n", "f.yaml")
    merged = parse_yaml("base: &b {depth: 1, channels: 8}\nstage:\n  <<: *b\n  depth: 3\n", "f.yaml")
    assert merged["stage"] == {"depth": 3, "channels": 8}  # YAML's merge: the mapping's own key wins
    assert parse_yaml("a: {x: 1}\nb: {x: 1}\n", "f.yaml") == {"a": {"x": 1}, "b": {"x": 1}}  # same key, other mappings


def test_aliases_are_counted_each_time_they_are_used():
    shared = parse_yaml("a: &a [1, 2, 3]\nb: [*a, *a]\n", "f.yaml")
    assert shared["b"] == [[1, 2, 3], [1, 2, 3]]
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 7)
    )  # 10^6 values from 70 written ones
    with pytest.raises(SpecError, match=r"^f.yaml:1:1: the document expands to more than 200,000 values"):
        parse_yaml(bomb, "f.yaml")


@pytest.mark.parametrize("text", ['name: "a\\eb"\n', 'name: "a\\x07"\n', "name: \"\\u202etxt.exe\"\n", '"k\\x1b": 1\n', 'name: "a\\x85b"\n'])
def test_control_characters_are_refused_in_values_and_keys(text):
    with pytest.raises(SpecError, match=r"^f.yaml:1:\d+: a string holds the control character U\+[0-9A-F]{4}; remove it"):
        parse_yaml(text, "f.yaml")


def test_tabs_and_line_breaks_in_strings_are_kept():
    data = parse_yaml('description: |\n  line one\n  line\ttwo\nname: "tab\\there"\n', "f.yaml")
    assert data == {"description": "line one\nline\ttwo\n", "name": "tab\there"}


def test_raw_control_characters_are_refused_with_their_line_and_column():
    with pytest.raises(SpecError, match=r"^f.yaml:2:9: the control character U\+001B is not allowed in YAML; remove it$"):
        parse_yaml("a: 1\nname: ab\x1b[31m\n", "f.yaml")


def test_the_reader_still_refuses_python_tags():
    with pytest.raises(SpecError, match="malformed YAML"):
        parse_yaml("!!python/object/apply:os.system ['true']\n", "f.yaml")
    assert isinstance(yaml.safe_load("a: 1"), dict)


# -- numbers --------------------------------------------------------------------------------------


def test_nan_inf_and_booleans_are_refused_where_numbers_belong_and_booleans_kept_where_they_belong(registry):
    from pydantic import ValidationError

    from dicesearch.sweep.space.config import MemoryBudget
    from dicesearch.sweep.space.distributions import ChoiceParam, FloatParam, IntParam
    from dicesearch.train.config import TrainConfig

    for model, data in (
        (TrainConfig, {"lr": float("nan")}),
        (TrainConfig, {"ema_decay": float("inf")}),
        (FloatParam, {"float": [0.0, float("inf")]}),
        (ChoiceParam, {"choice": [1.0, float("nan")]}),
        (TrainConfig, {"steps": True}),
        (MemoryBudget, {"batch_size": True}),  # PositiveInt | None
        (IntParam, {"int": [1, False]}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(data)
    assert TrainConfig.model_validate({"gradient_checkpointing": True}).gradient_checkpointing is True
    assert ChoiceParam.model_validate({"choice": [True, False]}).choice == (True, False)
    assert MemoryBudget.model_validate({"gradient_checkpointing": 1}).gradient_checkpointing is True  # a bool field: pydantic's rules
    spec = registry.spec_types.ModelSpec.model_validate(
        {"input": {"learn_sigma": True}, "stages": [{"channels": 8, "depth": 1, "long_skip": True, "block": {"kind": "dice", "lambda_per_channel": True}}]}
    )
    assert spec.input.learn_sigma and spec.stages[0].long_skip and spec.stages[0].block.lambda_per_channel


# -- names, modes and the terminal ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "component"),
    [("DiT-XL/2", "DiT-XL-2"), ("../../etc/passwd", "etc-passwd"), ("..", "run"), ("/abs/olute", "abs-olute"), (".hidden", "hidden"), ("a b\x1bc", "a-b-c"), ("", "run")],
)
def test_a_name_from_a_file_is_one_harmless_path_component(name, component, tmp_path):
    assert safe_component(name) == component
    assert inside(tmp_path, name).parent == tmp_path


def test_a_study_name_never_places_the_sweep_outside_runs(tmp_path, monkeypatch):
    from dicesearch.sweep.space.config import SweepConfig
    from dicesearch.sweep.store.locations import SweepLocations

    monkeypatch.chdir(tmp_path)
    config = SweepConfig.model_validate({"name": "../../outside", "base": "DICE-digits", "parameters": {"stages[0].depth": {"int": [1, 2]}}})
    assert SweepLocations.for_config(config).out_dir == tmp_path / "runs" / "outside"


def test_files_written_through_a_temporary_file_get_the_umasks_mode(tmp_path):
    import torch

    from dicesearch.train import save_grid

    old = os.umask(0o027)
    try:
        path = save_grid(torch.zeros(4, 1, 8, 8), tmp_path / "grid.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 & ~027, not mkstemp's 0600


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[2Jb\nc\u202ed\x07") == "a\\x1b[2Jb\\nc\\u202ed\\x07"
    assert printable("plain text, unicode ✓") == "plain text, unicode ✓"


def test_an_error_line_reaches_the_terminal_without_control_characters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("base: DICE-digits\nparameters:\n  stages[0].depth: {int: [1, 2]}\n")
    result = CliRunner().invoke(main, ["sweep", "space.yaml", "--storage", "ftp\x1b]0;owned\x07://x"])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "ftp\\x1b]0;owned\\x07://" in result.output and result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
