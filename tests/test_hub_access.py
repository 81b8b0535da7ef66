"""Loading a Hub id that is not available offline fails with a message that says why and what to do."""

import pytest

from clef_hf import CLEFModel, CLEFProcessor


@pytest.mark.parametrize("load", [CLEFModel.from_pretrained, CLEFProcessor.from_pretrained])
def test_an_uncached_hub_id_offline_is_explained(load, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(OSError, match=r"'nobody/clef-missing': offline mode is on \(HF_HUB_OFFLINE=1\)") as caught:
        load("nobody/clef-missing", cache_dir=str(tmp_path))
    assert "pass the path of a local folder" in str(caught.value)


def test_a_missing_local_folder_is_named(tmp_path):
    with pytest.raises(OSError, match="There is no folder"):
        CLEFModel.from_pretrained(str(tmp_path / "nope" / "model"))
