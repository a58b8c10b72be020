"""Tokenization stage: ``Tokenizer`` (encode/decode, chat template) and its L0/L1 cache."""
from smg.tokenizer.cache import CacheInfo
from smg.tokenizer.chat_template import ChatTemplate
from smg.tokenizer.tokenizer import Tokenizer

__all__ = ["CacheInfo", "ChatTemplate", "Tokenizer"]
