"""Prompt templates: one renderer for training and evaluation alike.

A template is a small YAML file in prompts/ (or any path):

    wrap: chat            # chat: the tokenizer's chat template; raw: plain text
    system: null          # optional system message (chat) or preamble (raw)
    user: "{prompt}"      # how the user prompt is written; {prompt} is the example's prompt
    exemplars: null       # optional file of few-shot exemplars, inserted as {exemplars}:
                          # plain text, or a YAML list of {question, target} docs written
                          # with `exemplar` ("Q: {question}\nA: {target}") and joined by blank lines

Training renders (prompt, completion) with `render_prompt` + `render_completion`, and chat
conversations with `render_turns`; the eval harness renders the very same `render_prompt`,
so a model is evaluated with the prompt it was trained on. The template's source text is
saved in each run directory.

Reasoning traces (`data.think`): `think_text` writes `<think>\n{reasoning}\n</think>\n\n{answer}`.
Where the tokenizer's chat template has a thinking mode of its own (it reads an assistant
message's `reasoning_content`, as Qwen3's does), the reasoning goes there and the model's
template writes the block; otherwise (SmolLM2, raw wraps) the block is plain text in the
assistant's content: the fallback.
"""

from dataclasses import dataclass
from pathlib import Path

from finetune.answers import THINK_CLOSE, THINK_OPEN, split_think
from finetune.errors import UserError
from finetune.resources import resource_dir
from finetune.yamlfile import read_text, read_yaml_file

WRAPS = ("chat", "raw")
KEYS = ("wrap", "user", "system", "exemplars", "exemplar", "description")  # every key a template file may have


class TemplateError(UserError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    wrap: str = "chat"
    user: str = "{prompt}"
    system: str | None = None
    exemplars: str | None = None  # text of the exemplars, already read from its file
    source: str = ""  # the YAML text, saved into run directories

    def user_text(self, prompt: str) -> str:
        return self.user.replace("{exemplars}", self.exemplars or "").replace("{prompt}", prompt)


def available_templates() -> list[str]:
    return sorted(p.stem for p in resource_dir("prompts").glob("*.yaml"))


def load_template(name_or_path: str) -> Template:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = resource_dir("prompts") / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TemplateError(f"unknown prompt template {name_or_path!r}; accepted: a YAML file path or one of "
                            f"{', '.join(available_templates())}")
    spec, source = _read_spec(path)
    exemplars = None
    if spec.get("exemplars"):
        ex_path = (path.parent / spec["exemplars"])
        if not ex_path.is_file():
            raise TemplateError(f"{path}: exemplars file {ex_path} does not exist")
        exemplars = _read_exemplars(ex_path, spec.get("exemplar") or "Q: {question}\nA: {target}", path)
    return Template(name=path.stem, wrap=spec.get("wrap", "chat"), user=spec.get("user") or "{prompt}",
                    system=spec.get("system"), exemplars=exemplars, source=source)


def _read_spec(path: Path) -> tuple[dict, str]:
    """The checked keys of a template file and its text."""
    spec, _, source = read_yaml_file(path, error=TemplateError)
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise TemplateError(f"{path}: a template is a mapping of keys ({', '.join(sorted(KEYS))}), got "
                            f"{type(spec).__name__}")
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise TemplateError(f"{path}: unknown key(s) {sorted(unknown)}; accepted: {sorted(KEYS)}")
    wrong = [k for k, v in spec.items() if v is not None and not isinstance(v, str)]
    if wrong:
        raise TemplateError(f"{path}: {wrong[0]}: expected text, got {type(spec[wrong[0]]).__name__}")
    if spec.get("wrap", "chat") not in WRAPS:
        raise TemplateError(f"{path}: wrap must be one of {WRAPS}, got {spec.get('wrap')!r}")
    if "{prompt}" not in (spec.get("user") or "{prompt}"):
        raise TemplateError(f"{path}: 'user' must contain the placeholder {{prompt}}")
    return spec, source


def _read_exemplars(ex_path: Path, layout: str, template_path: Path) -> str:
    if ex_path.suffix not in (".yaml", ".yml"):
        return read_text(ex_path, error=TemplateError)
    docs, _, _ = read_yaml_file(ex_path, error=TemplateError)
    if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) for d in docs):
        raise TemplateError(f"{ex_path}: expected a YAML list of exemplar docs such as {{question, target}}")
    try:
        return "\n\n".join(layout.format(**d) for d in docs)
    except KeyError as e:
        raise TemplateError(f"{template_path}: exemplar: placeholder {e} is not a key of the docs in "
                            f"{ex_path}; their keys: {', '.join(docs[0])}") from None
    except (ValueError, IndexError, AttributeError) as e:  # '{0}', '{x.y}' or an unbalanced '{' in the layout
        raise TemplateError(f"{template_path}: exemplar: {layout!r} is not a layout of {{field}} "
                            f"placeholders ({e})") from None


