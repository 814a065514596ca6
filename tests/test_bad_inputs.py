"""The bad-recipe corpus: each file gives one clear message, exit status 2, no traceback.

Each file in tests/bad_recipes/ starts with `# expect: <text>`, a fragment the message
must contain. The message must also name the file (with a line, or the override).
"""

import re
from pathlib import Path

import pytest

from finetune.cli import main

CORPUS = sorted((Path(__file__).parent / "bad_recipes").glob("*.yaml"))


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_recipe_gives_one_clear_error(path, capsys):
    first = path.read_bytes().split(b"\n")[0].decode("utf-8")
    expect = re.match(r"# expect: (.*)", first).group(1)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ") and str(path) in err, err
    assert expect in err, err
    # one problem per file: a single message line
    assert len([l for l in err.splitlines() if l.strip()]) == 1, err
