"""Requests to the generating LLM through a reply cache: a rerun asks nothing twice.

Every request is identified by what decides its reply — the model, the route
(raw completion or chat), the prompt or messages, and every request option,
the RNG seed included — and its reply is stored in the judge's
:class:`~llmdefinitions.judge.ReplyCache` (one JSONL line per reply, written as
it arrives). Generation draws item *i* with seed ``seed + i``, so an interrupted
run, started again, sends the same requests and finds their replies in the cache.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..judge.cache import ReplyCache, cache_key
from ..judge.clients import JudgeClient, as_messages


class CachedRequests:
    """``complete`` and ``chat`` of ``client``, answered from ``cache`` when the same request was made.

    ``asked`` counts requests sent to the server, ``reused`` those answered by the cache.
    """

    def __init__(self, client: JudgeClient, cache: Optional[ReplyCache] = None):
        self.client = client
        self.cache = cache
        self.asked = 0
        self.reused = 0

    def complete(self, prompt: str, options: Optional[Mapping[str, Any]] = None) -> str:
        """Raw completion of ``prompt`` (no chat template)."""
        return self._ask("complete", prompt, options, lambda: self.client.complete(prompt, options=options))

    def chat(self, messages: Sequence[Mapping[str, str]], options: Optional[Mapping[str, Any]] = None) -> str:
        """Reply to chat ``messages`` (the server applies the model's chat template)."""
        checked = as_messages(messages)
        text = json.dumps(checked, ensure_ascii=False)
        return self._ask("chat", text, options, lambda: self.client.chat(checked, options=options))

    def _ask(self, route: str, prompt: str, options: Optional[Mapping[str, Any]], send) -> str:
        variant = json.dumps({"route": route, "options": self.client.request_options(options)},
                             sort_keys=True, ensure_ascii=False)
        key = cache_key(self.client.model, prompt, variant)
        if self.cache is not None:
            reply = self.cache.get(key)
            if reply is not None:
                self.reused += 1
                return reply
        reply = send()
        self.asked += 1
        if self.cache is not None:
            self.cache.put(key, self.client.model, reply)
        return reply


def user_message(instruction: str, input_text: str = "") -> List[Dict[str, str]]:
    """The chat message that asks for the response: the instruction, then its input (if any)."""
    content = instruction + (f"\n\n{input_text}" if input_text else "")
    return [{"role": "user", "content": content}]


__all__ = ["CachedRequests", "user_message"]