def _apply(template: Template, tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"template {template.name!r} wraps prompts in the model's chat template, but the "
                            "tokenizer has none; use a raw template such as 'plain' or 'alpaca'")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _chat(template: Template, tokenizer, turns: list[dict], add_generation_prompt: bool) -> str:
    messages = ([{"role": "system", "content": template.system}] if template.system else []) + turns
    return _apply(template, tokenizer, messages, add_generation_prompt)


def thinking_mode(tokenizer) -> bool:
    """Whether the tokenizer's chat template writes think blocks itself from `reasoning_content`."""
    chat = getattr(tokenizer, "chat_template", None)
    return isinstance(chat, str) and "reasoning_content" in chat


def think_text(reasoning: str, answer: str) -> str:
    """The plain think-block layout (an empty reasoning gives the empty block `<think>\n\n</think>`)."""
    reasoning = reasoning.strip("\n")
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}" if reasoning.strip() else \
        f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{answer}"


def assistant_message(template: Template, tokenizer, content: str, think: bool) -> dict:
    """An assistant turn; with `think`, a leading think block goes to `reasoning_content` in thinking mode."""
    if think and template.wrap == "chat" and thinking_mode(tokenizer):
        state, reasoning, answer = split_think(content)
        if state == "closed":
            return {"role": "assistant", "content": answer, "reasoning_content": reasoning.strip("\n")}
    return {"role": "assistant", "content": content}


def render_prompt(template: Template, tokenizer, prompt: str) -> str:
    """The exact text the model sees before it starts its answer."""
    user = template.user_text(prompt)
    if template.wrap == "raw":
        return (template.system or "") + user
    return _chat(template, tokenizer, [{"role": "user", "content": user}], add_generation_prompt=True)


def render_completion(template: Template, tokenizer, prompt: str, completion: str, think: bool = False) -> str:
    """The text that follows `render_prompt(...)`, ending with the end-of-turn / EOS token.

    think: the completion starts with a think block, rendered by the chat template's thinking mode if it has one."""
    if template.wrap == "raw":
        return completion + tokenizer.eos_token
    head = render_prompt(template, tokenizer, prompt)
    user = template.user_text(prompt)
    answer = assistant_message(template, tokenizer, completion, think)
    full = _chat(template, tokenizer, [{"role": "user", "content": user}, answer], add_generation_prompt=False)
    if answer.get("reasoning_content") and answer["reasoning_content"] not in full[len(head):]:
        raise TemplateError(f"template {template.name!r}: the model's chat template drops the reasoning of the "
                            "answer (reasoning_content), so the think block would not be trained; use data.think: none")
    if not full.startswith(head):
        raise TemplateError(f"template {template.name!r}: the chat template does not render the prompt as a "
                            "prefix of prompt + answer, so the loss mask would be wrong")
    return full[len(head):]


def render_turns(template: Template, tokenizer, messages: list[dict], think: bool = False,
                 last_only: bool = False) -> list[tuple[str, bool]]:
    """A conversation as consecutive (text, is_assistant) pieces that join into its full rendering.

    Each assistant piece is exactly what the model writes for that turn, its end-of-turn token
    included. Chat wraps render incrementally with the chat template (the text up to turn k
    must be a prefix of the text up to turn k+1); user turns go through the template's `user`,
    and the template's `system` is used when the conversation has none. Turns after the last
    assistant turn are dropped: nothing in them is trained. think: assistant turns' think blocks
    go through the chat template's thinking mode where it has one (`assistant_message`).
    last_only (data.messages_loss: last): chat wraps render two pieces, everything before the final
    assistant turn and that turn, so a template that rewrites earlier turns (Qwen3 drops their
    reasoning) can still be trained on its last one.
    """
    msgs = [assistant_message(template, tokenizer, m["content"], think) if m["role"] == "assistant" else
            {"role": m["role"], "content": template.user_text(m["content"]) if m["role"] == "user" else m["content"]}
            for m in messages]
    own_system = any(m["role"] == "system" for m in msgs)
    if template.wrap == "raw":  # the raw layout of render_prompt + render_completion, turn after turn
        pieces = [] if own_system or not template.system else [(template.system, False)]
        for m in msgs:
            text = {"system": m["content"] + "\n\n", "user": m["content"],
                    "assistant": m["content"] + tokenizer.eos_token}[m["role"]]
            pieces.append((text, m["role"] == "assistant"))
        while pieces and not pieces[-1][1]:
            pieces.pop()
        return pieces
    if template.system and not own_system:
        msgs.insert(0, {"role": "system", "content": template.system})
    pieces = []
    done = ""
    last = max((k for k, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    for k, m in enumerate(msgs):
        if m["role"] != "assistant" or (last_only and k != last):
            continue
        head = _apply(template, tokenizer, msgs[:k], add_generation_prompt=True)
        full = _apply(template, tokenizer, msgs[: k + 1], add_generation_prompt=False)
        if not head.startswith(done) or not full.startswith(head):
            raise TemplateError(f"template {template.name!r}: the chat template does not render turn {k + 1} as a "
                                "continuation of the turns before it (it rewrites earlier turns), so per-turn "
                                "loss masks cannot be cut from it; data.messages_loss: last trains the final turn")
        pieces += [(head[len(done):], False), (full[len(head):], True)]
        done = full
    return pieces
