"""Values that would only fail after a model loads are caught by `finetune validate`."""

import pytest

from finetune.cli import main

BASE = """\
data:
  datasets:
    - {DATASET}
method: {METHOD}
output: {dir: "OUT"}
"""
CASES = {  # name -> (dataset entry, method, output dir or None, fragment of the message)
    "file_url": ("{source: 'file:///tmp/x.jsonl', format: alpaca}", "{name: lora}", None, "'file://' is not read"),
    "ftp_url": ("{source: 'ftp://host/x.jsonl', format: alpaca}", "{name: lora}", None, "'ftp://' is not read"),
    "s3_url": ("{source: 's3://bucket/x.jsonl', format: alpaca}", "{name: lora}", None, "'s3://' is not read"),
    "empty_source": ("{source: '', format: alpaca}", "{name: lora}", None, "source: empty"),
    "empty_targets": ("{name: arith_cot}", "{name: lora, target_modules: []}", None, "an empty list adapts nothing"),
    "blank_target": ("{name: arith_cot}", "{name: lora, target_modules: ['q_proj', ' ']}", None,
                     "a module name is empty"),
    "out_under_proc": ("{name: arith_cot}", "{name: lora}", "/proc/finetune-run/x", "output.dir: cannot create"),
    "out_under_sys": ("{name: arith_cot}", "{name: lora}", "/sys/finetune-run", "output.dir: cannot create"),
    "out_under_file": ("{name: arith_cot}", "{name: lora}", "/dev/null/run", "is a file, not a folder"),
    "out_with_nul": ("{name: arith_cot}", "{name: lora}", "runs/a\\0b", "NUL character"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_caught_before_any_model_loads(case, tmp_path, capsys):
    dataset, method, out, fragment = CASES[case]
    text = BASE.replace("{DATASET}", dataset).replace("{METHOD}", method).replace("OUT", out or str(tmp_path / "r"))
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err and fragment in err, err


def test_http_urls_and_local_paths_are_still_accepted(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    for source in ["https://example.org/x.jsonl", str(data)]:
        text = BASE.replace("{DATASET}", f"{{source: '{source}', format: alpaca}}").replace(
            "{METHOD}", "{name: lora, target_modules: [q_proj]}").replace("OUT", str(tmp_path / "run"))
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
