"""Every error a user can cause derives from `BertonnxError`.

Each class also keeps the builtin base it had before the root existed (ValueError
for bad input, RuntimeError for a backend that cannot run, ImportError for a
missing extra), so `except ValueError` in callers keeps working. The CLI prints
a `BertonnxError` or an `OSError` as one line; anything else is a bug and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fix:
    """What would allow a refused call, as data: the argument and the value to pass (`force=True`).

    The library words it as its keyword (`force=True`); the CLI renders the same fix as its flag (`--force`).
    A tuple value lists alternatives (`unknown='unk' or 'zero'`, `--unknown unk|zero`); `...` names the argument
    alone (`min_fidelity`, `--min-fidelity`).
    """

    argument: str
    value: Any = True

    def as_argument(self) -> str:
        if self.value is ...:  # the argument to set, to a value of the caller's choosing
            return self.argument
        if isinstance(self.value, tuple):
            return f"{self.argument}=" + " or ".join(repr(choice) for choice in self.value)
        return f"{self.argument}={self.value!r}"


class BertonnxError(Exception):
    """Root of the errors a user can cause: bad input, a bad option, a damaged bundle.

    A message may name its remedies as `{argument}` placeholders with the fixes as keywords:
    `OutputError("{path} exists; {force} replaces it", force=True)`. `str(error)` words them as the library's
    arguments; `render` words them any other way (the CLI's flags), and `fixes` carries them as data.
    """

    def __init__(self, message: str = "", **fixes: Any) -> None:
        self.template = message
        self.fixes = tuple(Fix(argument, value) for argument, value in fixes.items())
        super().__init__(self.render(Fix.as_argument))

    def render(self, word: Callable[[Fix], str]) -> str:
        """The message with each fix worded by `word`."""
        message = self.template
        for fix in self.fixes:  # plain replacement: a quoted input may hold braces of its own
            message = message.replace("{" + fix.argument + "}", word(fix))
        return message

    def __reduce__(self) -> tuple[Any, ...]:  # Ray and multiprocessing carry errors across processes by pickle
        return _rebuild, (type(self), self.template, {fix.argument: fix.value for fix in self.fixes})


def _rebuild(cls: type[BertonnxError], template: str, fixes: dict[str, Any]) -> BertonnxError:
    return cls(template, **fixes)


class OptionError(BertonnxError, ValueError):
    """An option outside what it takes: an unknown pooling, threads < 1, a bad format."""


class BundleError(BertonnxError, ValueError):
    """A bundle is missing, damaged, or not one this version can read."""


class BackendError(BertonnxError, RuntimeError):
    """The requested backend, device or precision cannot run here."""


class ProviderError(BackendError):
    """The requested ONNX Runtime execution provider cannot be used here."""


class FidelityGateError(BackendError):
    """A reduced precision (bf16, fp16, int8) falls below its fidelity gate on this bundle."""


class InputError(BertonnxError, ValueError):
    """Input data the model cannot embed as asked."""


class EmptyWordError(InputError):
    """A word is empty, blank, or only characters the tokenizer's normaliser deletes."""


class TextTooLongError(InputError):
    """A text has more word pieces than the model takes, and long_text='error'."""


class UnknownWordError(InputError):
    """A word maps to the unknown token, and unknown='error'."""


class BadLineError(InputError):
    """A line of a bulk input file cannot be embedded (and on_error='fail')."""


class OutputError(BertonnxError, ValueError):
    """An output cannot be written, resumed or read back as asked."""


class JobError(BertonnxError, RuntimeError):
    """A bulk job's result would be incomplete: rows lost, repeated or out of order."""


class WorkKeptError(BertonnxError, OSError):
    """The disk refused a resumable job's write; its finished work is kept, and `resume` continues it.

    An OSError of the disk's errno (ENOSPC, EFBIG...), whose message names the fix.
    """

    def __init__(self, code: int | None, message: str, **fixes: Any) -> None:
        super().__init__(message, **fixes)
        self.errno = code  # type: ignore[misc]

    def __reduce__(self) -> tuple[Any, ...]:
        return _work_kept, (self.errno, self.template, {fix.argument: fix.value for fix in self.fixes})


def _work_kept(code: int | None, template: str, fixes: dict[str, Any]) -> WorkKeptError:
    return WorkKeptError(code, template, **fixes)


class MissingExtraError(BertonnxError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def missing_extra(what: str, extra: str, error: ImportError) -> MissingExtraError:
    """The one-line hint for a missing optional dependency."""
    return MissingExtraError(f"{what} needs {error.name or 'a package'}: pip install 'bertonnx[{extra}]'")
