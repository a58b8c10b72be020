"""Chat templates rendered as ``transformers.apply_chat_template`` renders them.

Semantics reproduced (and tested against transformers itself): an immutable sandboxed Jinja
environment with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension and a
``{% generation %}`` block tag (rendered transparently); ``tojson`` that does not HTML-escape and
takes ``indent``/``separators``/``sort_keys``; globals ``raise_exception`` and ``strftime_now``;
render variables ``messages``, ``tools``, ``documents``, ``add_generation_prompt``, the named
special tokens (``bos_token``...) and any extra kwargs, which override the special tokens.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

from smg.errors import ChatTemplateError

# jinja2 is imported on first use: `import smg` stays light.
_environment = None
_bounded = None
_environment_lock = threading.Lock()


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


# A render with limits (a request's own template) keeps them here: the bounded environment's hooks
# run in the rendering thread.
_bounds = threading.local()
_UNBOUNDED = (float("inf"), float("inf"))


def _within_bounds(size: int = 0) -> None:
    """Raise when the current bounded render is past its deadline, or ``size`` past its output limit."""
    from jinja2.exceptions import SecurityError

    deadline, max_chars = getattr(_bounds, "limits", _UNBOUNDED)
    if time.monotonic() > deadline:
        raise SecurityError("the chat template took too long to render")
    if size > max_chars:
        raise SecurityError(f"the chat template would produce more than {max_chars} characters")


def _bounded_environment():
    """The environment of templates that requests bring: every call, attribute or item access
    checks the render's deadline, and ``*`` / ``**`` refuse results past the output limit."""
    global _bounded
    with _environment_lock:
        if _bounded is None:
            from jinja2.exceptions import SecurityError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            class BoundedSandbox(ImmutableSandboxedEnvironment):
                intercepted_binops = frozenset(["*", "**"])

                def call_binop(self, context, operator, left, right):
                    _within_bounds()
                    if operator == "**" and isinstance(right, int) and abs(right) > 1024:
                        raise SecurityError("exponent too large in the chat template")
                    if operator == "*":
                        for seq, times in ((left, right), (right, left)):
                            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                                _within_bounds(len(seq) * times)
                    return super().call_binop(context, operator, left, right)

                def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
                    _within_bounds()
                    return super().call(__context, __obj, *args, **kwargs)

                def getattr(self, obj, attribute):
                    _within_bounds()
                    return super().getattr(obj, attribute)

                def getitem(self, obj, argument):
                    _within_bounds()
                    return super().getitem(obj, argument)

            _bounded = _configure(BoundedSandbox)
        return _bounded


def _get_environment():
    global _environment
    with _environment_lock:
        if _environment is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            _environment = _configure(ImmutableSandboxedEnvironment)
        return _environment


def _configure(kind):
    """An environment of class ``kind`` as transformers sets one up."""
    import jinja2
    import jinja2.ext

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: marks assistant text; renders as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(
                self.call_method("_render"), [], [], body
            ).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = kind(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _bounded_concat(pieces, limits: tuple[float, int]) -> str:
    """Join a render's pieces within ``limits`` (the hooks of the bounded environment read them)."""
    seconds, max_chars = limits
    _bounds.limits = (time.monotonic() + seconds, max_chars)
    try:
        out, size = [], 0
        for piece in pieces:
            size += len(piece)
            _within_bounds(size)
            out.append(piece)
        return "".join(out)
    finally:
        _bounds.limits = _UNBOUNDED


class ChatTemplate:
    """A compiled chat template.

    Example:
        >>> t = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}")
        >>> t.render([{"role": "user", "content": "hi"}])
        'user: hi\\n'
    """

    def __init__(self, source: str, bounded: bool = False) -> None:
        import jinja2

        self.source = source
        try:  # ``bounded``: a template from a request, rendered with limits (see ``render``)
            self._template = (_bounded_environment() if bounded else _get_environment()).from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template does not compile: {exc} (line {exc.lineno})") from exc
        # The globals (the environment's and the template's) as one dict, taken once: jinja's
        # ``render`` merges them into each call's variables through a ChainMap, two thirds of a
        # render of a short chat (13 -> 5 µs).
        self._globals = dict(self._template.globals)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        special_tokens: Mapping[str, str] | None = None,
        limits: tuple[float, int] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """The rendered chat; ``limits`` (``(seconds, characters)``, for a ``bounded`` template)
        bound the render's time and its output, past which it raises ``ChatTemplateError``."""
        import jinja2

        if not isinstance(messages, (list, tuple)):
            raise ChatTemplateError("messages must be a list of {'role', 'content'} dicts")
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise ChatTemplateError(f"messages[{i}] must be a dict with a 'role'")
        if tools is not None:
            for i, tool in enumerate(tools):
                if not isinstance(tool, Mapping):
                    raise ChatTemplateError(f"tools[{i}] must be a JSON-schema dict")
        template = self._template
        variables = {**self._globals, **(special_tokens or {}), **template_kwargs, "messages": messages,
                     "tools": tools, "documents": documents, "add_generation_prompt": add_generation_prompt}
        try:
            # what Template.render does, with the globals already in `variables` (shared=True)
            pieces = template.root_render_func(template.new_context(variables, shared=True))
            if limits is None:
                return template.environment.concat(pieces)
            return _bounded_concat(pieces, limits)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"chat template error: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError,
                RecursionError, OverflowError, MemoryError) as exc:
            raise ChatTemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc


def resolve_template_source(
    chat_template: str | None,
    directory: Path | None,
    config_template: str | list | None,
    has_tools: bool,
    allow_file: bool = True,
) -> str:
    """Pick the template source as documented on ``Tokenizer.apply_chat_template``.

    Order: ``chat_template`` (a template string, a path to a file unless ``allow_file`` is
    false, or the name of one of the config's named templates), else ``chat_template.jinja``
    beside the tokenizer, else the config's ``chat_template`` (a string, or a list of
    ``{"name", "template"}`` where ``tool_use`` is taken when tools are given and ``default``
    otherwise).
    """
    named: dict[str, str] = {}
    if isinstance(config_template, list):
        named = {t["name"]: t["template"] for t in config_template
                 if isinstance(t, dict) and "name" in t and "template" in t}
    if chat_template is not None:
        if not isinstance(chat_template, str):
            raise ChatTemplateError("chat_template must be a str (template, file path or name)")
        if chat_template in named:
            return named[chat_template]
        if "{" not in chat_template and "\n" not in chat_template and len(chat_template) < 4096:
            if not allow_file:  # not even whether such a file exists is told
                raise ChatTemplateError(f"chat_template {chat_template!r} is neither a template nor a known name")
            path = Path(chat_template)
            if path.is_file():
                return path.read_text(encoding="utf-8")
            raise ChatTemplateError(f"chat_template {chat_template!r} is neither a template, a file nor a known name")
        return chat_template
    if directory is not None and (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(config_template, str):
        return config_template
    if named:
        if has_tools and "tool_use" in named:
            return named["tool_use"]
        if "default" in named:
            return named["default"]
        raise ChatTemplateError(f"the tokenizer has chat templates {sorted(named)}; pass chat_template= to choose")
    raise ChatTemplateError(
        "this tokenizer has no chat template: pass chat_template= (a template or a file), or put "
        "chat_template.jinja beside tokenizer.json"
    )
