"""Progress and notices: one reporting path below the CLI, so a library caller can silence or redirect it.

    from finetune.log import say, progress
    say("[finetune] resuming from ...")       # stdout, as print() did
    progress("[eval] gsm8k: 20/100")           # stderr: progress lines that are not results

Everything goes through the `finetune` logger. By default a console handler writes each
message as print() would (looked up at each call, so redirected or captured streams see
it). A library caller quiets it with `logging.getLogger("finetune").setLevel(logging.WARNING)`
or `finetune.log.quiet()`, or replaces `finetune.log.CONSOLE` with its own handler.
"""

import logging
import sys

LOG = logging.getLogger("finetune")


class _Console(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING or getattr(record, "to_stderr", False) else sys.stdout
        try:
            print(record.getMessage(), file=stream, flush=True)
        except (BrokenPipeError, ValueError):  # a closed pipe or stream: nothing left to tell
            pass


CONSOLE = _Console()
LOG.addHandler(CONSOLE)
LOG.setLevel(logging.INFO)
LOG.propagate = False  # not twice when the caller's root logger has handlers too


def say(message: str) -> None:
    LOG.info(message)


def progress(message: str) -> None:
    LOG.info(message, extra={"to_stderr": True})


def quiet() -> None:
    LOG.setLevel(logging.WARNING)
