"""Guards of the YAML reader: alias expansion bounded, foreign files never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.errors import ConfigError, MappingError
from connector.mapping.load import load_mapping, parse_mapping
from connector.settings import load_config
from connector.yaml_guards import MAX_ALIAS_NODES
from connector.yaml_source import load_yaml

ROOT = Path(__file__).parents[3]


def test_a_few_shared_blocks_are_fine() -> None:
    text = "base: &b {x: 1, y: [1, 2, 3]}\none: *b\ntwo: {<<: *b, z: 3}\nthree: [*b, *b]\n"
    data, _ = load_yaml(text, "f.yaml")
    assert data["three"][1] == {"x": 1, "y": [1, 2, 3]}
    assert data["two"]["z"] == 3 and data["two"]["x"] == 1


@pytest.mark.parametrize(
    "text",
    [
        # wide: one block repeated just past the bound
        "a: &a [" + ",".join(["x"] * 100) + "]\nb: [" + ",".join(["*a"] * 101) + "]\n",
        # deep: 9**6 nodes from six lines
        "".join(
            f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}" if n else "x"] * 9) + "]\n" for n in range(6)
        ),
        # a merge key repeated
        "a: &a {"
        + ", ".join(f"k{i}: {i}" for i in range(200))
        + "}\n"
        + "".join(f"m{i}: {{<<: *a}}\n" for i in range(60)),
    ],
    ids=["wide", "deep", "merges"],
)
def test_aliases_expanding_past_the_bound_are_refused(text: str) -> None:
    with pytest.raises(MappingError, match=f"more than {MAX_ALIAS_NODES:,} nodes"):
        load_yaml(text, "bomb.yaml")


def test_a_self_referencing_alias_does_not_loop() -> None:
    data, _ = load_yaml("a: &a [1, *a]\n", "loop.yaml")
    assert data == {"a": [1, None]}  # ruamel breaks the loop


def test_unknown_keys_that_are_not_key_names_are_not_repeated() -> None:
    text = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")
    text += "root:$6$SALTq7$HASHq7:19700:0:99999:7:::\ntypo_key: 1\n"
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, "m.yaml")
    message = caught.value.message
    assert "HASHq7" not in message and "SALTq7" not in message
    assert "unknown key 'typo_key'" in message  # a key someone typed is still named
    assert "(unknown key): a line that is not a key of this file" in message


def test_a_config_file_that_is_not_one_is_not_shown(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("user:x:1000:\nsecret_word_q7: here\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(other)
    assert "secret_word_q7" not in caught.value.message
    assert "this is not a config file" in caught.value.message


def test_a_broken_file_that_is_not_a_mapping_is_not_shown(tmp_path: Path) -> None:
    broken = tmp_path / "notes.txt"
    broken.write_text("meeting: at 10: bring *the_q7_secret\n  - x\n", encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(broken)
    assert "the_q7_secret" not in caught.value.message
    assert "this is not a mapping file" in caught.value.message
