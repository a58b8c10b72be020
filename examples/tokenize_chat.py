"""Render a conversation with a chat template and encode it through smg's L0/L1 cache."""
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path

tok = Tokenizer.from_dir(bundled_tokenizer_dir("llama3.2"))
template = str(template_path("llama3"))
system = {"role": "system", "content": "You are a concise assistant. " * 20}
for question in ["What is a tokenizer?", "Why cache prefixes?", "What is a tokenizer?"]:
    prompt = tok.apply_chat_template([system, {"role": "user", "content": question}], chat_template=template)
    ids = tok.encode(prompt)
    print(f"{len(ids):5d} tokens  {question}")
print(tok.cache_info())
