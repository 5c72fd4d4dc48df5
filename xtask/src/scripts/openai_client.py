"""The official `openai` client against `nanochat serve` (run by `cargo xtask api-test`).

Streams and non-streams the same greedy request and requires the same text; checks `usage`,
`finish_reason`, `/v1/models`, and that a bad parameter is a 400 naming it.
"""
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused")
models = [m.id for m in client.models.list()]
assert models, "no models listed"
msgs = [{"role": "user", "content": "What is 2+2?"}]
r = client.chat.completions.create(model=models[0], messages=msgs, temperature=0, max_tokens=24, seed=1)
text = r.choices[0].message.content
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
pieces, finish = [], None
for chunk in client.chat.completions.create(model=models[0], messages=msgs, temperature=0, max_tokens=24, seed=1, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert "".join(pieces) == text, ("stream and non-stream differ", "".join(pieces), text)
assert finish == r.choices[0].finish_reason, finish
try:
    client.chat.completions.create(model=models[0], messages=msgs, temperature=7)
    raise SystemExit("temperature=7 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in str(e), e
print(f"openai {openai.__version__}: models {models}, {len(pieces)} streamed pieces equal the non-streamed text {text!r}; bad temperature -> 400")
