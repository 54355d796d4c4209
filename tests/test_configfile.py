"""The admins' TOML/JSON config files: parsed by extension, a clear error naming the file otherwise."""

from __future__ import annotations

import pytest

from server.core.configfile import read_config_file


def test_toml_and_json_files_are_read_by_extension(tmp_path):
    (tmp_path / "p.toml").write_text('sampler = "dynesty"\nnlive = 40\n')
    (tmp_path / "p.json").write_text('{"sampler": "emcee", "nlive": 10}')
    assert read_config_file(str(tmp_path / "p.toml")) == {"sampler": "dynesty", "nlive": 40}
    assert read_config_file(str(tmp_path / "p.json")) == {"sampler": "emcee", "nlive": 10}


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "nlive = = 3", "bad.toml is not valid TOML"),
    ("bad.json", "{nlive: 3}", "bad.json is not valid JSON"),
    ("list.json", "[1, 2]", "must hold a JSON object"),
])
def test_unparseable_file_names_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_config_file(str(tmp_path / name))
