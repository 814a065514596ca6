"""Records: a resolved dataset's rows read and turned into standard records (no tokenizer).

    records, skipped, source = load_records(resolve_spec(spec), recipe.data)

Pure Python (no `datasets`, no torch), so validation and the contamination check read
training rows exactly as training does without importing the training stack.
"""

from finetune.data.errors import DataError
from finetune.data.formats import check_spec, expand, to_record
from finetune.data.registry import RegistryEntry, locate
from finetune.data.sources import read_source
from finetune.recipe import DataConfig


def load_records(entry: RegistryEntry, cfg: DataConfig, seed: int = 0) -> tuple[list[dict], list[str], str]:
    """(standard records, messages of skipped rows, what was read) for one resolved dataset."""
    check_spec(entry, entry.origin)
    source = locate(entry, cfg.data_dir)
    records, skipped = [], []
    for loc, row in read_source(source, entry, seed):
        try:
            if isinstance(row, DataError):
                raise row
            records += [to_record(r, entry, at, cfg.think) for at, r in expand(row, loc, entry)]
        except DataError as e:
            if not cfg.skip_invalid_rows:
                raise
            skipped.append(str(e))
        if entry.limit and len(records) >= entry.limit:
            break
    records = records[: entry.limit] if entry.limit else records
    if not records:
        first = f"; {len(skipped)} invalid row(s) skipped, the first: {skipped[0]}" if skipped else ""
        raise DataError(f"{entry.origin}: no usable rows in {source}{first}")
    return records, skipped, source
