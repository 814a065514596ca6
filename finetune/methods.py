"""What to train: lora (PEFT) | freeze (only some blocks) | full; and the trainable table.

`freeze` follows LLaMA-Factory's partial-layer finetuning: layers=+N trains the last N
transformer blocks, -N the first N, plus any named extra modules (final norm, lm_head).
The block list is discovered from the model (the largest ModuleList of identical
blocks), so GPT-2 (`transformer.h`), Llama/Qwen/Gemma (`model.layers`) all work.
"""

from torch import nn

from finetune.errors import UserError
from finetune.recipe import MethodConfig


class MethodError(UserError):
    pass


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the transformer blocks."""
    best, best_size = None, -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = (name, module), size
    if best is None:
        raise MethodError(f"could not find the transformer blocks of {type(model).__name__}")
    return best


def extra_module_names(model: nn.Module) -> dict[str, str]:
    """Short name -> qualified name of trainable modules outside the blocks (norm, lm_head, embeddings)."""
    blocks_name, _ = find_blocks(model)
    out = {}
    for name, module in model.named_modules():
        if not name or name == blocks_name or name.startswith(blocks_name + "."):
            continue
        if any(True for _ in module.parameters(recurse=False)):
            out.setdefault(name.rsplit(".", 1)[-1], name)
            out[name] = name
    return out


def apply_freeze(model: nn.Module, layers: int, extra_modules: list[str]) -> nn.Module:
    blocks_name, blocks = find_blocks(model)
    n = len(blocks)
    if layers == 0 and not extra_modules:
        raise MethodError("method.layers: 0 with no extra_modules trains nothing")
    if abs(layers) > n:
        raise MethodError(f"method.layers: {layers} asks for more blocks than the model has ({n}); "
                          f"accepted: -{n}..{n}")
    chosen = range(n - layers, n) if layers >= 0 else range(0, -layers)
    valid = extra_module_names(model)
    bad = [m for m in extra_modules if m not in valid]
    if bad:
        raise MethodError(f"method.extra_modules: unknown module(s) {bad}; valid names: "
                          f"{', '.join(sorted(k for k in valid if '.' not in k))} "
                          f"(or qualified: {', '.join(sorted(k for k in valid if '.' in k))})")
    for p in model.parameters():
        p.requires_grad_(False)
    for i in chosen:
        for p in blocks[i].parameters():
            p.requires_grad_(True)
    modules = dict(model.named_modules())
    for m in extra_modules:
        for p in modules[valid[m]].parameters():
            p.requires_grad_(True)
    return model


def apply_lora(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    if isinstance(targets, list):
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        bad = [t for t in targets if t not in linear]
        if bad:
            raise MethodError(f"method.target_modules: {bad} not found among the model's linear layers; "
                              f"accepted: 'all-linear' or names from {', '.join(linear)}")
    elif targets != "all-linear":
        raise MethodError(f"method.target_modules: {targets!r}; accepted: 'all-linear' or a list of module names")
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                        use_dora=cfg.use_dora, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def apply_method(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    if cfg.name == "lora":
        return apply_lora(model, cfg)
    if cfg.name == "freeze":
        return apply_freeze(model, cfg.layers, cfg.extra_modules)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_table(model: nn.Module) -> dict:
    """Per block and in total: trainable / all parameters (shared tensors counted once)."""
    blocks_name, blocks = find_blocks(model)
    block_of = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            block_of[id(p)] = f"block {i}"
    rows, seen = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        group = block_of.get(id(p)) or name.rsplit(".", 1)[0].removeprefix("base_model.model.")
        r = rows.setdefault(group, {"trainable": 0, "total": 0})
        r["total"] += p.numel()
        r["trainable"] += p.numel() if p.requires_grad else 0
    ordered = [f"block {i}" for i in range(len(blocks))]
    ordered += [g for g in rows if g not in ordered]
    total = sum(r["total"] for r in rows.values())
    trainable = sum(r["trainable"] for r in rows.values())
    return {"blocks_module": blocks_name, "rows": [{"group": g, **rows[g]} for g in ordered],
            "trainable": trainable, "total": total, "percent": round(100.0 * trainable / max(total, 1), 4)}


def format_table(table: dict) -> str:
    width = max(10, *(len(r["group"]) for r in table["rows"]))
    lines = [f"{'group':<{width}} {'trainable':>12} {'total':>12} {'%':>8}"]
    for r in table["rows"]:
        pct = 100.0 * r["trainable"] / max(r["total"], 1)
        lines.append(f"{r['group']:<{width}} {r['trainable']:>12,} {r['total']:>12,} {pct:>7.2f}%")
    lines.append(f"{'TOTAL':<{width}} {table['trainable']:>12,} {table['total']:>12,} {table['percent']:>7.2f}%")
    return "\n".join(lines)
