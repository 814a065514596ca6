"""The generated key tables in README.md and eval/README.md are current and complete."""

from finetune.reference import TABLES, _task_keys, update_readmes
from finetune.eval.taskfile import HELP, SCHEMA
from finetune.resources import project_root


def test_every_task_key_has_its_one_line_of_help():
    assert {k for k, _ in _task_keys(SCHEMA)} == set(HELP)


def test_generated_tables_are_current(tmp_path):
    for name in TABLES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((project_root() / name).read_text(encoding="utf-8"), encoding="utf-8")
    assert update_readmes(tmp_path) == [], "stale key table: run python -m finetune.reference"


def test_a_stale_table_is_rewritten(tmp_path):
    for name, (header, _) in TABLES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# x\n\n{header}\n|---|\n| `old` | gone |\n\nafter\n", encoding="utf-8")
    assert sorted(update_readmes(tmp_path)) == sorted(TABLES)
    assert "`old`" not in (tmp_path / "eval/README.md").read_text() and "after" in (tmp_path / "README.md").read_text()
