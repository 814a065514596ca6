"""Speed settings: the allocator (set when the `finetune` command starts), where backward stops, and the
one notice a speed path prints when the library internals it needs are absent (`fallback`).

glibc's malloc returns big freed blocks (activations, logits: hundreds of MB per step) to
the kernel and maps them again on the next step; on CPU that page-fault churn showed up as
~20% system time. Keeping them in the heap made a LoRA step on SmolLM2 11-19% faster here
for +4% peak memory (benchmarks/README.md). A no-op where glibc is not the allocator.

`stop_input_grads` is proven against transformers 5.23.0 and 5.24.0 (README "Tested versions"):
it relies on transformers keeping the embeddings' requires-grad hook in
`PreTrainedModel._require_grads_hooks`, registered before this one; without that attribute
backward runs down to the embeddings, as in transformers itself.
"""

import ctypes
import ctypes.util
import importlib.metadata

from finetune.log import say

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30

_NOTICED: set[str] = set()  # speed paths that have printed their fallback notice in this process


def fallback(path: str, package: str, needs: str) -> None:
    """Print once per process that speed path `path` is off because `package` lacks `needs`."""
    if path in _NOTICED:
        return
    _NOTICED.add(path)
    say(f"[finetune] {path} unavailable with {package} {_version(package)} (needs {needs}); using {package}'s own")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def tune_allocator() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    except (OSError, AttributeError):
        return False


def stop_input_grads(model, checkpoint_kwargs: dict | None):
    """Let backward stop at the first trainable module instead of running down to the embeddings.

    transformers' activation checkpointing marks the token embeddings' output as requiring
    grad (`enable_input_require_grads`) for every causal LM, which reentrant checkpointing
    needs. With the default non-reentrant checkpointing it only makes backward form input
    gradients through every frozen block: with freeze-last-2 on a 30-block model, 28 blocks
    of backward that update nothing. A hook registered after theirs detaches the
    embeddings' output again when no embedding parameter trains. Returns the hook's handle
    (remove it when training ends), or None where it left the model alone.
    """
    if (checkpoint_kwargs or {}).get("use_reentrant"):
        return None
    embeddings = model.get_input_embeddings()
    if embeddings is None or any(p.requires_grad for p in embeddings.parameters()):
        return None
    if not (hasattr(model, "_require_grads_hooks") or hasattr(model, "_require_grads_hook")):
        fallback("backward stop at the first trainable module", "transformers",
                 "PreTrainedModel._require_grads_hooks from enable_input_require_grads")
        return None
    return embeddings.register_forward_hook(lambda module, args, output: output.detach())
