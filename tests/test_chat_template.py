"""Chat templates render exactly as transformers' apply_chat_template, and fail with typed errors."""
import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.errors import ChatTemplateError
from smg.tokenizer import Tokenizer
from smg.tokenizer.templates import TEMPLATES, template_path

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "description": "Web search <b>&</b> \"quotes\" 日本",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": [{"type": "text", "text": "Multi"}, {"type": "text", "text": "-part"}]},
     {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "image_url", "image_url": {"url": "x"}},
                                  {"type": "text", "text": "this."}]}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
     {"role": "assistant", "content": "It is 21°C and clear.", "reasoning_content": "The tool said 21."},
     {"role": "user", "content": "Thanks 😀"}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nDone."},
     {"role": "user", "content": "Again, in 日本語."}],
]
KWARGS = [{}, {"enable_thinking": False}, {"enable_thinking": True, "thinking": True},
          {"date_string": "26 Jul 2024", "custom_flag": "x"}]
TEMPLATE_TOKENIZER = {"llama3": "llama", "chatml_qwen3": "llama", "deepseek_v3": "deepseek"}


@pytest.fixture(scope="module")
def transformers_tokenizers(llama_dir, deepseek_dir, llama, deepseek):
    from transformers import PreTrainedTokenizerFast

    return {name: PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), **ours.special_tokens_map)
            for name, d, ours in (("llama", llama_dir, llama), ("deepseek", deepseek_dir, deepseek))}


@pytest.mark.parametrize("template_name", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_rendering_matches_transformers(template_name, conversation, transformers_tokenizers, llama, deepseek):
    which = TEMPLATE_TOKENIZER[template_name]
    ours = {"llama": llama, "deepseek": deepseek}[which]
    theirs = transformers_tokenizers[which]
    source = template_path(template_name).read_text()
    messages = CONVERSATIONS[conversation]
    for tools in (None, [WEATHER], [WEATHER, SEARCH]):
        for kwargs in KWARGS:
            for gen in (True, False):
                expected = theirs.apply_chat_template(messages, tools=tools, chat_template=source, tokenize=False,
                                                      add_generation_prompt=gen, **kwargs)
                got = ours.apply_chat_template(messages, tools=tools, chat_template=source,
                                               add_generation_prompt=gen, **kwargs)
                assert got == expected
                assert ours.encode(got) == theirs.encode(expected, add_special_tokens=False)


user_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@given(texts=st.lists(user_text, min_size=1, max_size=5), system=user_text)
@settings(max_examples=40, deadline=None)
def test_random_conversations_match_transformers(texts, system, transformers_tokenizers, llama):
    messages = [{"role": "system", "content": system}]
    for i, text in enumerate(texts):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    source = template_path("chatml_qwen3").read_text()
    expected = transformers_tokenizers["llama"].apply_chat_template(messages, chat_template=source, tokenize=False,
                                                                    add_generation_prompt=True)
    assert llama.apply_chat_template(messages, chat_template=source) == expected


def test_strftime_now_and_tojson_options(llama):
    template = "{{ strftime_now('%Y') }}|{{ {'b': '<&>', 'a': [1]} | tojson(indent=2, sort_keys=True) }}"
    out = llama.apply_chat_template([], chat_template=template)
    year, dumped = out.split("|", 1)
    assert year.isdigit() and len(year) == 4
    assert json.loads(dumped) == {"a": [1], "b": "<&>"} and "<&>" in dumped


def test_special_tokens_are_variables_and_kwargs_override(llama):
    assert llama.apply_chat_template([], chat_template="{{ bos_token }}|{{ eos_token }}") == \
        "<|begin_of_text|>|<|end_of_text|>"
    assert llama.apply_chat_template([], chat_template="{{ bos_token }}", bos_token="X") == "X"
    # a kwarg may shadow a template global, as with jinja's own render
    assert llama.apply_chat_template([], chat_template="{{ raise_exception }}", raise_exception="shadowed") == \
        "shadowed"


def test_unknown_variables_render_empty(llama):
    assert llama.apply_chat_template([{"role": "user", "content": "a"}],
                                     chat_template="[{{ nope }}]{% if also_nope %}x{% endif %}") == "[]"


def test_generation_block_and_loopcontrols(llama):
    template = ("{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
                "{% generation %}{{ m['content'] }}{% endgeneration %};{% endfor %}")
    messages = [{"role": "user", "content": c} for c in "abc"]
    assert llama.apply_chat_template(messages, chat_template=template) == "a;b;"


@pytest.mark.parametrize("template, match", [
    ("{{ raise_exception('no system role') }}", "no system role"),
    ("{% for x in %}", "does not compile"),
    ("{{ messages.__class__.__mro__ }}", "chat template error"),  # sandbox
    ("{% set _ = messages.append(1) %}", "chat template error"),  # immutable sandbox
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ messages[0]['content'] + 1 }}", "TypeError"),
])
def test_template_failures_are_typed(llama, template, match):
    with pytest.raises(ChatTemplateError, match=match):
        llama.apply_chat_template([{"role": "user", "content": "x"}], chat_template=template)


@pytest.mark.parametrize("messages", ["not a list", [1], [{"content": "no role"}]])
def test_bad_messages_are_typed(llama, messages):
    with pytest.raises(ChatTemplateError):
        llama.apply_chat_template(messages, chat_template="x")


def test_template_resolution_order(tmp_path, llama_dir):
    shutil.copy(llama_dir / "tokenizer.json", tmp_path)
    config = json.loads((llama_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "config"}))
    assert Tokenizer.from_dir(tmp_path).apply_chat_template([]) == "config"
    (tmp_path / "chat_template.jinja").write_text("file beside")
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.apply_chat_template([]) == "file beside"
    (tmp_path / "chat_template.jinja").write_text("edited")  # template files are read once per tokenizer
    assert tok.apply_chat_template([]) == "file beside"
    assert Tokenizer.from_dir(tmp_path).apply_chat_template([]) == "edited"
    (tmp_path / "other.jinja").write_text("explicit file")
    assert tok.apply_chat_template([], chat_template=str(tmp_path / "other.jinja")) == "explicit file"
    assert tok.apply_chat_template([], chat_template="{{ 'explicit string' }}") == "explicit string"
    with pytest.raises(ChatTemplateError, match="neither"):
        tok.apply_chat_template([], chat_template="missing.jinja")


def test_named_templates_in_config(tmp_path, llama_dir):
    shutil.copy(llama_dir / "tokenizer.json", tmp_path)
    named = [{"name": "default", "template": "default"}, {"name": "tool_use", "template": "tools"},
             {"name": "rag", "template": "rag"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.apply_chat_template([]) == "default"
    assert tok.apply_chat_template([], tools=[WEATHER]) == "tools"
    assert tok.apply_chat_template([], chat_template="rag") == "rag"
