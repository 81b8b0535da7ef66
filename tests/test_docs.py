"""The README's quick start runs as written, and the model-card template renders a CLEF checkpoint's labels."""

import os
import re
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from clef_hf import CLEFConfig
from clef_hf.vocabulary import au_labels

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    # The blocks continue each other (the pipeline example loads the quick start's model), so they run as one script.
    quick_start = "\n".join(blocks) + "\nassert type(reloaded).__name__ == 'CLEFModel'\nprint('QUICKSTART-OK')\n"
    result = subprocess.run([sys.executable, "-c", quick_start], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert "QUICKSTART-OK" in result.stdout, result.stderr[-3000:]
    assert "torch.Size([2, 5])" in result.stdout
    assert "'label': 'AU1', 'name': 'inner brow raiser'" in result.stdout
    assert "(1, " in result.stdout  # the DataFrame: one row for the one face


def test_readme_states_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_model_card_template_renders_labels():
    config = CLEFConfig(task="au", **au_labels([1, 12]))
    labels = [
        {"id": i, "name": n, "description": d}
        for i, n, d in zip(config.label_ids, config.label_names, config.label_descriptions)
    ]
    card = ModelCard.from_template(
        ModelCardData(license="apache-2.0", library_name="transformers", tags=["facial-action-units", "clef"]),
        template_path=str(ROOT / "model_cards" / "clef_model_card_template.md"),
        model_name="clef-au-test", repo_id="user/clef-au-test", task="au", task_title="facial action unit detection",
        name_template=config.name_template, labels=labels, au_threshold=0.5, image_size=224,
        data_setting="lab-or-wild", data_license_note="licence-note",
        training=None, training_missing="no-training-record", evaluation=None, evaluation_missing="no-evaluation",
    )
    text = str(card)
    assert "| AU12 | lip corner puller |" in text and "(faces, 2)" in text
    assert "no-training-record" in text and "no-evaluation" in text and "lab-or-wild" in text
    assert 'pipeline("facial-behavior", model="user/clef-au-test")' in text
    assert card.data.license == "apache-2.0"


def test_packaged_model_card_template_is_the_documented_one():
    """model_cards/ holds the template; clef_hf/templates/model_card.md is the copy installed with the package."""
    from clef_hf.model_card import template_path

    documented = (ROOT / "model_cards" / "clef_model_card_template.md").read_text()
    assert template_path().read_text() == documented, (
        "clef_hf/templates/model_card.md differs from model_cards/clef_model_card_template.md; after editing the "
        "template run: cp model_cards/clef_model_card_template.md clef_hf/templates/model_card.md"
    )
    assert "templates/*.md" in (ROOT / "setup.cfg").read_text()  # declared as package data
