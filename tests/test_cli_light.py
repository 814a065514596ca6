"""Commands that touch no model import no torch: `validate`, `ls` and `--help` answer at once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "transformers", "datasets", "trl", "peft", "accelerate", "matplotlib"]
PROBE = """
import json, sys
from finetune.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % HEAVY


@pytest.mark.parametrize("argv", [["validate", "recipes/quickstart.yaml"], ["ls", "tasks"], ["ls", "datasets"],
                                  ["validate", "tests/bad_recipes/alias_epochs.yaml"]])
def test_light_commands_import_no_heavy_library(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], result
    assert result["code"] in (0, 2), out.stderr


def test_importing_the_cli_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, finetune.cli; print('torch' in sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_help_lists_every_command(capsys):
    from finetune.cli import main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ["run", "train", "validate", "ls", "preview", "eval", "compare", "export"]:
        assert name in text


def test_library_messages_go_through_one_logger_that_callers_can_quiet(capsys):
    import logging

    from finetune import log
    log.say("hello")
    log.progress("step 1/2")
    out = capsys.readouterr()
    assert out.out == "hello\n" and out.err == "step 1/2\n"
    logging.getLogger("finetune").setLevel(logging.WARNING)
    try:
        log.say("silenced")
        assert capsys.readouterr().out == ""
    finally:
        logging.getLogger("finetune").setLevel(logging.INFO)
