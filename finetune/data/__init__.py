"""Datasets: from a recipe's `data:` section to tokenized train / validation sets for TRL.

    registry.py   data/<name>.yaml definitions, recipe overrides, data-path override, `ls datasets`
    sources.py    rows from local files, URLs, the hub, built-in generators (with row locations)
    decode.py     file bytes: type from the suffix (.gz/.bz2/.xz too), what a misnamed file really is, bounds
    readers.py    JSONL / JSON / CSV / TSV / Parquet parsers: strict JSON, duplicate headers, row-level errors
    formats.py    row -> standard record: alpaca, prompt_completion, cot, messages, text
    records.py    a resolved dataset -> its records (pure Python: validation and contamination read it too)
    contamination.py  n-gram overlap between training records and eval documents
    tokenize.py   record -> input_ids + labels: the loss-mask rules
    build.py      all of it, cached, mixed, split, shuffled: build_datasets() -> DataBundle
    audit.py      token counts and the label checks that run before training
    preview.py    `finetune preview`: examples with the mask in colour, totals, audit
    synthetic.py  built-in generators (arithmetic CoT)
"""
