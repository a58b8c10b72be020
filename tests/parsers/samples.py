"""Model outputs written from each family's format (../shared/docs/parser-formats.md and the
models' chat templates): (family, output, expected content, expected [(name, arguments dict)]),
and the helpers the parser tests share."""
from hypothesis import strategies as st


def split(data, text, max_cuts=8):
    """``text`` cut into pieces at up to ``max_cuts`` positions drawn by hypothesis (empty pieces too)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=max_cuts)))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def without_generated_ids(delta):
    """A ToolDelta comparable across runs: generated ids (``call_`` + random hex) differ, ids read
    from the model's output must not."""
    return delta.content, [(c.index, c.name, c.arguments, None if c.id is None or c.id.startswith("call_") else c.id)
                           for c in delta.calls]


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                         "metric": {"type": "boolean"}, "tags": {"type": "array"}}}}},
    {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}},
]

PARIS = ("get_weather", {"city": "Paris", "days": 3})
TOKYO = ("search", {"q": "東京 天気 ☀️ \"quoted\" {braces}"})

TOOL_SAMPLES = [
    ("hermes", 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n'
               '<tool_call>\n{"name": "search", "arguments": {"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}}\n</tool_call>',
     "Let me check.\n\n", [PARIS, TOKYO]),
    ("hermes", "No tools needed, just text with <b>tags</b>.", "No tools needed, just text with <b>tags</b>.", []),
    # a call after leading text, behind the python tag (as the Rust gateway's own test has it)
    ("llama3_json", 'Here are some results: <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", '
                    '"days": 3}}', "Here are some results: ", [PARIS]),
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}; '
                    '{"name": "search", "parameters": {"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}}', "", [PARIS, TOKYO]),
    ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}', "", [PARIS]),
    ("llama3_json", 'The answer is {"a": 1}.', 'The answer is {"a": 1}.', []),
    # pythonic lists after leading text, several of them, nested literals, text between them content
    ("pythonic", 'Let me check. [get_weather(city="Paris", days=3)] and [search(q="a")] done.',
     "Let me check.  and  done.", [PARIS, ("search", {"q": "a"})]),
    ("pythonic", "<|python_start|>[get_weather(city='Paris', tags=[1, {'k': [True, None]}])]<|python_end|>"
                 "Then: <|python_start|>[search(q='x')]<|python_end|>",
     "Then: ", [("get_weather", {"city": "Paris", "tags": [1, {"k": [True, None]}]}), ("search", {"q": "x"})]),
    ("pythonic", "Lists like [1, 2] or [link](url) and a call [broken(a=)] stay text.",
     "Lists like [1, 2] or [link](url) and a call [broken(a=)] stay text.", []),
    ("pythonic", '[get_weather(city="Paris", days=3), search(q=\'東京 天気 ☀️ "quoted" {braces}\')]', "", [PARIS, TOKYO]),
    ("pythonic", '<|python_start|>[get_weather(city="Paris", days=3)]<|python_end|>', "", [PARIS]),
    ("pythonic", "Just [a] list of words.", "Just [a] list of words.", []),
    ("mistral", 'Sure [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, '
                '{"name": "search", "arguments": {"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}}]', "Sure ", [PARIS, TOKYO]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}'
                '[TOOL_CALLS]search[ARGS]{"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}', "", [PARIS, TOKYO]),
    ("deepseek_v3", "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                    '{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>search\n'
                    '```json\n{"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
     "Checking.", [PARIS, TOKYO]),
    ("deepseek_v31", '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "days": 3}'
                     '<｜tool▁call▁end｜><｜tool▁call▁begin｜>search<｜tool▁sep｜>{"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}'
                     "<｜tool▁call▁end｜><｜tool▁calls▁end｜> done", " done", [PARIS, TOKYO]),
    # DSML: an invoke whose body is a JSON object rather than parameter tags
    ("deepseek_v32", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n{"city": "Paris", "days": 3}\n'
                     '</｜DSML｜invoke>\n<｜DSML｜invoke name="search">\n<｜DSML｜parameter name="q" string="true">x'
                     "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", "", [PARIS, ("search", {"q": "x"})]),
    ("deepseek_v32", 'Sure.<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n'
                     '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
                     '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
                     '<｜DSML｜invoke name="search">\n<｜DSML｜parameter name="q" string="true">東京 天気 ☀️ "quoted" {braces}'
                     "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", "Sure.", [PARIS, TOKYO]),
    ("qwen3_coder", "I will call two tools.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=search>\n"
                    '<parameter=q>\n東京 天気 ☀️ "quoted" {braces}\n</parameter>\n</function>\n</tool_call>',
     "I will call two tools.\n\n", [PARIS, TOKYO]),
    # Python literals and JSON with escaped quotes, typed by the schema; an untyped parameter stays text
    ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter=metric>\nTrue\n</parameter>\n"
                    '<parameter=tags>\n[\\"sun\\", \\"wind\\"]\n</parameter>\n<parameter=days>\n3\n</parameter>\n'
                    "<parameter=note>\n42\n</parameter>\n</function>\n</tool_call>", "",
     [("get_weather", {"metric": True, "tags": ["sun", "wind"], "days": 3, "note": "42"})]),
    ("glm45", "<tool_call>get_weather\n<arg_key>metric</arg_key>\n<arg_value>False</arg_value>\n"
              "<arg_key>tags</arg_key>\n<arg_value>['a', None]</arg_value>\n</tool_call>", "",
     [("get_weather", {"metric": False, "tags": ["a", None]})]),
    ("seed_oss", "<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris</parameter>\n<parameter=days>3</parameter>\n"
                 "</function>\n</seed:tool_call>", "", [PARIS]),
    ("glm45", "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n"
              "<arg_value>3</arg_value>\n</tool_call><tool_call>search\n<arg_key>q</arg_key>\n"
              '<arg_value>東京 天気 ☀️ "quoted" {braces}</arg_value>\n</tool_call>', "", [PARIS, TOKYO]),
    ("glm47", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key>"
              "<arg_value>3</arg_value></tool_call>", "", [PARIS]),
    ("kimi_k2", "Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                '<|tool_call_argument_begin|>{"city": "Paris", "days": 3}<|tool_call_end|><|tool_call_begin|>functions.search:1'
                '<|tool_call_argument_begin|>{"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}<|tool_call_end|>'
                "<|tool_calls_section_end|>", "Let me look.", [PARIS, TOKYO]),
    ("minimax_m2", '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
                   '<parameter name="days">3</parameter>\n</invoke>\n<invoke name="search">\n'
                   '<parameter name="q">東京 天気 ☀️ "quoted" {braces}</parameter>\n</invoke>\n</minimax:tool_call>',
     "", [PARIS, TOKYO]),
    ("step3", '<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="get_weather">'
              '<steptml:parameter name="city">Paris</steptml:parameter><steptml:parameter name="days">3'
              "</steptml:parameter></steptml:invoke><｜tool_call_end｜><｜tool_calls_end｜>", "", [PARIS]),
    ("gpt_oss", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "days": 3}'
                "<|call|>", "", [PARIS]),
    ("cohere", '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris", "days": 3}}, '
               '{"tool_call_id": "1", "tool_name": "search", "parameters": {"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}}]'
               "<|END_ACTION|>", "", [PARIS, TOKYO]),
    ("granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]', "", [PARIS]),
    ("internlm", 'Sure<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}'
                 "<|action_end|>", "Sure", [PARIS]),
    ("hunyuan", '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]</tool_calls>', "", [PARIS]),
    # DeepSeek V4: DSML in a tool_calls block
    ("deepseek_v4", 'Sure.<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
                    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
                    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
                    '<｜DSML｜invoke name="search">\n<｜DSML｜parameter name="q" string="true">東京 天気 ☀️ "quoted" {braces}'
                    "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", "Sure.", [PARIS, TOKYO]),
    # Kimi K3 (XTML): a response channel (content) and a tools channel with typed arguments
    ("kimi_k3", "<|open|>response<|sep|>Let me look.<|close|>response<|sep|><|open|>tools<|sep|>"
                '<|open|>call tool="get_weather" index="0"<|sep|><|open|>argument key="city" type="string"<|sep|>Paris'
                '<|close|>argument<|sep|><|open|>argument key="days" type="integer"<|sep|>3<|close|>argument<|sep|>'
                '<|close|>call<|sep|><|open|>call tool="search" index="1"<|sep|><|open|>argument key="q" type="string"<|sep|>'
                '東京 天気 ☀️ "quoted" {braces}<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>',
     "Let me look.", [PARIS, TOKYO]),
    # Gemma 4: call:NAME{...} with <|"|> quoting strings; FunctionGemma the same with <escape>
    ("gemma4", 'Checking.<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>'
               '<|tool_call>call:search{q:<|"|>東京 天気 ☀️ "quoted" {braces}<|"|>}<tool_call|>', "Checking.", [PARIS, TOKYO]),
    ("gemma4", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,tags:[<|"|>a, b<|"|>,{k:true,n:null}],metric:false}'
               "<tool_call|>", "", [("get_weather", {"city": "Paris", "tags": ["a, b", {"k": True, "n": None}], "metric": False})]),
    ("functiongemma", "<start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}<end_function_call>"
                      '<start_function_call>call:search{q:<escape>東京 天気 ☀️ "quoted" {braces}<escape>}<end_function_call>',
     "", [PARIS, TOKYO]),
    # MiniMax M3: every tag behind the namespace token (spacing after it ignored); nested values
    ("minimax_m3", "Let me check.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">\n"
                   "]<]minimax[>[<city>Paris]<]minimax[>[</city>\n]<]minimax[>[ <days>3]<]minimax[>[</days>\n"
                   "]<]minimax[>[<tags>]<]minimax[>[<item>sun]<]minimax[>[</item>]<]minimax[>[<item>wind]<]minimax[>[</item>"
                   "]<]minimax[>[</tags>\n]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name=\"search\">"
                   ']<]minimax[>[<q>東京 天気 ☀️ "quoted" {braces}]<]minimax[>[</q>]<]minimax[>[</invoke>\n'
                   "]<]minimax[>[</tool_call>", "Let me check.",
     [("get_weather", {"city": "Paris", "days": 3, "tags": ["sun", "wind"]}), TOKYO]),
    # OLMo 3: one Python call per line; JSON literals too
    ("olmo3", "I'll check.<function_calls>\nget_weather(city=\"Paris\", days=3)\n"
              "search(q='東京 天気 ☀️ \"quoted\" {braces}')\n</function_calls>", "I'll check.", [PARIS, TOKYO]),
    ("olmo3", "<function_calls>\nget_weather(city='Paris', metric=true, tags=null)\n</function_calls>", "",
     [("get_weather", {"city": "Paris", "metric": True, "tags": None})]),
    # xLAM: a JSON array bare at the start, or in a ```json block
    ("xlam", '[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, '
             '{"name": "search", "arguments": {"q": "東京 天気 ☀️ \\"quoted\\" {braces}"}}]', "", [PARIS, TOKYO]),
    ("xlam", 'Sure: ```json\n[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]\n```', "Sure: ", [PARIS]),
    ("xlam", "[1, 2] is a list, not a call.", "[1, 2] is a list, not a call.", []),
]

