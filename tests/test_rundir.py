"""RunDir: the one owner of the run directory's layout, status, manifest and train log."""

import json
import re
from pathlib import Path

import pytest

from finetune.rundir import RunDir, RunDirError, is_run_dir

REPO = Path(__file__).resolve().parent.parent
NAMES = ("manifest.json", "train_log.jsonl", "status.json")


def test_train_log_reader_skips_a_last_line_cut_by_a_kill(tmp_path):
    run = RunDir(tmp_path)
    run.append_train_log({"step": 1, "loss": 2.0})
    run.append_train_log({"step": 2, "loss": 1.5})
    with open(run / RunDir.TRAIN_LOG, "a") as f:
        f.write('{"step": 3, "lo')  # the kill landed mid-write
    assert run.train_log() == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert run.loss_points() == [(1, 2.0), (2, 1.5)]
    run.keep_train_log_until(1)  # resuming from checkpoint-1 drops step 2 and the cut line
    assert (run / RunDir.TRAIN_LOG).read_text() == '{"step": 1, "loss": 2.0}\n'
    assert RunDir(tmp_path / "none").train_log() == []


def test_evaluation_is_recorded_beside_the_finished_training(tmp_path):
    run = RunDir(tmp_path)
    run.set_status("finished")
    with pytest.raises(RuntimeError):
        with run.evaluating():
            raise RuntimeError("disk full")
    status = json.loads((run / RunDir.STATUS).read_text())
    assert status["state"] == "finished" and status["eval"] == "failed" and "disk full" in status["eval_error"]
    assert run.prepare(overwrite=False) is True, "a cut-off evaluation reopens the run to resume it"
    with run.evaluating():
        pass
    assert json.loads((run / RunDir.STATUS).read_text())["eval"] == "finished"
    with pytest.raises(RunDirError, match="holds a finished run.*finetune eval"):
        run.prepare(overwrite=False)


def test_a_run_dir_needs_a_manifest_and_weights(tmp_path):
    run = RunDir(tmp_path / "r")
    (run / RunDir.ADAPTER).mkdir(parents=True)
    (run / RunDir.ADAPTER / "adapter_config.json").write_text("{}")
    assert not is_run_dir(run.path)
    run.write_manifest({"base_model": "smollm2-135m-instruct"})
    assert is_run_dir(run.path) and run.is_lora() and run.base_spec() == "smollm2-135m-instruct"
    run.write_manifest({})
    with pytest.raises(RunDirError, match="no 'base_model_path'"):
        run.base_spec()


def test_run_dir_file_names_are_spelled_only_in_rundir():
    """Every other module asks RunDir. Debt: the evaluation-side modules below still spell a name; remove each
    from `pending` when it routes through RunDir (then this test keeps it there)."""
    pending: set[str] = set()
    spelled = set()
    for path in [*(REPO / "finetune").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        rel = str(path.relative_to(REPO))
        text = path.read_text(encoding="utf-8")
        code = re.sub(r'"""[\s\S]*?"""', "", text)  # docstrings may describe the layout
        if rel != "finetune/rundir.py" and any(f'{n}"' in code or f"{n}'" in code for n in NAMES):
            spelled.add(rel)
    assert spelled <= pending, sorted(spelled - pending)
