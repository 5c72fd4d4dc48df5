"""The official `openai` client against `nanochat serve` (run by `cargo xtask ci` on a tiny
model and by `cargo xtask api-test` on a real one).

Streams and non-streams the same greedy request and requires the same text; checks `usage`,
`finish_reason`, `/v1/models`, `n` (several choices, each with its index, whole and streamed,
with the usage chunk last), `logprobs` (one
entry per generated token, streamed and not), `response_format` `json_schema` (every sampled
answer parses and follows the schema), the text completions endpoint, and that bad
parameters are a 400 naming the field (`param`).
"""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused")
models = [m.id for m in client.models.list()]
assert models, "no models listed"
model = models[0]
msgs = [{"role": "user", "content": "What is 2+2?"}]
greedy = dict(model=model, messages=msgs, temperature=0, max_tokens=12, seed=1)

r = client.chat.completions.create(**greedy)
text = r.choices[0].message.content
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

pieces, finish = [], None
for chunk in client.chat.completions.create(**greedy, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert "".join(pieces) == text, ("stream and non-stream differ", "".join(pieces), text)
assert finish == r.choices[0].finish_reason, finish

n = client.chat.completions.create(**greedy, n=3)
assert [c.index for c in n.choices] == [0, 1, 2], n
assert all(c.message.content == text for c in n.choices), ("greedy choices differ", n)

texts, finishes, usage = {}, {}, None
for chunk in client.chat.completions.create(**greedy, n=3, stream=True,
                                            stream_options={"include_usage": True}):
    for ch in chunk.choices:
        texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
        if ch.finish_reason:
            finishes[ch.index] = ch.finish_reason
    if chunk.usage:
        assert not chunk.choices, chunk
        usage = chunk.usage
assert texts == {0: text, 1: text, 2: text}, ("streamed choices differ", texts)
assert sorted(finishes) == [0, 1, 2], finishes
assert usage.completion_tokens == 3 * r.usage.completion_tokens, usage

lp = client.chat.completions.create(**greedy, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
assert len(content) == lp.usage.completion_tokens, (len(content), lp.usage)
assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in content), content
streamed = []
for chunk in client.chat.completions.create(**greedy, logprobs=True, top_logprobs=2, stream=True):
    if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
        streamed.extend(chunk.choices[0].logprobs.content)
assert [e.logprob for e in streamed] == [e.logprob for e in content], "streamed logprobs differ"

schema = {"type": "object", "additionalProperties": False, "required": ["answer", "sure"],
          "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 99},
                         "sure": {"type": "boolean"}}}
js = client.chat.completions.create(
    model=model, messages=msgs, max_tokens=60, temperature=1.0, seed=3, n=3,
    response_format={"type": "json_schema",
                     "json_schema": {"name": "answer", "schema": schema, "strict": True}})
answers = []
for ch in js.choices:
    assert ch.finish_reason == "stop", ch
    v = json.loads(ch.message.content)
    assert set(v) == {"answer", "sure"} and 0 <= v["answer"] <= 99, v
    assert isinstance(v["sure"], bool), v
    answers.append(v)

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5,
                              temperature=0, logprobs=1)
assert c.choices[0].finish_reason in ("stop", "length"), c
assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens, c

for bad, field in [(dict(temperature=7), "temperature"), (dict(n=99), "n"),
                   (dict(logprobs=True, top_logprobs=50), "top_logprobs"),
                   (dict(response_format={"type": "xml"}), "response_format")]:
    try:
        client.chat.completions.create(**{**greedy, **bad})
        raise SystemExit(f"{bad} was accepted")
    except openai.BadRequestError as e:
        assert e.param == field, (bad, e.param, e)
print(f"openai {openai.__version__}: models {models}, {len(pieces)} streamed pieces equal the "
      f"non-streamed text {text!r}; n=3 (whole and streamed); {len(content)} logprobs (stream = whole); "
      f"json_schema answers {answers}; text completion; "
      f"bad temperature / n / top_logprobs / response_format -> 400 naming the field")