# (family, output, in_reasoning option, expected reasoning, expected content)
REASONING_SAMPLES = [
    ("deepseek_r1", "Let me think.\nIt is 4.\n</think>\n\nThe answer is 4.", None, "Let me think.\nIt is 4.\n",
     "The answer is 4."),
    ("deepseek_r1", "<think>\nHmm.</think>Four.", None, "Hmm.", "Four."),
    ("qwen3", "<think>\nStep 1 😀\n</think>\n\nDone.", None, "Step 1 😀\n", "Done."),
    ("deepseek_v31", "plain answer", None, "", "plain answer"),
    ("deepseek_v31", "deep thought</think>answer", True, "deep thought", "answer"),
    ("qwen3", "No thinking here.", None, "", "No thinking here."),
    ("qwen3", "reasoning in prompt</think>answer", True, "reasoning in prompt", "answer"),
    ("qwen3_thinking", "thought</think>\n\nanswer", None, "thought", "answer"),
    # a tool call before </think> ends the reasoning; the call stays for the tool parser
    ("qwen3_thinking", 'I should look it up.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', None,
     "I should look it up.\n", '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'),
    ("qwen3", 'weather?<tool_call>{"name": "f", "arguments": {}}</tool_call>', True, "weather?",
     '<tool_call>{"name": "f", "arguments": {}}</tool_call>'),
    ("glm45", "<think>plan</think><tool_call>get_weather", None, "plan", "<tool_call>get_weather"),
    ("kimi", "◁think▷深思◁/think▷答案", None, "深思", "答案"),
    ("kimi_k2", "<think>r</think>c<|tool_calls_section_begin|>x", None, "r", "c<|tool_calls_section_begin|>x"),
    ("minimax", "thinking...</think>\nanswer", None, "thinking...", "answer"),
    ("step3", "reason</think>answer", None, "reason", "answer"),
    ("gpt_oss", "<|channel|>analysis<|message|>User wants weather.<|end|><|start|>assistant<|channel|>final"
                "<|message|>It is sunny.<|return|>", None, "User wants weather.", "It is sunny."),
    ("gpt_oss", "<|channel|>analysis<|message|>Need tool.<|end|><|start|>assistant<|channel|>commentary to=functions.f "
                '<|constrain|>json<|message|>{"a": 1}<|call|>', None, "Need tool.",
     '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": 1}<|call|>'),
    ("cohere", "<|START_THINKING|>plan<|END_THINKING|><|START_RESPONSE|>answer<|END_RESPONSE|>", None, "plan", "answer"),
    ("nemotron", "<think>\nok\n</think>\nanswer", None, "ok\n", "answer"),
    ("seed_oss", "<seed:think>budget</seed:think>answer", None, "budget", "answer"),
    ("mistral", "[THINK]hmm[/THINK]answer", None, "hmm", "answer"),
    ("granite", "Here is my thought process:\nthink\nHere is my response:\nanswer", None, "think\n", "answer"),
    ("granite", "Here's my thought process: a Here's my response: b", None, "a ", "b"),
    ("kimi_thinking", "deep</think>answer", None, "deep", "answer"),
    ("kimi_k3", "<|open|>think<|sep|>plan<|close|>think<|sep|><|open|>response<|sep|>answer<|close|>response<|sep|>", None,
     "plan", "answer"),
    ("kimi_k3", "<|open|>think<|sep|>plan<|open|>tools<|sep|>x", None, "plan", "<|open|>tools<|sep|>x"),
    ("gemma4", "<|channel>thought\nplan<channel|>answer", None, "plan", "answer"),
    ("gemma4", '<|channel>thought\nneed a tool<|tool_call>call:f{a:1}<tool_call|>', None, "need a tool",
     "<|tool_call>call:f{a:1}<tool_call|>"),
    ("nemotron", "thinking<tool_call>\n<function=f>", True, "thinking", "<tool_call>\n<function=f>"),
    ("think", "<think>r</think>c", None, "r", "c"),
    ("minimax_m3", "<mm:think>plan</mm:think>answer", None, "plan", "answer"),
    ("minimax_m3", "</mm:think>answer", None, "", "answer"),  # a stray closer opening a non-thinking reply
    ("minimax_m3", "deep</mm:think>answer", True, "deep", "answer"),
    ("passthrough", "<think>r</think>c", None, "", "<think>r</think>c"),
]
